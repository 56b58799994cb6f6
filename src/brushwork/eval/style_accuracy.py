"""The style-accuracy metric of ASMA-GAN (a.k.a. deception rate), and the style sheet.

**Style accuracy**: stylise a set of content photos once per artist and count the share of
results the artist classifier (:mod:`brushwork.classifier`) assigns to the target artist, per
artist and overall. Multi-artist methods (``asma``) are driven by the artist's label;
arbitrary-style methods (``gatys``, ``adain``, ...) by one painting of that artist, drawn
(seeded) from the classifier's *held-out* paintings, so the judge never trained on the exact
painting that drives the method.

**Sheet**: every built-in style or artist of a model (``cin``, ``asma``) on one photo, in one
labelled grid (Pillow's default font).
"""
from __future__ import annotations

import random
from pathlib import Path

import torch
from PIL import Image, ImageDraw, ImageFont

from .classifier import ArtistClassifier, artist_folders, split_by_painting
from ..errors import BrushworkError
from ..core import validate
from ..core.files import atomic_write
from ..core.image import load_image, resize_long_side, to_pil
from ..core.protocol import Clock, Progress, emit
from ..core.image import list_images


def content_set(content_dir, n: int, size: int, seed: int) -> list[tuple[str, torch.Tensor]]:
    files = list_images(content_dir)
    rng = random.Random(seed)
    files = rng.sample(files, min(n, len(files)))
    return [(f.name, load_image(f, size)) for f in files]


def heldout_paintings(clf: ArtistClassifier, styles_dir, meta_holdout: float, seed: int):
    """{artist: held-out painting paths} under the classifier's own seeded split."""
    folders = artist_folders(styles_dir, 1)
    folders = {a: folders[a] for a in clf.classes if a in folders}
    missing = [a for a in clf.classes if a not in folders]
    if missing:
        raise BrushworkError(f"{styles_dir}: no folder for artist(s) {', '.join(missing)}")
    _, test = split_by_painting(folders, meta_holdout, seed)
    out = {a: [] for a in folders}
    names = list(folders)
    for path, label in test:
        out[names[label]].append(path)
    return out


def evaluate(method_name: str, method, clf: ArtistClassifier, contents, *, paintings=None,
             artists=None, style_size: int = 256, controls=None, seed: int = 0,
             callback=None) -> dict:
    """-> {"per_artist": {artist: share}, "overall": share, "n": count, "seconds": s,
    "confusion": {artist: {predicted artist: count}}}.

    ``method`` follows the Stylizer protocol; label-driven methods (with ``labels()``) get
    ``controls['artist']``, others one painting per (content, artist) from ``paintings``."""
    clock = Clock()
    labelled = method.capabilities.styles == "labels"
    artists = artists or clf.classes
    if labelled:
        known = method.labels()
        absent = [a for a in artists if a not in known]
        if absent:
            raise BrushworkError(f"{method_name}: model has no artist(s) {', '.join(absent)}")
    rng = random.Random(seed)
    hits, counts, confusion, done = {}, {}, {}, 0
    total = len(artists) * len(contents)
    for artist in artists:
        target = clf.classes.index(artist)
        for _, x in contents:
            if labelled:
                key = "artist" if "artist" in method.controls else "style_id"
                y = method.stylize(x, [], controls={**(controls or {}), key: artist}, seed=seed)
            else:
                pool = (paintings or {}).get(artist)
                if not pool:
                    raise BrushworkError(f"no held-out painting of {artist} to drive {method_name}")
                style = load_image(rng.choice(pool), style_size)
                y = method.stylize(x, [style], controls=controls, seed=seed)
            pred = int(clf.predict_proba(y).argmax(1))
            row = confusion.setdefault(artist, {})
            row[clf.classes[pred]] = row.get(clf.classes[pred], 0) + 1
            hits[artist] = hits.get(artist, 0) + int(pred == target)
            counts[artist] = counts.get(artist, 0) + 1
            done += 1
            emit(callback, Progress(method_name, "step", done, total, elapsed=clock(),
                                    message=artist))
    per = {a: hits[a] / counts[a] for a in artists}
    return {"per_artist": per, "overall": sum(hits.values()) / max(1, sum(counts.values())),
            "n": sum(counts.values()), "seconds": clock(), "confusion": confusion}


