"""Artist classifier on frozen VGG19 statistics: the judge of the style-accuracy metric.

Features: per-channel mean and standard deviation of relu1_1 ... relu5_1 (the statistics AdaIN
and Gram losses match), log1p-compressed, standardised with the training set's moments and
clipped, into a small MLP head.
Images are resized so their short side is ``size`` (default 256) before the encoder; the
statistics do not depend on the aspect ratio, so whole images are used.

``brushwork train classifier --styles DIR --out F`` trains on ``DIR/<artist>/*.jpg`` (artists
with at least ``--min-images`` paintings), holding out a share of each artist's paintings
(split by painting, seeded) and reporting held-out accuracy.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

import torch
from torch import nn
import torch.nn.functional as F

from .errors import BrushworkError
from .image import load_image, resize
from .protocol import Clock, Progress, emit
from .shipped import load_weights, meta_json, resolve_weights, save_weights
from .vgg import LAYER_CHANNELS, VGG19

FEATURE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")  # also the choices


def feature_dim(layers=FEATURE_LAYERS) -> int:
    return 2 * sum(LAYER_CHANNELS[n] for n in layers)


FEATURE_DIM = feature_dim()
IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}
SHIPPED_FILE = "artist_classifier.safetensors"
TRAIN_HINT = "brushwork train classifier --styles DIR --out artist_classifier.safetensors"


def short_side(x: torch.Tensor, size: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    s = size / min(h, w)
    return resize(x, (max(1, round(h * s)), max(1, round(w * s))))


def statistics_of(feats: dict, layers=FEATURE_LAYERS) -> torch.Tensor:
    """VGG features {layer: (B, C, H, W)} -> (B, feature_dim(layers)) channel means and stds
    (differentiable: asma's ``--classifier-weight`` trains through it)."""
    out = []
    for name in layers:
        h = feats[name].float().flatten(2)
        out += [h.mean(2), h.std(2)]
    return torch.cat(out, 1)


@torch.no_grad()
def vgg_statistics(vgg: VGG19, x: torch.Tensor, size: int | None = 256,
                   layers=FEATURE_LAYERS) -> torch.Tensor:
    """(B, 3, H, W) in [0, 1] -> (B, feature_dim(layers)) channel means and stds."""
    if size is not None:
        x = short_side(x, size)
    return statistics_of(vgg(x, list(layers)), layers)


def standardize(feats, mean, std, clip: float = 6.0):
    """log1p of the (non-negative) statistics, z-scored with the training moments, clipped so
    one odd channel cannot dominate an unfamiliar image."""
    return ((torch.log1p(feats.clamp_min(0)) - mean) / std).clamp(-clip, clip)


class ArtistClassifier(nn.Module):
    """Standardised VGG statistics -> MLP -> one logit per artist."""

    def __init__(self, classes: list[str], hidden: int = 256, dropout: float = 0.3,
                 size: int = 256, layers=FEATURE_LAYERS):
        super().__init__()
        if len(classes) < 2:
            raise BrushworkError("an artist classifier needs at least two classes")
        self.classes = list(classes)
        self.size = size
        self.hidden = hidden
        self.layers = tuple(layers)
        dim = feature_dim(self.layers)
        self.register_buffer("feat_mean", torch.zeros(dim))
        self.register_buffer("feat_std", torch.ones(dim))
        self.head = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Dropout(dropout),
                                  nn.Linear(hidden, len(classes)))
        self._vgg = None

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return self.head(standardize(feats, self.feat_mean, self.feat_std))

    def vgg(self) -> VGG19:
        if self._vgg is None:
            self._vgg = VGG19(last_layer=self.layers[-1], autocast=True)
        return self._vgg

    @torch.no_grad()
    def predict_proba(self, images) -> torch.Tensor:
        """A (B, 3, H, W) batch or a list of (1, 3, H, W) images in [0, 1] -> (B, N) probs."""
        self.eval()
        batch = images if isinstance(images, (list, tuple)) else [images]
        feats = torch.cat([vgg_statistics(self.vgg(), x, self.size, self.layers) for x in batch])
        return F.softmax(self(feats), dim=1)

    def predict(self, images) -> list[str]:
        return [self.classes[i] for i in self.predict_proba(images).argmax(1).tolist()]

    def save(self, path, extra: dict | None = None) -> str:
        """Write safetensors with the classes and settings as metadata; returns the sha256."""
        meta = {"kind": "artist_classifier", "classes": json.dumps(self.classes),
                "layers": json.dumps(list(self.layers)), "size": str(self.size),
                "hidden": str(self.hidden), **(extra or {})}
        return save_weights({k: v for k, v in self.state_dict().items()}, path, meta)

    @classmethod
    def load(cls, weights=None) -> "ArtistClassifier":
        path = resolve_weights(weights, SHIPPED_FILE, TRAIN_HINT)
        state, meta = load_weights(path)
        if meta.get("kind") != "artist_classifier":
            raise BrushworkError(f"{path}: not an artist classifier weight file")
        layers = meta_json(meta, "layers", "classifier") if "layers" in meta else FEATURE_LAYERS
        model = cls(meta_json(meta, "classes", "classifier"), hidden=int(meta.get("hidden", 256)),
                    size=int(meta.get("size", 256)), layers=layers)
        model.load_state_dict(state)
        model.holdout = float(meta.get("holdout", 0.2))  # the split, to find held-out paintings
        model.split_seed = int(meta.get("seed", 0))
        return model.eval()


