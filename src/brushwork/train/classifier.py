"""`brushwork train classifier`: the artist classifier behind `brushwork eval style-accuracy`."""
from __future__ import annotations

import json
import random
from pathlib import Path
import torch
import torch.nn.functional as F
from ..core.device import has_bf16
from ..core.files import atomic_write
from ..errors import BrushworkError
from ..core.image import load_image
from ..core.protocol import Clock, Progress, emit
from ..core.vgg import VGG19
from ..eval.classifier import (FEATURE_LAYERS, ArtistClassifier, artist_folders, feature_dim,
                              split_by_painting, vgg_statistics)



def random_crop(x: torch.Tensor, rng: random.Random, low: float = 0.55, high: float = 0.9):
    h, w = x.shape[-2:]
    s = rng.uniform(low, high)
    ch, cw = max(8, int(h * s)), max(8, int(w * s))
    top, left = rng.randint(0, h - ch), rng.randint(0, w - cw)
    return x[..., top:top + ch, left:left + cw]


def extract(vgg, items, size, crops: int, seed: int, callback=None, what="features",
            layers=FEATURE_LAYERS):
    """VGG statistics of every image (plus ``crops`` random crops each) -> (feats, labels)."""
    rng = random.Random(seed)
    feats, labels, clock = [], [], Clock()
    for i, (path, label) in enumerate(items):
        x = load_image(path)
        views = [x] + [random_crop(x, rng) for _ in range(crops)]
        for v in views:
            feats.append(vgg_statistics(vgg, v, size, layers))
            labels.append(label)
        if callback is not None and (i % 20 == 0 or i == len(items) - 1):
            emit(callback, Progress("classifier", "step", i + 1, len(items), elapsed=clock(),
                                    message=what))
    return torch.cat(feats), torch.tensor(labels)


def fit_head(model: ArtistClassifier, feats, labels, *, epochs=300, lr=1e-3, weight_decay=1e-2,
             batch=256, seed=0):
    """Plain minibatch AdamW on precomputed features (the head, and the SRM blocks of an SRM
    classifier); returns the final training loss.

    The standardisation moments are those of the statistics the head first sees: the raw
    ones, or with SRM those of the feature maps under the initial gates (all 0.5)."""
    g = torch.Generator().manual_seed(seed)
    model.eval()
    with torch.no_grad():
        logf = torch.log1p(model.recalibrate(feats).clamp_min(0))
    model.feat_mean.copy_(logf.mean(0))
    model.feat_std.copy_(logf.std(0).clamp_min(0.05))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    model.train()
    loss = torch.tensor(0.0)
    for _ in range(epochs):
        order = torch.randperm(len(feats), generator=g)
        for i in range(0, len(feats), batch):
            idx = order[i:i + batch]
            if model.srm is not None and len(idx) < 2:
                continue  # batch norm needs two samples
            loss = F.cross_entropy(model(feats[idx]), labels[idx], label_smoothing=0.05)
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    return float(loss.detach())


@torch.no_grad()
def accuracy_table(model, feats, labels) -> dict[str, float]:
    pred = model(feats).argmax(1)
    table = {}
    for i, name in enumerate(model.classes):
        m = labels == i
        if m.any():
            table[name] = float((pred[m] == i).float().mean())
    table["overall"] = float((pred == labels).float().mean())
    return table


def parse_layers(text: str) -> tuple[str, ...]:
    """'relu1_1,relu2_1' -> a tuple of ReLU layers in network order (unknown names raise)."""
    names = [n.strip() for n in str(text).split(",") if n.strip()]
    bad = [n for n in names if n not in FEATURE_LAYERS]
    if not names or bad:
        raise BrushworkError(f"--layers: choose from {', '.join(FEATURE_LAYERS)}"
                             + (f" (unknown: {', '.join(bad)})" if bad else ""))
    return tuple(n for n in FEATURE_LAYERS if n in names)


