#!/usr/bin/env python
"""Make the README gallery: small JPEGs of real brushwork outputs, several per method family.

    .venv/bin/python scripts/make_gallery.py --data DATA [--out docs/gallery]

DATA is a data folder laid out as ``content/`` (photos), ``classic_styles/`` and
``styles/<artist>/`` (paintings), with a ``MANIFEST.tsv`` whose columns include ``file``,
``artist_or_photographer``, ``title_if_known``, ``year_if_known`` and ``licence_basis``. The
photos and paintings are only read: nothing from DATA is copied into OUT, only stylised outputs,
plus ``CREDITS.md`` naming, for every image, the photo and the painting(s) it was made from.

Only the public interfaces are used: ``brushwork.stylize`` for images and the
``brushwork video`` command for the frame strip. A few minutes on one CPU thread (3-8 depending
on the CPU); the three Gatys images take most of it, analogy up to a minute, every
other image a few seconds.
``--only NAME,...`` remakes some images (CREDITS.md is always rewritten whole).
"""
from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

from PIL import Image  # noqa: E402

import brushwork  # noqa: E402

# Photos. "skimage:NAME" is a photo that ships with scikit-image (no data folder needed).
LAKE = "content/budgie_lake_sherburne.jpg"
BARN = "content/kodim22.jpg"
TOWN = "content/kodim08.jpg"
OPERA = "content/landmark_sydney-opera-house.jpg"
MACHU = "content/landmark_machu-picchu.jpg"
CAT = "skimage:chelsea"

SKIMAGE = {  # credits of scikit-image's sample photos (from their docstrings)
    "chelsea": ("Stefan van der Walt", "Chelsea the cat", "", "CC0 (scikit-image sample data)"),
}

# Paintings (public domain).
STARRY = "classic_styles/starry_night_van_gogh_1889.jpg"
WAVE = "classic_styles/great_wave_hokusai_c1831.jpg"
KANDINSKY = "classic_styles/composition_vii_kandinsky_1913.jpg"
SCREAM = "classic_styles/the_scream_munch_1893.jpg"
MONDRIAN = "classic_styles/mondrian_cubist_composition_c1913.jpg"
MONET_DUSK = "styles/claude_monet/monet_san_giorgio_maggiore_at_dusk.jpg"
AUVERS = "styles/paul_cezanne/aic_14556_auvers_panoramic_view.jpg"
TE_FARE = "styles/paul_gauguin/gauguin_te_fare_la_maison_1892.jpg"

GATYS = dict(steps=100)
ASMA_ARTISTS = ["claude_monet", "vincent_van_gogh", "paul_cezanne", "paul_gauguin",
                "wassily_kandinsky"]
ARTIST_NAMES = {"claude_monet": "paintings by Claude Monet",
                "vincent_van_gogh": "paintings by Vincent van Gogh",
                "paul_cezanne": "paintings by Paul Cezanne",
                "paul_gauguin": "paintings by Paul Gauguin",
                "wassily_kandinsky": "paintings by Wassily Kandinsky",
                "berthe_morisot": "paintings by Berthe Morisot",
                "ukiyo_e": "Japanese woodblock prints (ukiyo-e)"}

