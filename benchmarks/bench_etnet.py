"""ETNet's refinement against its base method, on the arbitrary-style benchmark's pairs.

    python benchmarks/bench_etnet.py [--size 512] [--pairs 5] [--base adain] [--threads 1]
        [--weights FILE] [--rows etnet,etnet:iterations=1,...] [--json out.json]
    python benchmarks/bench_etnet.py --validation ...   # the tuning pairs instead
    python benchmarks/bench_etnet.py --classic-validation ...   # tuning photos x the other classics
    python benchmarks/bench_etnet.py --list-heldout     # file names to keep out of training

The pairs are the ones ``bench_arbitrary.py`` draws (seed 0: content photos x classic
paintings), scored with ``brushwork.metrics`` exactly as there. Each row is a method spec as in
``bench_arbitrary.py`` (``etnet:iterations=1+strength=0.8``); the base runs first and every
etnet row gets ``base=BASE``. The table gives each row's metrics and, for the etnet rows, the
change against the base: the target is Gram and Frechet at least 15 % lower at a content
distance at most 10 % higher.

``--list-heldout`` prints the file names the etnet trainer must not see (``--exclude``): every
photo and painting ``bench_arbitrary.py`` draws for 1..10 pairs, the photos the other
benchmarks use, and the validation pairs (photos and paintings from ``styles/`` drawn with
seed 1 from the rest), on which the weight file's defaults were chosen (``--validation``).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_arbitrary as ba  # noqa: E402  (the same runners and data folder)

from brushwork.core.image import load_image, resize_long_side, to_pil  # noqa: E402
from brushwork.eval import metrics  # noqa: E402

# photos the other benchmarks (bench_gatys.py, bench_video.py, docs/benchmarks.md) use
OTHER_BENCHMARK_PHOTOS = ("budgie_lake_sherburne.jpg", "landmark_colloseum.jpg",
                          "landmark_machu-picchu.jpg", "skimage_chelsea.jpg")
VALIDATION_PAIRS = 8
KEYS = ("content", "gram", "meanstd", "frechet", "ssim")


def benchmark_pairs(content_dir: Path, style_dir: Path, n: int):
    """bench_arbitrary.py's draw for ``--pairs n``: [(content path, style path)]."""
    contents = sorted(Path(content_dir).glob("*.jpg"))
    styles = sorted(Path(style_dir).glob("*.jpg"))
    rng = np.random.default_rng(0)
    return [(contents[i], styles[j]) for i, j in
            zip(rng.choice(len(contents), n, replace=False),
                rng.choice(len(styles), n, replace=len(styles) < n))]


def heldout_photos(content_dir: Path, style_dir: Path) -> set[str]:
    names = set(OTHER_BENCHMARK_PHOTOS)
    for n in range(1, 11):
        names |= {c.name for c, _ in benchmark_pairs(content_dir, style_dir, n)}
    return names


def validation_pairs(content_dir: Path, style_dir: Path, paintings_dir: Path):
    """Photos outside every benchmark and paintings of ``styles/`` (seed 1), paired."""
    taken = heldout_photos(content_dir, style_dir)
    contents = [p for p in sorted(Path(content_dir).glob("*.jpg")) if p.name not in taken]
    paintings = sorted(Path(paintings_dir).rglob("*.jpg"))
    rng = np.random.default_rng(1)
    ci = rng.choice(len(contents), VALIDATION_PAIRS, replace=False)
    si = rng.choice(len(paintings), VALIDATION_PAIRS, replace=False)
    return [(contents[i], paintings[j]) for i, j in zip(ci, si)]