def format_table(results: dict[str, dict]) -> str:
    """Markdown table: one row per artist, one column per method, plus 'overall'."""
    methods = list(results)
    artists = []
    for r in results.values():
        artists += [a for a in r["per_artist"] if a not in artists]
    lines = ["| artist | " + " | ".join(methods) + " |",
             "|---|" + "---:|" * len(methods)]
    for a in artists:
        cells = [f"{results[m]['per_artist'][a] * 100:.0f} %" if a in results[m]["per_artist"]
                 else "-" for m in methods]
        lines.append(f"| {a} | " + " | ".join(cells) + " |")
    lines.append("| **overall** | " + " | ".join(f"**{results[m]['overall'] * 100:.1f} %**"
                                                for m in methods) + " |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------- sheet
def render_sheet(content: torch.Tensor, outputs: list[torch.Tensor], labels: list[str],
                 cols: int | None = None, pad: int = 4, label_h: int = 14) -> Image.Image:
    """A grid: the content first ("content"), then one cell per output, each labelled below."""
    if len(outputs) != len(labels):
        raise BrushworkError("sheet: one label per output is required")
    cells = [("content", content)] + list(zip(labels, outputs))
    cols = cols or min(len(cells), 4)
    rows = (len(cells) + cols - 1) // cols
    h, w = content.shape[-2:]
    sheet = Image.new("RGB", (cols * (w + pad) + pad, rows * (h + label_h + pad) + pad),
                      (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    for i, (label, img) in enumerate(cells):
        r, c = divmod(i, cols)
        x0, y0 = pad + c * (w + pad), pad + r * (h + label_h + pad)
        sheet.paste(to_pil(img), (x0, y0))
        text = label if len(label) * 6 <= w else label[: max(1, w // 6 - 1)] + "~"
        draw.text((x0 + 2, y0 + h + 1), text, fill=(0, 0, 0), font=font)
    return sheet


def sheet_for(method, content: torch.Tensor, size: int | None = 256, controls=None) -> Image.Image:
    """Render every built-in style/artist of a labelled method (``cin``, ``asma``) on ``content``."""
    if method.capabilities.styles != "labels":
        raise BrushworkError(f"method {getattr(method, 'name', method)!r} has no built-in styles "
                             f"to put on a sheet (use cin or asma)")
    x = resize_long_side(content, size) if size else content
    return render_sheet(x, method.render_all(x, controls), method.labels())


# ------------------------------------------------------------------------ commands (no printing)
def _pairs(items, sep: str, what: str) -> list[tuple[str, str]]:
    out = []
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or (sep == "." and "." not in key):
            raise BrushworkError(f"{what}: expected {item!r} to look like "
                                 f"{'METHOD=PATH' if sep == '=' else 'METHOD.CONTROL=VALUE'}")
        out.append((key.strip(), value.strip()))
    return out


def run_eval(args, callback=None) -> dict:
    """Judge each method; returns {"results": {method: result}, "table": markdown}. Every
    argument (numbers, method names, the --json path) is checked before any evaluation."""
    import json

    from ..core.device import pick_device
    from ..methods import get_method

    names = validate.check_names(args.methods, "--methods")
    classes = {name: get_method(name) for name in names}
    n_content = validate.check_number(args.n_content, "--n-content", low=1, integer=True)
    size = validate.check_size(args.size, "--size")
    style_size = validate.check_size(args.style_size, "--style-size")
    seed = validate.check_seed(args.seed)
    artists = validate.check_names(args.artists, "--artists") if args.artists else None
    json_path = validate.check_output_file(args.json, "--json") if args.json else None
    weights = dict(_pairs(args.weights, "=", "--weights"))
    controls: dict[str, dict] = {}
    for key, value in _pairs(args.set, ".", "--set"):
        method, _, name = key.partition(".")
        controls.setdefault(method, {})[name] = value
    options = {name: validate.check_options(cls, {"weights": weights[name]}
                                            if name in weights else {})
               for name, cls in classes.items()}
    device = pick_device(args.device)

    clf = ArtistClassifier.load(args.classifier)
    artists = artists or clf.classes
    unknown = [a for a in artists if a not in clf.classes]
    if unknown:
        raise BrushworkError(f"the classifier has no artist(s) {', '.join(unknown)} "
                             f"(it knows {', '.join(clf.classes)})")
    contents = content_set(args.content, n_content, size, seed)
    paintings = None
    results = {}
    for name, cls in classes.items():
        method = cls(device=device, **options[name])
        if method.capabilities.takes_style_images and paintings is None:
            paintings = heldout_paintings(clf, args.styles, clf.holdout, clf.split_seed)
        results[name] = evaluate(name, method, clf, contents, paintings=paintings,
                                 artists=artists, style_size=style_size,
                                 controls=controls.get(name), seed=seed, callback=callback)
    out = {"results": results, "table": format_table(results),
           "n_content": len(contents), "size": size}
    if json_path is not None:
        try:
            with atomic_write(json_path) as f:
                f.write(json.dumps(out, indent=1).encode())
        except OSError as e:
            raise BrushworkError(f"{json_path}: cannot write --json ({e})") from None
    return out


def run_sheet(args) -> Path:
    from ..core.image import check_output_path, save_image
    from ..methods import get_method

    out = check_output_path(args.output)
    options = {"weights": args.weights} if args.weights else {}
    method = get_method(args.method)(device=args.device, **options)
    sheet = sheet_for(method, load_image(args.content), size=args.size or None)
    return save_image(sheet, out)