# (file, family, caption, method, content, styles, controls, method_options)
JOBS = [
    ("gatys_starry.jpg", "optimisation", "gatys (Gram loss, defaults)", "gatys", LAKE, [STARRY],
     GATYS, {}),
    ("gatys_mix.jpg", "optimisation", "gatys, two styles, `--blend loss-mix`", "gatys", CAT,
     [WAVE, MONET_DUSK], dict(GATYS, blend="loss-mix", style_weights=[0.5, 0.5]), {}),
    ("gatys_luminance.jpg", "optimisation", "gatys, `--preserve-color luminance`", "gatys",
     BARN, [SCREAM], dict(GATYS, preserve_color="luminance"), {}),
    ("adain.jpg", "arbitrary", "adain", "adain", MACHU, [KANDINSKY], {}, {}),
    ("adain_small.jpg", "arbitrary", "adain `--encoder small`", "adain", MACHU, [KANDINSKY], {},
     {"encoder": "small"}),
    ("wct.jpg", "arbitrary", "wct", "wct", MACHU, [KANDINSKY], {}, {}),
    ("linear.jpg", "arbitrary", "linear", "linear", MACHU, [KANDINSKY], {}, {}),
    ("sanet.jpg", "arbitrary", "sanet", "sanet", MACHU, [KANDINSKY], {}, {}),
    ("styleswap.jpg", "arbitrary", "styleswap", "styleswap", MACHU, [KANDINSKY], {}, {}),
    ("totalst.jpg", "arbitrary", "totalst", "totalst", MACHU, [KANDINSKY], {}, {}),
    ("efanet.jpg", "arbitrary", "efanet", "efanet", MACHU, [KANDINSKY], {}, {}),
    ("fcs.jpg", "arbitrary", "fcs", "fcs", MACHU, [KANDINSKY], {}, {}),
    ("tpfr.jpg", "arbitrary", "tpfr", "tpfr", MACHU, [KANDINSKY], {}, {}),
    ("etnet.jpg", "arbitrary", "etnet (adain refined, 2 passes per level)", "etnet", MACHU,
     [KANDINSKY], {}, {}),
    ("efdm.jpg", "feature-space", "efdm", "efdm", MACHU, [KANDINSKY], {}, {}),
    ("avatar.jpg", "feature-space", "avatar", "avatar", MACHU, [KANDINSKY], {}, {}),
    ("mst.jpg", "feature-space", "mst", "mst", MACHU, [KANDINSKY], {}, {}),
    # analogy matches the photo to the painting region by region: a house among trees
    ("analogy.jpg", "feature-space", "analogy", "analogy", BARN, [TE_FARE], {}, {}),
    ("aams.jpg", "feature-space", "aams (3 stroke sizes)", "aams", MACHU, [KANDINSKY], {}, {}),
    ("johnson.jpg", "per-style", "johnson (Starry Night net)", "johnson", OPERA, [], {}, {}),
    ("cin_scream.jpg", "per-style", "cin `--style-id the_scream`", "cin", OPERA, [],
     dict(style_id="the_scream"), {}),
    ("cin_wave.jpg", "per-style", "cin `--style-id great_wave`", "cin", OPERA, [],
     dict(style_id="great_wave"), {}),
    ("cin_kandinsky.jpg", "per-style", "cin `--style-id composition_vii`", "cin", OPERA, [],
     dict(style_id="composition_vii"), {}),
    ("cin_blend.jpg", "per-style", "cin `--style-id 0:0.5,4:0.5` (a blend)", "cin", OPERA, [],
     dict(style_id="0:0.5,4:0.5"), {}),
] + [
    (f"asma_{a}.jpg", "asma", f"asma `--artist {a}`", "asma", LAKE, [], dict(artist=a), {})
    for a in ASMA_ARTISTS
] + [
    (f"{m}_{a}.jpg", "per-artist", f"{m} `--artist {a}`", m, LAKE, [], dict(artist=a), {})
    for m in ("styleaware", "ctb") for a in ("claude_monet", "vincent_van_gogh")
]

# Side by side (file, family, caption, content, style, [controls of each tile]): the same
# photo and painting with and without one gatys control, same seed, size and steps.
PAIRS = [
    ("gatys_auto_regions.jpg", "optimisation", "gatys, plain (left) and `--auto-regions 3`"
     " (right)", LAKE, AUVERS, [GATYS, dict(GATYS, auto_regions=3)]),
    ("gatys_laplacian.jpg", "optimisation", "gatys `--style-weight 3000`, plain (left) and"
     " `--laplacian-weight 1e4 --laplacian-pool 4,16` (right)", TOWN, STARRY,
     [dict(GATYS, style_weight=3e3),
      dict(GATYS, style_weight=3e3, laplacian_weight=1e4, laplacian_pool=[4, 16])]),
]
# The regions `--auto-regions K` finds for a photo and a painting, drawn over each.
REGION_MAPS = ("auto_regions_maps.jpg", "optimisation", "the 3 regions `--auto-regions 3` finds"
               " (photo left, painting right; same colour = corresponding regions)", LAKE,
               AUVERS, 3)

STROKES = ("asma_strokes.jpg", "asma `--stroke 0.5`, `1`, `2` (left to right); `--artist "
           "claude_monet` above, `vincent_van_gogh` below", LAKE,
           ("claude_monet", "vincent_van_gogh"), (0.5, 1.0, 2.0))

