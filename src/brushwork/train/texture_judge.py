"""`brushwork train texture-judge`: the artist judge on hand-made texture features.

Paintings of ``--styles DIR/<artist>/`` (or ``--data ROOT``: ``ROOT/styles``; artists with at
least ``--min-images``) are split by painting exactly as ``brushwork train classifier`` splits
them (``--holdout`` share per artist, ``--seed``), so with the same two values both judges hold
out the same paintings. Each training painting gives its whole image and ``--crops`` random
views: the painting resized by a random factor (0.5-2) and, for some, JPEG-encoded, then
brought to the judging scale and cropped (55-90 % of each side, half of them mirrored), so
that the judge does not learn the resampling traces of each artist's image source (Monet and
van Gogh come at 256 px, most others at 224 px, Kandinsky at 512 px); held-out paintings are
judged whole. The L2 weight is chosen on a further by-painting split of the
training paintings (``--l2 auto``) and the model refitted on all of them; the held-out
accuracy per artist goes into the weight file's metadata and ``--json``. ``--feature-set``:
``texture`` (the default and the shipped judge), ``all`` (with colour) or ``colour``; the
features of all three are computed and cached (``--cache``) alike.
"""
from __future__ import annotations

import io
import json
import math
import random
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..core.files import atomic_write
from ..core.image import load_image, resize, to_pil
from ..core.protocol import Clock, Progress, emit
from ..errors import BrushworkError
from ..eval.classifier import artist_folders, split_by_painting
from ..eval.texture_judge import (DEFAULT_SIZE, FEATURE_DIM, FEATURE_GROUPS, FEATURE_SETS,
                                  TextureJudge, feature_index, fit_linear, short_side,
                                  standardise, texture_features)

L2_GRID = (1e-6, 3e-6, 1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2)


def random_view(x: torch.Tensor, rng: random.Random, low: float = 0.55, high: float = 0.9):
    """A random crop (each side ``low``..``high`` of the image's), mirrored half the time."""
    h, w = x.shape[-2:]
    ch, cw = max(32, int(h * rng.uniform(low, high))), max(32, int(w * rng.uniform(low, high)))
    ch, cw = min(ch, h), min(cw, w)
    top, left = rng.randint(0, h - ch), rng.randint(0, w - cw)
    v = x[..., top:top + ch, left:left + cw]
    return v.flip(-1) if rng.random() < 0.5 else v


def jpeg(x: torch.Tensor, quality: int) -> torch.Tensor:
    """``x`` through JPEG encoding at ``quality`` and back."""
    buf = io.BytesIO()
    to_pil(x).save(buf, "JPEG", quality=quality)
    buf.seek(0)
    a = np.asarray(Image.open(buf).convert("RGB"), dtype=np.float32) / 255
    return torch.from_numpy(a.copy()).permute(2, 0, 1)[None]


def resampling_history(x: torch.Tensor, rng: random.Random, low: float = 0.5,
                       high: float = 2.0, p_jpeg: float = 0.3) -> torch.Tensor:
    """The painting as if it had come at another resolution: resized by a log-uniform factor
    in [low, high], then JPEG-encoded (quality 50-95) with probability ``p_jpeg``. The
    paintings' sources differ in resolution (256 px, 224 px, 512 px) and so in resampling
    traces; a judge trained without this tells the sources apart, not the artists."""
    f = math.exp(rng.uniform(math.log(low), math.log(high)))
    h, w = x.shape[-2:]
    x = resize(x, (max(32, round(h * f)), max(32, round(w * f))))
    return jpeg(x, rng.randint(50, 95)) if rng.random() < p_jpeg else x


