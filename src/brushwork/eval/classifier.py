"""Artist classifier on frozen VGG19 statistics: the judge of the style-accuracy metric.

Features: per-channel mean and standard deviation of relu1_1 ... relu5_1 (the statistics AdaIN
and Gram losses match), log1p-compressed, standardised with the training set's moments and
clipped, into a small MLP head.
With ``srm=True`` an SRM block (style-based recalibration, Lee, Kim & Nam 2019) gates each
feature map before its pooling: per channel, style pooling (mean, std), style integration (a
channel-wise fully connected layer over the two statistics, batch norm, sigmoid) and a rescale.
A positive per-channel gate ``g`` scales the pooled statistics exactly (mean(g x) = g mean(x),
std(g x) = g std(x)), so the classifier applies it to the statistics it is given and is trained
on cached features.
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

from ..errors import BrushworkError
from ..core.image import resize
from ..core.stats import log_standardize, mean_std
from ..core.weights import load_weights, meta_json, resolve_weights, save_weights
from ..core.device import has_bf16
from ..core.vgg import LAYER_CHANNELS, VGG19

FEATURE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")  # also the choices


def feature_dim(layers=FEATURE_LAYERS) -> int:
    return 2 * sum(LAYER_CHANNELS[n] for n in layers)


FEATURE_DIM = feature_dim()
IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}
SHIPPED_FILE = "artist_classifier.safetensors"
ARCHITECTURES = ("plain", "srm")  # the weight file's "architecture" metadata
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
        out += mean_std(feats[name].float(), eps=0, unbiased=True)
    return torch.cat(out, 1)


@torch.no_grad()
def vgg_statistics(vgg: VGG19, x: torch.Tensor, size: int | None = 256,
                   layers=FEATURE_LAYERS) -> torch.Tensor:
    """(B, 3, H, W) in [0, 1] -> (B, feature_dim(layers)) channel means and stds."""
    if size is not None:
        x = short_side(x, size)
    return statistics_of(vgg(x, list(layers)), layers)


class SRM(nn.Module):
    """Style-based recalibration module (Lee, Kim & Nam 2019) for a (B, C, H, W) feature map.

    Style pooling: per channel, the spatial mean and standard deviation (``core.stats.mean_std``
    with ``eps``/``unbiased``; the defaults are the classifier's own pooling). Style integration:
    ``z_c = w_c0 mean_c + w_c1 std_c`` (a channel-wise fully connected layer, no bias), batch
    norm over the batch, sigmoid: the gate ``g_c`` in (0, 1) that rescales channel ``c``.
    The integration weights start at zero, so every gate starts at sigmoid(0) = 0.5.
    """

    def __init__(self, channels: int, eps: float = 0.0, unbiased: bool = True):
        super().__init__()
        self.eps, self.unbiased = eps, unbiased
        self.cfc = nn.Parameter(torch.zeros(channels, 2))
        self.bn = nn.BatchNorm1d(channels)

    def gate(self, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
        """Channel statistics (B, C), (B, C) -> gates (B, C) in (0, 1)."""
        z = mean * self.cfc[:, 0] + std * self.cfc[:, 1]
        return torch.sigmoid(self.bn(z))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean, std = mean_std(x, eps=self.eps, unbiased=self.unbiased)
        return x * self.gate(mean, std)[:, :, None, None]


class ArtistClassifier(nn.Module):
    """Standardised VGG statistics -> MLP -> one logit per artist (``srm=True``: the
    statistics of SRM-recalibrated feature maps)."""

    def __init__(self, classes: list[str], hidden: int = 256, dropout: float = 0.3,
                 size: int = 256, layers=FEATURE_LAYERS, srm: bool = False):
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
        # one SRM block per feature map the classifier pools (none: the plain classifier)
        self.srm = nn.ModuleDict({n: SRM(LAYER_CHANNELS[n]) for n in self.layers}) if srm \
            else None
        self.head = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Dropout(dropout),
                                  nn.Linear(hidden, len(classes)))
        self._vgg = None

    @property
    def architecture(self) -> str:
        return "plain" if self.srm is None else "srm"

    def recalibrate(self, feats: torch.Tensor) -> torch.Tensor:
        """(B, feature_dim) statistics of the feature maps -> the statistics of the feature
        maps after their SRM blocks (the input itself without SRM)."""
        if self.srm is None:
            return feats
        out, i = [], 0
        for name in self.layers:
            c = LAYER_CHANNELS[name]
            mean, std = feats[:, i:i + c], feats[:, i + c:i + 2 * c]
            g = self.srm[name].gate(mean, std)
            out += [g * mean, g * std]
            i += 2 * c
        return torch.cat(out, 1)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        # log1p statistics z-scored with the training moments, clipped so one odd channel
        # cannot dominate an unfamiliar image
        return self.head(log_standardize(self.recalibrate(feats), self.feat_mean, self.feat_std,
                                         clip=6.0))

    @property
    def device(self) -> torch.device:
        return self.feat_mean.device

    def vgg(self) -> VGG19:
        """The feature network, on the classifier's device (``classifier.to("cuda")`` moves
        the judging there); built on first use and again after a move."""
        dev = self.device
        if self._vgg is None or self._vgg.device != dev:
            # bf16 only where the hardware runs it fast (emulated bf16 is ~20x slower than fp32)
            self._vgg = VGG19(last_layer=self.layers[-1], device=dev, autocast=has_bf16(dev))
        return self._vgg

    @torch.no_grad()
    def predict_proba(self, images) -> torch.Tensor:
        """A (B, 3, H, W) batch or a list of (1, 3, H, W) images in [0, 1] -> (B, N) probs,
        computed on the classifier's device."""
        self.eval()
        batch = images if isinstance(images, (list, tuple)) else [images]
        feats = torch.cat([vgg_statistics(self.vgg(), x.to(self.device), self.size, self.layers)
                           for x in batch])
        return F.softmax(self(feats), dim=1)

    def predict(self, images) -> list[str]:
        return [self.classes[i] for i in self.predict_proba(images).argmax(1).tolist()]

    def save(self, path, extra: dict | None = None, fp16: bool = False) -> str:
        """Write safetensors with the classes, settings and architecture as metadata (floats
        as fp16 with ``fp16``); returns the sha256."""
        meta = {"kind": "artist_classifier", "classes": json.dumps(self.classes),
                "layers": json.dumps(list(self.layers)), "size": str(self.size),
                "hidden": str(self.hidden), "architecture": self.architecture, **(extra or {})}
        return save_weights(dict(self.state_dict()), path, fp16=fp16, metadata=meta)

    @classmethod
    def load(cls, weights=None) -> "ArtistClassifier":
        path = resolve_weights(weights, SHIPPED_FILE, TRAIN_HINT)
        state, meta = load_weights(path)
        if meta.get("kind") != "artist_classifier":
            raise BrushworkError(f"{path}: not an artist classifier weight file")
        layers = meta_json(meta, "layers", "classifier") if "layers" in meta else FEATURE_LAYERS
        arch = meta.get("architecture", "plain")  # files without the key are plain
        if arch not in ARCHITECTURES:
            raise BrushworkError(f"{path}: unknown classifier architecture {arch!r} "
                                 f"(known: {', '.join(ARCHITECTURES)})")
        model = cls(meta_json(meta, "classes", "classifier"), hidden=int(meta.get("hidden", 256)),
                    size=int(meta.get("size", 256)), layers=layers, srm=arch == "srm")
        try:
            model.load_state_dict(state)
        except RuntimeError:
            raise BrushworkError(f"{path}: tensors do not match a {arch} artist classifier "
                                 f"with these classes and layers") from None
        model.holdout = float(meta.get("holdout", 0.2))  # the split, to find held-out paintings
        model.split_seed = int(meta.get("seed", 0))
        return model.eval()


# ------------------------------------------------------------------------- artist folders
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