VIDEO = ("video_strip.jpg", "video", "wct video, `--consistency flow`: frames 1, 4, 7, 10 of a"
         " pan across the photo", "wct", MACHU, [STARRY])

CIN_STYLE_FILES = {  # the paintings cin_classic / johnson_starry_night were trained on
    0: STARRY, 1: SCREAM, 2: WAVE, 3: KANDINSKY, 4: MONDRIAN,
}


def read_manifest(data: Path) -> dict[str, dict]:
    path = data / "MANIFEST.tsv"
    if not path.exists():
        raise SystemExit(f"make_gallery: {path} not found (--data must be the data folder)")
    with open(path, newline="", encoding="utf-8") as f:
        return {row["file"]: row for row in csv.DictReader(f, delimiter="\t")}


def short_licence(text: str) -> str:
    """The licence basis up to its first explanation ("public-domain artwork: ..." -> the head)."""
    head = text.split(":")[0] if ":" in text[:80] else text.split(" (")[0]
    for noise in (" as listed in the repo's docs/image-credits.md", " as stated by repo README"):
        head = head.replace(noise, "")
    return head.strip().rstrip(";,.")


def credit(key: str, manifest: dict[str, dict]) -> tuple[str, str, str, str]:
    """(author, title, year, licence) of a photo or painting."""
    if key.startswith("skimage:"):
        return SKIMAGE[key.split(":", 1)[1]]
    row = manifest.get(key)
    if row is None:
        raise SystemExit(f"make_gallery: {key} is not in MANIFEST.tsv")
    title = row.get("title_if_known") or Path(key).stem
    return (row.get("artist_or_photographer", ""), title, row.get("year_if_known", ""),
            short_licence(row.get("licence_basis", "")))


def load(key: str, data: Path) -> Image.Image:
    if key.startswith("skimage:"):
        from skimage import data as skdata
        return Image.fromarray(getattr(skdata, key.split(":", 1)[1])())
    path = data / key
    if not path.exists():
        raise SystemExit(f"make_gallery: {path} not found")
    return Image.open(path).convert("RGB")


def save_jpeg(img: Image.Image, path: Path, long_side: int, quality: int) -> None:
    img = img.convert("RGB")
    if max(img.size) > long_side:
        img.thumbnail((long_side, long_side), Image.LANCZOS)
    img.save(path, "JPEG", quality=quality, optimize=True, progressive=True)


