"""The style-accuracy metric of ASMA-GAN (a.k.a. deception rate), and the style sheet.

**Style accuracy**: stylise a set of content photos once per artist and count the share of
results a judge assigns to the target artist, per artist and overall. Two judges:

* ``texture`` (:mod:`brushwork.eval.texture_judge`): hand-made luminance texture features
  (local binary patterns, Laplacian-pyramid and Gabor energies, gradient statistics; the
  shipped judge leaves colour out) and a linear classifier; no loss of any generator
  optimises these features, so this is the judge targets are set against;
* ``vgg`` (:mod:`brushwork.eval.classifier`): VGG19 channel means/stds into an MLP, the
  statistics asma's style term and the mean/std losses match (a generator can score well on
  it by matching them).

Each output is stylised once and read by every judge asked for (``--judge both``: two columns
per method). Multi-artist methods (``asma``) are driven by the artist's label; arbitrary-style
methods (``gatys``, ``adain``, ...) by one painting of that artist, drawn (seeded) from the
paintings *every* judge held out, so no judge trained on the painting that drives the method.

**Sheet**: every built-in style or artist of a model (``cin``, ``asma``) on one photo, in one
labelled grid (Pillow's default font).
"""
from __future__ import annotations

import random
from pathlib import Path

import torch
from PIL import Image, ImageDraw, ImageFont

from .classifier import ArtistClassifier, artist_folders, split_by_painting
from .texture_judge import TextureJudge
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


JUDGES = ("texture", "vgg")
"""The judges, the target one (texture) first."""
JUDGE_CHOICES = ("vgg", "texture", "both")


def load_judges(which: str = "both", classifier=None, texture_judge=None) -> dict:
    """{name: judge} for ``which`` ("vgg", "texture" or "both"; texture first), from the given
    weight files or the shipped ones."""
    if which not in JUDGE_CHOICES:
        raise BrushworkError(f"unknown judge {which!r} (choose {', '.join(JUDGE_CHOICES)})")
    names = JUDGES if which == "both" else (which,)
    loaders = {"texture": lambda: TextureJudge.load(texture_judge),
               "vgg": lambda: ArtistClassifier.load(classifier)}
    return {name: loaders[name]() for name in names}


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


def heldout_for_judges(judges: dict, styles_dir) -> dict[str, list]:
    """{artist: paintings held out by every judge} (each judge's own seeded split), for the
    artists all judges know."""
    common = None
    for judge in judges.values():
        held = heldout_paintings(judge, styles_dir, judge.holdout, judge.split_seed)
        held = {a: set(v) for a, v in held.items()}
        common = held if common is None else {a: common[a] & held[a] for a in common
                                              if a in held}
    return {a: sorted(v) for a, v in (common or {}).items()}


def check_artists(judges: dict, artists=None) -> list[str]:
    """The artists to judge (default: those of the first judge); every judge must know them."""
    first = next(iter(judges.values()))
    artists = list(artists or first.classes)
    for name, judge in judges.items():
        unknown = [a for a in artists if a not in judge.classes]
        if unknown:
            raise BrushworkError(f"the {name} judge has no artist(s) {', '.join(unknown)} "
                                 f"(it knows {', '.join(judge.classes)})")
    return artists


def evaluate(method_name: str, method, clf, contents, *, paintings=None,
             artists=None, style_size: int = 256, controls=None, seed: int = 0,
             callback=None) -> dict:
    """-> {"per_artist": {artist: share}, "overall": share, "n": count, "seconds": s,
    "confusion": {artist: {predicted artist: count}}}.

    ``clf``: one judge (an :class:`ArtistClassifier`, a :class:`TextureJudge`, anything with
    ``classes`` and ``predict_proba``), or a dict {name: judge}: every output is read by each,
    the result gets ``"judges": {name: {"per_artist", "overall", "confusion"}}`` and its
    top-level figures are the first judge's.
    ``method`` follows the Stylizer protocol; label-driven methods (with ``labels()``) get
    ``controls['artist']``, others one painting per (content, artist) from ``paintings``."""
    clock = Clock()
    several = isinstance(clf, dict)
    judges = dict(clf) if several else {"judge": clf}
    if not judges:
        raise BrushworkError("style accuracy needs at least one judge")
    labelled = method.capabilities.styles == "labels"
    artists = check_artists(judges, artists)
    if labelled:
        known = method.labels()
        absent = [a for a in artists if a not in known]
        if absent:
            raise BrushworkError(f"{method_name}: model has no artist(s) {', '.join(absent)}")
    rng = random.Random(seed)
    tally = {name: ({}, {}) for name in judges}  # name -> (hits, confusion)
    counts, done = {}, 0
    total = len(artists) * len(contents)
    for artist in artists:
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
            for name, judge in judges.items():
                hits, confusion = tally[name]
                guess = judge.classes[int(judge.predict_proba(y).argmax(1))]
                row = confusion.setdefault(artist, {})
                row[guess] = row.get(guess, 0) + 1
                hits[artist] = hits.get(artist, 0) + int(guess == artist)
            counts[artist] = counts.get(artist, 0) + 1
            done += 1
            emit(callback, Progress(method_name, "step", done, total, elapsed=clock(),
                                    message=artist))
    n = sum(counts.values())
    parts = {name: {"per_artist": {a: hits.get(a, 0) / counts[a] for a in artists},
                    "overall": sum(hits.values()) / max(1, n), "confusion": confusion}
             for name, (hits, confusion) in tally.items()}
    first = parts[next(iter(parts))]
    out = {**first, "n": n, "seconds": clock()}
    if several:
        out["judges"] = parts
    return out


def judge_columns(results: dict[str, dict]) -> dict[str, dict]:
    """{method: result} -> {column: result} with one column per (method, judge) when results
    carry several judges ("asma (texture)", "asma (vgg)"), for :func:`format_table`."""
    cols = {}
    for method, r in results.items():
        if "judges" in r:
            for judge, part in r["judges"].items():
                cols[f"{method} ({judge})"] = part
        else:
            cols[method] = r
    return cols


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
    """Judge each method with ``args.judge`` ("vgg", "texture" or "both", the default);
    returns {"results": {method: result}, "table": markdown (one column per method and
    judge), "judges": names, "target_judge": the first}. Every argument (numbers, method
    names, the judges, the --json path) is checked before any evaluation."""
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

    which = getattr(args, "judge", "both")
    judges = load_judges(which, args.classifier, getattr(args, "texture_judge", None))
    artists = check_artists(judges, artists)
    contents = content_set(args.content, n_content, size, seed)
    paintings = None
    results = {}
    for name, cls in classes.items():
        method = cls(device=device, **options[name])
        if method.capabilities.takes_style_images and paintings is None:
            paintings = heldout_for_judges(judges, args.styles)
        results[name] = evaluate(name, method, judges, contents, paintings=paintings,
                                 artists=artists, style_size=style_size,
                                 controls=controls.get(name), seed=seed, callback=callback)
    out = {"results": results, "table": format_table(judge_columns(results)),
           "judges": list(judges), "target_judge": next(iter(judges)),
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