def add_arguments(p):
    p.add_argument("--styles", required=True, help="folder of artist sub-folders of paintings")
    p.add_argument("--out", required=True, help="output .safetensors file")
    p.add_argument("--min-images", type=int, default=20, help="skip artists with fewer images")
    p.add_argument("--holdout", type=float, default=0.2, help="share of paintings held out")
    p.add_argument("--size", type=int, default=256, help="short side fed to VGG")
    p.add_argument("--crops", type=int, default=1, help="extra random crops per training image")
    p.add_argument("--epochs", type=int, default=300)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--layers", default=",".join(FEATURE_LAYERS),
                   help="VGG layers whose channel means/stds are the features, comma-separated "
                        "(default relu1_1..relu5_1; relu1_1..relu4_1 gives a classifier asma "
                        "can train against: --classifier-weight)")
    p.add_argument("--cache", default=None, help="optional .pt file caching the VGG features")
    p.add_argument("--final", action="store_true",
                   help="after reporting held-out accuracy, refit on all paintings")
    p.add_argument("--srm", action="store_true",
                   help="SRM blocks (style-based recalibration: a per-channel gate from the "
                        "channel's mean and std) on the VGG feature maps before their pooling")
    p.add_argument("--fit-seed", type=int, default=None,
                   help="seed of the head's initialisation and minibatch order (default: "
                        "follows --seed); the split and crops stay those of --seed")
    p.add_argument("--fp16", action="store_true", help="save the weights as fp16")
    p.add_argument("--train-per-artist", type=int, default=None, metavar="N",
                   help="train on only the first N training paintings of each artist (in the "
                        "split's seeded order); the held-out paintings stay the same")


def run(args, callback=None) -> dict:
    """Train, report held-out accuracy; returns {'accuracy': table, 'out': path, ...}."""
    torch.manual_seed(args.seed)
    clock = Clock()
    layers = parse_layers(args.layers)
    folders = artist_folders(args.styles, args.min_images)
    train, test = split_by_painting(folders, args.holdout, args.seed)
    per_artist = getattr(args, "train_per_artist", None)
    if per_artist is not None:
        if per_artist < 1:
            raise BrushworkError(f"--train-per-artist must be at least 1, got {per_artist}")
        counts, kept = {}, []
        for f, y in train:
            counts[y] = counts.get(y, 0) + 1
            if counts[y] <= per_artist:
                kept.append((f, y))
        train = kept
    vgg = VGG19(last_layer=layers[-1], autocast=has_bf16(torch.device("cpu")))
    cache = Path(args.cache) if args.cache else None
    key = {"styles": str(Path(args.styles).resolve()), "size": args.size, "crops": args.crops,
           "holdout": args.holdout, "seed": args.seed, "classes": list(folders)}
    if layers != FEATURE_LAYERS:
        key["layers"] = list(layers)
    if per_artist is not None:
        key["train_per_artist"] = per_artist
    data = None
    if cache is not None and cache.exists():
        data = torch.load(cache, weights_only=True)
        if json.loads(data["key"]) != key:
            data = None
    if data is None:
        xtr, ytr = extract(vgg, train, args.size, args.crops, args.seed, callback,
                           "train features", layers)
        xte, yte = (extract(vgg, test, args.size, 0, args.seed, callback, "held-out features",
                            layers)
                    if test else (torch.zeros(0, feature_dim(layers)),
                                  torch.zeros(0, dtype=torch.long)))
        data = {"key": json.dumps(key), "xtr": xtr, "ytr": ytr, "xte": xte, "yte": yte}
        if cache is not None:
            with atomic_write(cache) as f:
                torch.save(data, f)
    srm = bool(getattr(args, "srm", False))
    fit_seed = getattr(args, "fit_seed", None)
    if fit_seed is not None:
        torch.manual_seed(fit_seed)
    else:
        fit_seed = args.seed
    model = ArtistClassifier(list(folders), hidden=args.hidden, size=args.size, layers=layers,
                             srm=srm)
    loss = fit_head(model, data["xtr"], data["ytr"], epochs=args.epochs, seed=fit_seed)
    table = accuracy_table(model, data["xte"], data["yte"]) if len(data["yte"]) else {}
    if args.final and len(data["yte"]):
        model = ArtistClassifier(list(folders), hidden=args.hidden, size=args.size,
                                 layers=layers, srm=srm)
        fit_head(model, torch.cat([data["xtr"], data["xte"]]),
                 torch.cat([data["ytr"], data["yte"]]), epochs=args.epochs, seed=fit_seed)
    extra = {"heldout_accuracy": json.dumps(table), "n_train": str(len(train)),
             "n_heldout": str(len(test)), "final_refit": str(bool(args.final)),
             "holdout": str(args.holdout), "seed": str(args.seed), "fit_seed": str(fit_seed)}
    if per_artist is not None:
        extra["train_per_artist"] = str(per_artist)
    sha = model.save(args.out, extra, fp16=bool(getattr(args, "fp16", False)))
    result = {"accuracy": table, "out": str(args.out), "sha256": sha, "classes": list(folders),
              "architecture": model.architecture,
              "n_train": len(train), "n_heldout": len(test), "train_loss": loss,
              "seconds": clock()}
    emit(callback, Progress("classifier", "done", 1, 1, elapsed=clock(),
                            message=json.dumps(result)))
    return result