# ---------------------------------------------------------------------------------- training

def artist_folders(root, min_images: int = 20) -> dict[str, list[Path]]:
    """``root/<artist>/<images>`` -> {artist: sorted image paths}, artists with enough images."""
    root = Path(root)
    if not root.is_dir():
        raise BrushworkError(f"{root}: not a directory of artist folders")
    out = {}
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        files = sorted(p for p in d.iterdir() if p.suffix.lower() in IMAGE_EXTS)
        if len(files) >= min_images:
            out[d.name] = files
    if len(out) < 2:
        raise BrushworkError(f"{root}: needs at least two sub-folders with >= {min_images} images")
    return out


def split_by_painting(folders: dict[str, list[Path]], holdout: float, seed: int):
    """Per artist, a seeded share of paintings goes to the held-out set (at least one)."""
    rng = random.Random(seed)
    train, test = [], []
    for label, (artist, files) in enumerate(folders.items()):
        files = list(files)
        rng.shuffle(files)
        n_test = max(1, round(len(files) * holdout)) if holdout > 0 else 0
        test += [(f, label) for f in files[:n_test]]
        train += [(f, label) for f in files[n_test:]]
    return train, test


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
    """Plain minibatch AdamW on precomputed features; returns the final training loss."""
    g = torch.Generator().manual_seed(seed)
    logf = torch.log1p(feats.clamp_min(0))
    model.feat_mean.copy_(logf.mean(0))
    model.feat_std.copy_(logf.std(0).clamp_min(0.05))
    opt = torch.optim.AdamW(model.head.parameters(), lr=lr, weight_decay=weight_decay)
    model.train()
    loss = torch.tensor(0.0)
    for _ in range(epochs):
        order = torch.randperm(len(feats), generator=g)
        for i in range(0, len(feats), batch):
            idx = order[i:i + batch]
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


def run(args, callback=None) -> dict:
    """Train, report held-out accuracy; returns {'accuracy': table, 'out': path, ...}."""
    torch.manual_seed(args.seed)
    clock = Clock()
    layers = parse_layers(args.layers)
    folders = artist_folders(args.styles, args.min_images)
    train, test = split_by_painting(folders, args.holdout, args.seed)
    vgg = VGG19(last_layer=layers[-1], autocast=True)
    cache = Path(args.cache) if args.cache else None
    key = {"styles": str(Path(args.styles).resolve()), "size": args.size, "crops": args.crops,
           "holdout": args.holdout, "seed": args.seed, "classes": list(folders)}
    if layers != FEATURE_LAYERS:
        key["layers"] = list(layers)
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
            torch.save(data, cache)
    model = ArtistClassifier(list(folders), hidden=args.hidden, size=args.size, layers=layers)
    loss = fit_head(model, data["xtr"], data["ytr"], epochs=args.epochs, seed=args.seed)
    table = accuracy_table(model, data["xte"], data["yte"]) if len(data["yte"]) else {}
    if args.final and len(data["yte"]):
        model = ArtistClassifier(list(folders), hidden=args.hidden, size=args.size,
                                 layers=layers)
        fit_head(model, torch.cat([data["xtr"], data["xte"]]),
                 torch.cat([data["ytr"], data["yte"]]), epochs=args.epochs, seed=args.seed)
    extra = {"heldout_accuracy": json.dumps(table), "n_train": str(len(train)),
             "n_heldout": str(len(test)), "final_refit": str(bool(args.final)),
             "holdout": str(args.holdout), "seed": str(args.seed)}
    model.save(args.out, extra)
    result = {"accuracy": table, "out": str(args.out), "classes": list(folders),
              "n_train": len(train), "n_heldout": len(test), "train_loss": loss,
              "seconds": clock()}
    emit(callback, Progress("classifier", "done", 1, 1, elapsed=clock(),
                            message=json.dumps(result)))
    return result
