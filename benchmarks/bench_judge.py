"""Benchmark: asma by two artist judges, and its content, fixed-texture and stroke numbers.

Photos asma never trained on: asma trains on every photo of ``DATA/content`` (its scikit-image
photos included), so the held-out photos are scikit-image photos that are not in that folder
(:data:`UNSEEN`). The script writes them to ``OUT/unseen/`` (so `brushwork eval style-accuracy
--content OUT/unseen` reproduces the accuracy part) and measures:

* ``heldout``: both judges on the paintings they held out (their own test accuracy), as they
  are and upsampled x1.6 (about the pixel scale of a 384 px output);
* ``accuracy``: style accuracy of asma (every artist, by its label) and adain (one held-out
  painting of the artist per photo) on the unseen photos at ``--size``, by both judges;
* ``ablation``: asma on the unseen photos by judges on other feature sets
  (``--ablation-judges``: ``brushwork train texture-judge --feature-set all|colour``, with
  colour and on colour alone), and those judges on their held-out paintings: how much of a
  verdict would rest on the palette;
* ``content``: content distance (:func:`brushwork.eval.metrics.content_distance`) of asma, gatys
  (its defaults) and adain on the first ``--gatys-photos`` photos x ``--gatys-artists``, each
  painting-driven method given the same held-out painting per (photo, artist), at
  ``--content-size`` (default ``--size``), gatys with ``--gatys-steps`` if given;
* ``texture``: per artist, the mean high-pass correlation between asma's outputs of different
  photos against that between the photos themselves, and the same for the shapes of their
  high-pass spectra (the same texture at any position) (``--size`` square centre crops);
* ``stroke``: the energy-weighted mean level and the peak level of the Laplacian pyramid of
  asma's outputs at ``--stroke`` values (and of the photos), on the first ``--stroke-photos``
  photos (default all).

Results go to ``OUT/results.json`` part by part (a finished part is not rerun without
``--fresh``); the tables are printed at the end.

    python benchmarks/bench_judge.py --data ../shared/data --out runs/bench_judge
"""
from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

PARTS = ("heldout", "accuracy", "ablation", "content", "texture", "stroke")
UNSEEN = ("stereo_motorcycle", "camera", "hubble_deep_field", "coins", "immunohistochemistry",
          "moon")


def write_unseen(folder: Path, names=UNSEEN) -> list[Path]:
    from skimage import data
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in names:
        path = folder / f"{name}.png"
        if not path.exists():
            a = getattr(data, name)()
            a = a[0] if isinstance(a, tuple) else a
            Image.fromarray(a).convert("RGB").save(path)
        paths.append(path)
    return paths


def centre_square(x: torch.Tensor, side: int) -> torch.Tensor:
    from brushwork.eval.texture_judge import short_side
    x = short_side(x, side)
    h, w = x.shape[-2:]
    top, left = (h - side) // 2, (w - side) // 2
    return x[..., top:top + side, left:left + side]