def extract(items, size: int, crops: int, seed: int, callback=None, what: str = "features"):
    """Features of every (path, label): the whole image, then ``crops`` random views (each
    with a random :func:`resampling_history`, at the judging scale, cropped) ->
    (feats (N, D), labels (N,), painting index (N,), whole-image flag (N,))."""
    rng = random.Random(seed)
    feats, labels, owner, whole, clock = [], [], [], [], Clock()
    for i, (path, label) in enumerate(items):
        x0 = load_image(path)
        views = [short_side(x0, size)] + [
            random_view(short_side(resampling_history(x0, rng), size), rng)
            for _ in range(crops)]
        for j, v in enumerate(views):
            feats.append(texture_features(v, None))
            labels.append(label)
            owner.append(i)
            whole.append(j == 0)
        if callback is not None and (i % 50 == 0 or i == len(items) - 1):
            emit(callback, Progress("texture-judge", "step", i + 1, len(items), elapsed=clock(),
                                    message=what))
    if not feats:
        return (torch.zeros(0, FEATURE_DIM), torch.zeros(0, dtype=torch.long),
                torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.bool))
    return (torch.stack(feats), torch.tensor(labels), torch.tensor(owner),
            torch.tensor(whole))


def moments(feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-feature mean and standard deviation (floored so that a constant feature counts 0)."""
    mean = feats.mean(0)
    std = feats.std(0) if len(feats) > 1 else torch.ones_like(mean)
    return mean, std.clamp_min(1e-3 * float(std.max().clamp_min(1e-6)))


def fit(feats, labels, n_classes: int, l2: float, index=None) -> tuple:
    """Moments and linear weights on the columns ``index`` of ``feats`` (None: all)."""
    if index is not None:
        feats = feats[:, index]
    mean, std = moments(feats)
    w, b = fit_linear(standardise(feats, mean, std), labels, n_classes, l2)
    return mean, std, w, b


@torch.no_grad()
def accuracy_table(judge: TextureJudge, feats, labels) -> dict[str, float]:
    """Per artist and overall accuracy, plus ``mean_per_artist`` (every artist counts once)."""
    pred = judge.logits(feats).argmax(1)
    table, per = {}, []
    for i, name in enumerate(judge.classes):
        m = labels == i
        if m.any():
            table[name] = float((pred[m] == i).float().mean())
            per.append(table[name])
    table["overall"] = float((pred == labels).float().mean()) if len(labels) else 0.0
    table["mean_per_artist"] = sum(per) / len(per) if per else 0.0
    return table


def choose_l2(feats, labels, owner, whole, n_classes: int, seed: int, share: float = 0.2,
              index=None):
    """The L2 weight of :data:`L2_GRID` with the best mean per-artist accuracy on a seeded
    by-painting split of the training paintings (whole images judged) -> (l2, {l2: acc})."""
    rng = random.Random(seed + 1)
    val = set()
    for c in range(n_classes):
        ids = sorted({int(o) for o, l in zip(owner, labels) if int(l) == c})
        rng.shuffle(ids)
        val.update(ids[:max(1, round(len(ids) * share))] if len(ids) > 1 else [])
    in_val = torch.tensor([int(o) in val for o in owner], dtype=torch.bool)
    fit_rows, val_rows = ~in_val, in_val & whole
    if not val_rows.any() or not fit_rows.any():
        return L2_GRID[len(L2_GRID) // 2], {}
    if index is not None:
        feats = feats[:, index]
    scores = {}
    for l2 in L2_GRID:
        mean, std, w, b = fit(feats[fit_rows], labels[fit_rows], n_classes, l2)
        pred = (standardise(feats[val_rows], mean, std) @ w.T + b).argmax(1)
        y = labels[val_rows]
        per = [float((pred[y == c] == c).float().mean()) for c in range(n_classes)
               if (y == c).any()]
        scores[l2] = sum(per) / len(per)
    best = max(scores, key=lambda k: (scores[k], k))  # ties: the stronger regularisation
    return best, scores


def _l2_arg(text):
    if str(text) == "auto":
        return "auto"
    try:
        v = float(text)
    except ValueError:
        raise BrushworkError(f"--l2: expected 'auto' or a number >= 0, got {text!r}") from None
    if not v >= 0:
        raise BrushworkError(f"--l2: expected 'auto' or a number >= 0, got {text!r}")
    return v


def add_arguments(p):
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--styles", help="folder of artist sub-folders of paintings")
    src.add_argument("--data", help="data root holding styles/ (the same as --styles ROOT/styles)")
    p.add_argument("--out", required=True, help="output .safetensors file")
    p.add_argument("--min-images", type=int, default=20, help="skip artists with fewer images")
    p.add_argument("--holdout", type=float, default=0.2, help="share of paintings held out")
    p.add_argument("--seed", type=int, default=0, help="split and crop seed")
    p.add_argument("--size", type=int, default=DEFAULT_SIZE, help="short side the features see")
    p.add_argument("--crops", type=int, default=4, help="random crops per training painting")
    p.add_argument("--l2", default="auto", help="L2 weight, or 'auto' (chosen on a split of "
                   "the training paintings)")
    p.add_argument("--feature-set", default="texture", choices=tuple(FEATURE_SETS),
                   help="features the judge reads: texture (luminance texture only: the "
                        "shipped judge), all (with colour and tone) or colour alone")
    p.add_argument("--cache", default=None, help="optional .pt file caching the features "
                   "(every feature set's: one cache serves all three)")
    p.add_argument("--json", default=None, help="also write the report to this JSON file")


def run(args, callback=None) -> dict:
    """Extract features, fit, report held-out accuracy, save; returns the report."""
    clock = Clock()
    l2_arg = _l2_arg(args.l2)
    if not 0 <= args.holdout < 1:
        raise BrushworkError(f"--holdout: expected a share in [0, 1), got {args.holdout}")
    if args.crops < 0 or args.size < 32:
        raise BrushworkError("--crops must be >= 0 and --size >= 32")
    styles = Path(args.styles) if args.styles else Path(args.data) / "styles"
    folders = artist_folders(styles, args.min_images)
    classes = list(folders)
    train, test = split_by_painting(folders, args.holdout, args.seed)
    cache = Path(args.cache) if args.cache else None
    key = {"styles": str(styles.resolve()), "size": args.size, "crops": args.crops,
           "views": "resampling-history",
           "holdout": args.holdout, "seed": args.seed, "classes": classes,
           "features": FEATURE_GROUPS, "n": [len(train), len(test)]}
    data = None
    if cache is not None and cache.exists():
        data = torch.load(cache, weights_only=True)
        if json.loads(data["key"]) != key:
            data = None
    if data is None:
        xtr, ytr, otr, wtr = extract(train, args.size, args.crops, args.seed, callback,
                                     "train features")
        xte, yte, _, _ = extract(test, args.size, 0, args.seed, callback, "held-out features")
        data = {"key": json.dumps(key), "xtr": xtr, "ytr": ytr, "otr": otr, "wtr": wtr,
                "xte": xte, "yte": yte}
        if cache is not None:
            with atomic_write(cache) as f:
                torch.save(data, f)
    fit_clock = Clock()
    feature_set = getattr(args, "feature_set", "texture")
    index = feature_index(feature_set)
    if l2_arg == "auto":
        l2, scores = choose_l2(data["xtr"], data["ytr"], data["otr"], data["wtr"],
                               len(classes), args.seed, index=index)
    else:
        l2, scores = l2_arg, {}
    mean, std, w, b = fit(data["xtr"], data["ytr"], len(classes), l2, index)
    judge = TextureJudge(classes, mean, std, w, b, size=args.size, holdout=args.holdout,
                         split_seed=args.seed, feature_set=feature_set)
    table = accuracy_table(judge, data["xte"], data["yte"]) if len(data["yte"]) else {}
    train_acc = accuracy_table(judge, data["xtr"][data["wtr"]], data["ytr"][data["wtr"]])
    fit_seconds = fit_clock()
    extra = {"heldout_accuracy": json.dumps(table), "n_train": str(len(train)),
             "n_heldout": str(len(test)), "l2": str(l2), "crops": str(args.crops)}
    sha = judge.save(args.out, extra)
    report = {"accuracy": table, "train_accuracy": train_acc["overall"], "out": str(args.out),
              "feature_set": feature_set,
              "sha256": sha, "classes": classes, "n_train": len(train), "n_heldout": len(test),
              "l2": l2, "l2_scores": {str(k): v for k, v in scores.items()},
              "fit_seconds": fit_seconds, "seconds": clock()}
    if args.json:
        with atomic_write(Path(args.json)) as f:
            f.write(json.dumps(report, indent=1).encode())
    emit(callback, Progress("texture-judge", "done", 1, 1, elapsed=clock(),
                            message=json.dumps(report)))
    return report