def classic_validation_pairs(content_dir: Path, style_dir: Path, paintings_dir: Path,
                             n_bench: int = 5):
    """The validation photos paired with the classic paintings that the benchmark's first
    ``n_bench`` pairs do not use (no classic painting is in training): tuning pairs with the
    benchmark's kind of painting."""
    used = {s.name for _, s in benchmark_pairs(content_dir, style_dir, n_bench)}
    rest = [s for s in sorted(Path(style_dir).glob("*.jpg")) if s.name not in used]
    photos = [c for c, _ in validation_pairs(content_dir, style_dir, paintings_dir)]
    return list(zip(photos, rest))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--pairs", type=int, default=5,
                   help="pairs to score (with --validation: the first N of its 8)")
    p.add_argument("--content-dir", default=str(ba.DATA / "content"))
    p.add_argument("--style-dir", default=str(ba.DATA / "classic_styles"))
    p.add_argument("--paintings-dir", default=str(ba.DATA / "styles"),
                   help="where the validation paintings come from")
    p.add_argument("--base", default="adain")
    p.add_argument("--rows", default="etnet", help="etnet rows (method specs), comma-separated")
    p.add_argument("--weights", default=None, help="an etnet weight file (default: shipped)")
    p.add_argument("--validation", action="store_true",
                   help="score the validation pairs instead of the benchmark's")
    p.add_argument("--classic-validation", action="store_true",
                   help="score the validation photos with the classic paintings the "
                        "benchmark's 5 pairs do not use")
    p.add_argument("--list-heldout", action="store_true",
                   help="print the file names to leave out of training, one per line")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--clock", choices=("wall", "cpu"), default="cpu")
    p.add_argument("--json", default=None)
    p.add_argument("--save-dir", default=None, help="save every output PNG here")
    args = p.parse_args(argv)

    if args.list_heldout:
        val = validation_pairs(args.content_dir, args.style_dir, args.paintings_dir)
        names = heldout_photos(args.content_dir, args.style_dir)
        names |= {c.name for c, _ in val} | {s.name for _, s in val}
        names |= {s.name for s in Path(args.style_dir).glob("*.jpg")}
        print("\n".join(sorted(names)))
        return 0

    torch.set_num_threads(args.threads)
    if args.classic_validation:
        pairs = classic_validation_pairs(args.content_dir, args.style_dir,
                                         args.paintings_dir)[:args.pairs]
    elif args.validation:
        pairs = validation_pairs(args.content_dir, args.style_dir,
                                 args.paintings_dir)[:args.pairs]
    else:
        pairs = benchmark_pairs(args.content_dir, args.style_dir, args.pairs)
    weights = {"etnet": args.weights} if args.weights else {}
    specs = [args.base]
    for row in filter(None, args.rows.split(",")):
        head, _, sets = row.partition(":")
        specs.append(f"{head}:" + "+".join(filter(None, [f"base={args.base}", sets])))
    enc = metrics.metric_encoder()
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    save_dir = Path(args.save_dir) if args.save_dir else None
    if save_dir:
        save_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for spec in specs:
        run = ba.make_runner(spec, weights)
        times, ms = [], []
        for k, (cp, sp) in enumerate(pairs):
            content = resize_long_side(load_image(cp), args.size)
            style = load_image(sp)
            t0 = clock()
            out = run(content, style)
            times.append(clock() - t0)
            with torch.no_grad():
                ms.append(metrics.evaluate(out, content, style, encoder=enc))
            if save_dir:
                to_pil(out).save(save_dir / f"{spec.replace(':', '_')}_{k}_{cp.stem}.png")
        row = {"method": spec, "time_s": statistics.median(times),
               **{key: float(np.mean([m[key] for m in ms])) for key in KEYS}}
        rows.append(row)
        print(json.dumps(row), file=sys.stderr)

    base = rows[0]
    which = ("classic validation" if args.classic_validation else
             "validation" if args.validation else "benchmark")
    print(f"\n{len(pairs)} {which} pairs at {args.size} px, {args.threads} thread(s), "
          f"{args.clock} time, torch {torch.__version__}")
    print("| method | s / image | content | Gram | mean/std | Frechet | SSIM | content change "
          "| Gram change | Frechet change | target |")
    print("|---" * 11 + "|")
    for r in rows:
        cells = [f"{r['time_s']:.2f}"] + [f"{r[k]:.3f}" for k in KEYS]
        if r is base:
            cells += ["", "", "", ""]
        else:
            ch = {k: r[k] / base[k] - 1 for k in ("content", "gram", "frechet")}
            r["change"] = ch
            r["target_met"] = ch["gram"] <= -0.15 and ch["frechet"] <= -0.15 and \
                ch["content"] <= 0.10
            cells += [f"{100 * ch[k]:+.1f} %" for k in ("content", "gram", "frechet")]
            cells.append("met" if r["target_met"] else "not met")
        print(f"| {r['method']} | " + " | ".join(cells) + " |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