def per_artist_table(rows: dict[str, dict[str, float]], fmt="{:.0f} %", scale=100.0) -> str:
    cols = list(rows)
    artists = []
    for r in rows.values():
        artists += [a for a in r if a not in artists]
    out = ["| artist | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
    for a in artists:
        out.append(f"| {a} | " + " | ".join(fmt.format(rows[c][a] * scale) if a in rows[c]
                                             else "-" for c in cols) + " |")
    return "\n".join(out)


# ------------------------------------------------------------------------------------ parts
def upsampled(x: torch.Tensor, factor: float = 1.6) -> torch.Tensor:
    """Bicubic upsampling: a painting at about the pixel size of a 384 px output."""
    h, w = x.shape[-2:]
    return torch.nn.functional.interpolate(x, size=(round(h * factor), round(w * factor)),
                                           mode="bicubic", align_corners=False).clamp(0, 1)


def part_heldout(args, judges, done=None):
    """Each judge on its held-out paintings as they are and upsampled x1.6 (a judge that
    reads resampling traces instead of the painting loses accuracy on the second). Entries
    already in ``done`` (keyed by the judge file's sha256) are kept."""
    from brushwork.core.image import load_image
    from brushwork.core.weights import sha256_file
    from brushwork.eval.style_accuracy import heldout_paintings
    out = {}
    from brushwork.core.weights import shipped_path
    from brushwork.eval import classifier, texture_judge
    files = {"texture": texture_judge.SHIPPED_FILE, "vgg": classifier.SHIPPED_FILE}
    for name, judge in judges.items():
        sha = sha256_file(shipped_path(files[name]))
        held = heldout_paintings(judge, Path(args.data) / "styles", judge.holdout,
                                 judge.split_seed)
        for view, tf in (("native", lambda x: x), ("upsampled x1.6", upsampled)):
            key = f"{name}, {view}"
            if (done or {}).get(key, {}).get("sha256") == sha:
                out[key] = done[key]
                continue
            acc, hits, n = {}, 0, 0
            for artist, paths in held.items():
                guesses = [judge.classes[int(judge.predict_proba(tf(load_image(p))).argmax(1))]
                           for p in paths]
                acc[artist] = sum(g == artist for g in guesses) / len(guesses)
                hits += sum(g == artist for g in guesses)
                n += len(guesses)
            acc["overall"] = hits / n
            acc["mean_per_artist"] = sum(v for k, v in acc.items()
                                         if k != "overall") / len(held)
            out[key] = {"accuracy": acc, "n": n, "sha256": sha}
    return out


def part_accuracy(args, judges, photos):
    from brushwork.eval.style_accuracy import content_set, evaluate, heldout_for_judges
    from brushwork.methods import get_method
    contents = content_set(photos, len(UNSEEN), args.size, 0)
    paintings = heldout_for_judges(judges, Path(args.data) / "styles")
    out = {}
    for name in args.methods.split(","):
        method = get_method(name)()
        r = evaluate(name, method, judges, contents, paintings=paintings, style_size=256, seed=0)
        out[name] = {"judges": r["judges"], "n": r["n"], "seconds": r["seconds"]}
    return out


def part_ablation(args, photos):
    from brushwork.eval.texture_judge import TextureJudge
    judges = {}
    for item in args.ablation_judges.split(","):
        name, _, path = item.partition("=")
        judges[name] = TextureJudge.load(path)
    out = part_accuracy(argparse.Namespace(**{**vars(args), "methods": "asma"}), judges, photos)
    out["heldout"] = {n: json.loads(j.metadata["heldout_accuracy"]) for n, j in judges.items()}
    return out


def part_content(args, judges, photos):
    from brushwork.core.image import load_image
    from brushwork.eval.metrics import content_distance, metric_encoder
    from brushwork.eval.style_accuracy import heldout_for_judges
    from brushwork.methods import get_method
    enc = metric_encoder()
    paintings = heldout_for_judges(judges, Path(args.data) / "styles")
    rng = random.Random(0)
    methods = {n: get_method(n)() for n in ("asma", "gatys", "adain")}
    folder = Path(args.out) / "content"
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / "rows.jsonl"  # finished rows: an interrupted run resumes after them
    done = {}
    if log.exists():
        for line in log.read_text().splitlines():
            r = json.loads(line)
            done[(r["photo"], r["artist"])] = r
    rows = []
    for path in photos[:args.gatys_photos]:
        x = load_image(path, args.content_size or args.size)
        for artist in args.gatys_artists.split(","):
            painting = rng.choice(paintings[artist])
            if (path.stem, artist) in done:
                rows.append(done[(path.stem, artist)])
                continue
            style = load_image(painting, 256)
            row = {"photo": path.stem, "artist": artist, "painting": painting.name}
            for name, m in methods.items():
                t = time.perf_counter()
                if name == "asma":
                    y = m.stylize(x, [], controls={"artist": artist}, seed=0)
                elif name == "gatys" and args.gatys_steps:
                    y = m.stylize(x, [style], controls={"steps": args.gatys_steps}, seed=0)
                else:
                    y = m.stylize(x, [style], seed=0)
                row[f"{name}_seconds"] = time.perf_counter() - t
                row[name] = content_distance(y, x, enc)
                row[f"{name}_texture_judge"] = judges["texture"].predict([y])[0]
                if args.save_images:
                    from brushwork.core.image import save_image
                    save_image(y, folder / f"{path.stem}_{artist}_{name}.jpg")
            rows.append(row)
            with open(log, "a") as f:
                f.write(json.dumps(row) + "\n")
            print(json.dumps(row), flush=True)
    mean = {n: float(np.mean([r[n] for r in rows])) for n in methods}
    return {"rows": rows, "mean": mean}


def part_texture(args, photos):
    from brushwork.core.image import load_image
    from brushwork.eval.texture_judge import texture_correlation
    from brushwork.methods import get_method
    asma = get_method("asma")()
    xs = [centre_square(load_image(p), args.size) for p in photos]
    out = {}
    for artist in asma.labels():
        ys = [asma.stylize(x, [], controls={"artist": artist}) for x in xs]
        out[artist] = texture_correlation(ys, xs)
    return out


def part_stroke(args, photos):
    from brushwork.core.image import load_image
    from brushwork.eval.texture_judge import stroke_scale
    from brushwork.methods import get_method
    asma = get_method("asma")()
    xs = [load_image(p, args.size) for p in photos[:args.stroke_photos or None]]
    strokes = [float(s) for s in args.stroke.split(",")]
    out = {"photos": {"mean_level": float(np.mean([stroke_scale(x)["mean_level"] for x in xs])),
                      "peak_level": float(np.mean([stroke_scale(x)["peak_level"] for x in xs]))}}
    per_artist = {}
    for s in strokes:
        levels, peaks = [], []
        for artist in asma.labels():
            ms = []
            for x in xs:
                r = stroke_scale(asma.stylize(x, [], controls={"artist": artist, "stroke": s}))
                ms.append(r["mean_level"])
                peaks.append(r["peak_level"])
            per_artist.setdefault(artist, {})[str(s)] = float(np.mean(ms))
            levels += ms
        out[str(s)] = {"mean_level": float(np.mean(levels)), "peak_level": float(np.mean(peaks)),
                       "min_artist_mean_level": min(v[str(s)] for v in per_artist.values())}
    out["per_artist"] = per_artist
    return out


# ---------------------------------------------------------------------------------- report
def report(results: dict) -> str:
    lines = []
    if "heldout" in results:
        r = results["heldout"]
        lines += ["## judges on their held-out paintings", "",
                  per_artist_table({f"{j} (n={v['n']})": v["accuracy"] for j, v in r.items()}),
                  ""]
    if "accuracy" in results:
        cols = {}
        for m, v in results["accuracy"].items():
            for j, part in v["judges"].items():
                cols[f"{m} ({j})"] = {**part["per_artist"], "overall": part["overall"]}
        lines += ["## style accuracy on the unseen photos", "", per_artist_table(cols), ""]
    if "ablation" in results:
        a = results["ablation"]
        cols = {f"asma ({j} features)": {**p["per_artist"], "overall": p["overall"]}
                for j, p in a["asma"]["judges"].items()}
        cols.update({f"{j} features, held-out paintings": {k: v for k, v in acc.items()
                                                           if k != "mean_per_artist"}
                     for j, acc in a["heldout"].items()})
        lines += ["## judges on other feature sets", "", per_artist_table(cols), ""]
    if "content" in results:
        c = results["content"]
        lines += ["## content distance (relu4_2; lower = closer to the photo)", "",
                  "| photo | artist | " + " | ".join(c["mean"]) + " |",
                  "|---|---|" + "---:|" * len(c["mean"])]
        for r in c["rows"]:
            lines.append(f"| {r['photo']} | {r['artist']} | "
                         + " | ".join(f"{r[n]:.3f}" for n in c["mean"]) + " |")
        lines += ["| **mean** | | " + " | ".join(f"**{v:.3f}**" for v in c["mean"].values())
                  + " |", ""]
    if "texture" in results:
        t = results["texture"]
        lines += ["## high-pass correlation (outputs of different photos vs the photos)", "",
                  "| artist | outputs | photos | spectrum: outputs | spectrum: photos |",
                  "|---|---:|---:|---:|---:|"]
        lines += [f"| {a} | {v['outputs']:.3f} | {v['photos']:.3f} | "
                  f"{v.get('spectrum_outputs', float('nan')):.3f} | "
                  f"{v.get('spectrum_photos', float('nan')):.3f} |" for a, v in t.items()]
        lines.append("")
    if "stroke" in results:
        s = results["stroke"]
        keys = [k for k in s if k not in ("photos", "per_artist")]
        lines += ["## stroke scale (Laplacian-pyramid level, 0 = finest)", "",
                  "| | photos | " + " | ".join(f"stroke {k}" for k in keys) + " |",
                  "|---|---:|" + "---:|" * len(keys),
                  f"| energy-weighted mean level | {s['photos']['mean_level']:.3f} | "
                  + " | ".join(f"{s[k]['mean_level']:.3f}" for k in keys) + " |",
                  f"| mean peak level | {s['photos']['peak_level']:.2f} | "
                  + " | ".join(f"{s[k]['peak_level']:.2f}" for k in keys) + " |", ""]
        lines += ["| artist | " + " | ".join(f"stroke {k}" for k in keys) + " |",
                  "|---|" + "---:|" * len(keys)]
        lines += [f"| {a} | " + " | ".join(f"{v[k]:.3f}" for k in keys) + " |"
                  for a, v in s["per_artist"].items()]
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="../shared/data", help="folder with styles/")
    ap.add_argument("--out", default="runs/bench_judge")
    ap.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated: {PARTS}")
    ap.add_argument("--size", type=int, default=384, help="photo long side (texture: square)")
    ap.add_argument("--methods", default="asma,adain,ctb,styleaware",
                    help="methods of the accuracy part")
    ap.add_argument("--ablation-judges", default="all=runs/bench_judge/judge_all.safetensors,"
                    "colour=runs/bench_judge/judge_colour.safetensors",
                    help="NAME=PATH,... judges of the ablation part (train them with "
                         "`brushwork train texture-judge --feature-set all|colour`)")
    ap.add_argument("--gatys-photos", type=int, default=3)
    ap.add_argument("--gatys-artists", default="claude_monet,vincent_van_gogh")
    ap.add_argument("--gatys-steps", type=int, default=None,
                    help="gatys optimisation steps per scale (default: its own, 150)")
    ap.add_argument("--content-size", type=int, default=None,
                    help="photo long side of the content part (default: --size)")
    ap.add_argument("--stroke", default="0.5,1,2")
    ap.add_argument("--stroke-photos", type=int, default=None,
                    help="photos of the stroke part (default: all the unseen photos)")
    ap.add_argument("--save-images", action="store_true", help="keep the content part's outputs")
    ap.add_argument("--fresh", action="store_true", help="rerun finished parts")
    args = ap.parse_args()

    from brushwork.eval.style_accuracy import load_judges
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "results.json"
    results = {} if args.fresh or not path.exists() else json.loads(path.read_text())
    photos = write_unseen(out / "unseen")
    judges = load_judges("both")
    for part in args.parts.split(","):
        if part not in PARTS:
            raise SystemExit(f"unknown part {part!r} (choose from {', '.join(PARTS)})")
        if part in results and part != "heldout":
            continue
        t = time.perf_counter()
        if part == "heldout":
            results[part] = part_heldout(args, judges, results.get(part))
        elif part == "accuracy":
            results[part] = part_accuracy(args, judges, out / "unseen")
        elif part == "ablation":
            results[part] = part_ablation(args, out / "unseen")
        elif part == "content":
            results[part] = part_content(args, judges, photos)
        elif part == "texture":
            results[part] = part_texture(args, photos)
        else:
            results[part] = part_stroke(args, photos)
        print(f"{part}: {time.perf_counter() - t:.0f} s", flush=True)
        path.write_text(json.dumps(results, indent=1))
    print(report(results))


if __name__ == "__main__":
    main()