def video_strip(data: Path, out: Path, size: int, quality: int, seed: int) -> float:
    """A short pan across a photo (10 frames of ``size`` x 9/16 ``size``), stylised with
    ``brushwork video`` (flow consistency); frames 1, 4, 7 and 10 side by side."""
    name, _, _, method, content, styles = VIDEO
    photo = load(content, data)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "in", Path(tmp) / "out"
        src.mkdir()
        w, h = photo.size
        cw, ch = int(w * 0.7), int(w * 0.7 * 9 / 16)
        ch = min(ch, h)
        n = 10
        for i in range(n):  # pan left to right, drifting down a little
            x = round((w - cw) * i / (n - 1))
            y = round((h - ch) * 0.3 * i / (n - 1))
            frame = photo.crop((x, y, x + cw, y + ch)).resize((size, size * 9 // 16),
                                                              Image.LANCZOS)
            frame.save(src / f"frame_{i + 1:03d}.png")
        cmd = [sys.executable, "-m", "brushwork", "video", str(src), "-m", method,
               "-o", str(dst), "--size", "0", "--consistency", "flow", "--seed", str(seed), "-q"]
        for s in styles:
            cmd += ["-s", str(data / s)]
        subprocess.run(cmd, check=True)
        frames = sorted(dst.glob("*.png"))
        picks = [frames[i] for i in (0, 3, 6, 9)]
        tiles = [Image.open(p).convert("RGB") for p in picks]
        gap = 4
        strip = Image.new("RGB", (sum(tile.width for tile in tiles) + gap * (len(tiles) - 1),
                                  tiles[0].height), "white")
        x = 0
        for tile in tiles:
            strip.paste(tile, (x, 0))
            x += tile.width + gap
        save_jpeg(strip, out / name, 800, quality)
    return time.perf_counter() - t0


def stroke_sheet(data: Path, out: Path, size: int, quality: int, seed: int) -> float:
    """asma at each stroke size of :data:`STROKES`, one row per artist."""
    name, _, content, artists, strokes = STROKES
    t = time.perf_counter()
    rows = [side_by_side([brushwork.stylize(load(content, data), [], method="asma", size=size,
                                            seed=seed, artist=a, stroke=s) for s in strokes])
            for a in artists]
    sheet = Image.new("RGB", (max(r.width for r in rows),
                              sum(r.height for r in rows) + 4 * (len(rows) - 1)), "white")
    y = 0
    for r in rows:
        sheet.paste(r, (0, y))
        y += r.height + 4
    save_jpeg(sheet, out / name, len(strokes) * size, quality)
    return time.perf_counter() - t


def side_by_side(tiles: list[Image.Image], gap: int = 4) -> Image.Image:
    """Tiles in a row, top-aligned on white, ``gap`` px apart."""
    out = Image.new("RGB", (sum(t.width for t in tiles) + gap * (len(tiles) - 1),
                            max(t.height for t in tiles)), "white")
    x = 0
    for t in tiles:
        out.paste(t.convert("RGB"), (x, 0))
        x += t.width + gap
    return out


def region_maps_image(data: Path, out: Path, size: int, quality: int, seed: int) -> float:
    """The regions of ``brushwork.core.regions.auto_regions`` for REGION_MAPS' photo and
    painting (the photo at ``size`` px as gatys sees it), colour-coded with ``region_maps`` and
    drawn over each image, side by side (both ``size`` px high at most)."""
    from brushwork.core.regions import auto_regions, region_maps
    name, _, _, content, style, k = REGION_MAPS
    t0 = time.perf_counter()
    photo, painting = load(content, data), load(style, data)
    photo.thumbnail((size, size), Image.LANCZOS)
    cl, sl = auto_regions(photo, painting, k=k, seed=seed)
    cmap, smap = region_maps(cl, sl, content_size=photo.size[::-1],
                             style_size=painting.size[::-1])
    tiles = [Image.blend(img, m, 0.55) for img, m in ((photo, cmap), (painting, smap))]
    h = min(size, *(t.height for t in tiles))
    tiles = [t.resize((round(t.width * h / t.height), h), Image.LANCZOS) for t in tiles]
    save_jpeg(side_by_side(tiles), out / name, 4 * size, quality)
    return time.perf_counter() - t0


def write_credits(out: Path, rows: list[tuple], manifest: dict[str, dict]) -> None:
    lines = [
        "# Gallery credits",
        "",
        "Every image here is an output of brushwork, made by `scripts/make_gallery.py`. The",
        "photos and paintings it was made from are not part of the repository; they are credited",
        "below.",
        "The paintings are public-domain works; the photos are CC0, public domain, or from the",
        "Kodak image suite (released for unrestricted use).",
        "",
        "| image | method | photo | painting(s) |",
        "|---|---|---|---|",
    ]
    used: dict[str, tuple] = {}

    def fmt(key: str) -> str:
        author, title, year, lic = credit(key, manifest)
        used[key] = (author, title, year, lic)
        bits = f"*{title}*" + (f" ({year})" if year else "")
        return f"{bits}, {author}; {lic}"

    for name, caption, content, paintings, note in rows:
        cell = "<br>".join(fmt(p) for p in paintings)
        if note:
            cell = f"{cell} ({note})" if cell else note
        lines.append(f"| `{name}` | {caption} | {fmt(content)} | {cell} |")
    lines += ["", "Sources (file in the data folder: source repository and path; licence basis):",
              ""]
    for key in sorted(used):
        if key.startswith("skimage:"):
            lines.append(f"- `{key}`: `skimage.data.{key.split(':')[1]}()`; {used[key][3]}")
            continue
        row = manifest[key]
        lines.append(f"- `{key}`: {row.get('source_repo', '')} `{row.get('source_path', '')}`; "
                     f"{row.get('licence_basis', '')}")
    (out / "CREDITS.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, type=Path,
                    help="data folder with content/, classic_styles/, styles/ and MANIFEST.tsv")
    ap.add_argument("--out", type=Path,
                    default=Path(__file__).resolve().parents[1] / "docs" / "gallery")
    ap.add_argument("--size", type=int, default=256, help="working size (long side) of each output")
    ap.add_argument("--quality", type=int, default=80, help="JPEG quality")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", default="",
                    help="comma-separated image names to (re)make, e.g. wct.jpg")
    ap.add_argument("--no-video", action="store_true", help="skip the video frame strip")
    args = ap.parse_args()

    manifest = read_manifest(args.data)
    args.out.mkdir(parents=True, exist_ok=True)
    only = {x.strip() for x in args.only.split(",") if x.strip()}
    credits = []
    t_all = time.perf_counter()
    for name, family, caption, method, content, styles, controls, options in JOBS:
        if method in ("cin", "johnson"):
            sid = str(controls.get("style_id", "0"))
            ids = ([int(p.split(":")[0]) for p in sid.split(",")] if sid[0].isdigit() else
                   [next(i for i, f in CIN_STYLE_FILES.items() if sid in f)])
            credits.append((name, caption, content, [CIN_STYLE_FILES[i] for i in ids],
                            "built-in style: the network was trained on "
                            + ("these paintings" if len(ids) > 1 else "this painting")))
        elif method in ("asma", "styleaware", "ctb"):
            who = ARTIST_NAMES.get(controls["artist"], controls["artist"])
            credits.append((name, caption, content, [],
                            f"no painting at inference: the network was trained on {who}"
                            " (public-domain works, `styles/` of the data folder)"))
        else:
            credits.append((name, caption, content, styles, ""))
        if only and name not in only:
            continue
        controls = dict(controls)
        style_weights = controls.pop("style_weights", None)
        t = time.perf_counter()
        img = brushwork.stylize(load(content, args.data), [load(s, args.data) for s in styles],
                                method=method, size=args.size, seed=args.seed,
                                style_weights=style_weights, method_options=options or None,
                                **controls)
        save_jpeg(img, args.out / name, args.size, args.quality)
        print(f"{name:24s} {method:9s} {time.perf_counter() - t:6.1f} s", flush=True)
    for name, family, caption, content, style, tiles in PAIRS:
        credits.append((name, caption, content, [style], ""))
        if only and name not in only:
            continue
        t = time.perf_counter()
        imgs = []
        for controls in tiles:
            imgs.append(brushwork.stylize(load(content, args.data), [load(style, args.data)],
                                          method="gatys", size=args.size, seed=args.seed,
                                          **controls))
        save_jpeg(side_by_side(imgs), args.out / name, 4 * args.size, args.quality)
        print(f"{name:24s} {'gatys':9s} {time.perf_counter() - t:6.1f} s", flush=True)
    name, family, caption, content, style, k = REGION_MAPS
    credits.append((name, caption, content, [style], ""))
    if not only or name in only:
        dt = region_maps_image(args.data, args.out, args.size, args.quality, args.seed)
        print(f"{name:24s} {'regions':9s} {dt:6.1f} s", flush=True)
    name, caption, content, artists, _ = STROKES
    credits.append((name, caption, content, [],
                    "no painting at inference: the network was trained on "
                    + " and ".join(ARTIST_NAMES[a] for a in artists)
                    + " (public-domain works, `styles/` of the data folder)"))
    if not only or name in only:
        dt = stroke_sheet(args.data, args.out, args.size, args.quality, args.seed)
        print(f"{name:24s} {'asma':9s} {dt:6.1f} s", flush=True)
    if not args.no_video:
        name, family, caption, method, content, styles = VIDEO
        credits.append((name, caption, content, styles, ""))
        if not only or name in only:
            dt = video_strip(args.data, args.out, args.size, args.quality, args.seed)
            print(f"{name:24s} {method:9s} {dt:6.1f} s", flush=True)
    write_credits(args.out, credits, manifest)
    total = sum(p.stat().st_size for p in args.out.glob("*.jpg"))
    n = len(list(args.out.glob("*.jpg")))
    print(f"done in {time.perf_counter() - t_all:.0f} s; {n} images, {total / 1024:.0f} KB"
          f" in {args.out}")


if __name__ == "__main__":
    main()
