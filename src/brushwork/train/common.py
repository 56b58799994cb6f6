"""Shared pieces of the trainers: data, seeded sampling, checkpoints, grids, events, flags.

Everything here is a plain function. A trainer is a module of ``brushwork.train`` exposing
``add_arguments(parser)`` and ``run(args, callback)``; ``brushwork.train.TRAINERS`` maps names
to them.

* Data: :func:`load_folder` reads every jpg/png under a folder (recursively), scales each so its
  short side is ``load_size`` (small images are upscaled) and keeps them in memory as uint8.
  :func:`sample_batch` draws random crops + horizontal flips from a ``torch.Generator``;
  :func:`batches` is an infinite seeded sampler whose stream depends only on (seed, step), so a
  resumed run sees exactly the batches it would have seen.
* Checkpoints: :func:`save_checkpoint` / :func:`load_checkpoint` store model(s), optimizer, step,
  RNG state and the run's settings as a dict of tensors and plain values, written atomically with
  ``torch.save`` and read back with ``weights_only=True`` (no pickled code runs).
* Weights for shipping: ``brushwork.core.weights.save_weights`` (safetensors, optional fp16).
* Events: :func:`train_event` builds a ``Progress(kind='train')``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import torch
import torch.nn.functional as F

from ..core.device import has_bf16, pick_device
from ..core.files import atomic_write
from ..core.image import list_images, load_image, save_image
from ..core.protocol import Progress, emit
from ..core.weights import prefixed_state, save_weights
from ..errors import BrushworkError, ImageError


# ----------------------------------------------------------------------------------------- data
def _scale_short_side(t: torch.Tensor, short: int) -> torch.Tensor:
    h, w = t.shape[-2:]
    s = short / min(h, w)
    size = (max(short, round(h * s)), max(short, round(w * s)))
    return F.interpolate(t, size=size, mode="bicubic", align_corners=False,
                         antialias=s < 1).clamp(0, 1)


def load_folder(root, load_size: int, *, skip_bad: bool = True,
                exclude=frozenset()) -> list[torch.Tensor]:
    """Images under ``root`` as uint8 (3, H, W) tensors with short side ``load_size``.

    Files whose names are in ``exclude`` are left out; unreadable files are skipped
    (``skip_bad``) or raise; at least one image must load."""
    out = []
    for p in list_images(root):
        if p.name in exclude:
            continue
        try:
            t = load_image(p)
        except ImageError:
            if skip_bad:
                continue
            raise
        t = _scale_short_side(t, load_size)
        out.append((t[0] * 255).round().to(torch.uint8))
    if not out:
        raise BrushworkError(f"{root}: no training images left (none readable, or all excluded)"
                             if exclude else f"{root}: none of the images could be read")
    return out


def sample_batch(images: list[torch.Tensor], size: int, batch: int,
                 generator: torch.Generator) -> torch.Tensor:
    """``batch`` random ``size`` x ``size`` crops (random image, position, horizontal flip),
    float32 (batch, 3, size, size) in [0, 1]. Images smaller than ``size`` are upscaled first."""
    crops = []
    for _ in range(batch):
        img = images[int(torch.randint(len(images), (1,), generator=generator))]
        if min(img.shape[-2:]) < size:
            img = (_scale_short_side(img[None].float() / 255, size)[0] * 255).to(torch.uint8)
        h, w = img.shape[-2:]
        y = int(torch.randint(h - size + 1, (1,), generator=generator))
        x = int(torch.randint(w - size + 1, (1,), generator=generator))
        crop = img[:, y:y + size, x:x + size]
        if bool(torch.rand((), generator=generator) < 0.5):
            crop = crop.flip(-1)
        crops.append(crop)
    return torch.stack(crops).float() / 255.0


def step_generator(seed: int, step: int, stream: int = 0) -> torch.Generator:
    """A generator determined by (seed, step, stream): resumable without storing sampler state."""
    return torch.Generator().manual_seed((seed * 1_000_003 + step * 7919 + stream * 104_729)
                                         % (2 ** 63))


def batches(images: list[torch.Tensor], size: int, batch: int, seed: int, *,
            start_step: int = 0, stream: int = 0) -> Iterator[torch.Tensor]:
    """Infinite seeded sampler: batch ``k`` depends only on (seed, stream, k)."""
    step = start_step
    while True:
        yield sample_batch(images, size, batch, step_generator(seed, step, stream))
        step += 1


# ------------------------------------------------------------------------------------- checkpoints
def save_checkpoint(path, *, models: dict[str, torch.nn.Module],
                    optimizers: dict[str, torch.optim.Optimizer], step: int,
                    config: dict | None = None, extra: dict | None = None) -> Path:
    """Write a resumable checkpoint (atomic). ``config`` must hold plain values (json-able)."""
    path = Path(path)
    blob = {
        "format": "brushwork-checkpoint-1",
        "step": int(step),
        "models": {k: {n: t.detach().cpu() for n, t in m.state_dict().items()}
                   for k, m in models.items()},
        "optimizers": {k: o.state_dict() for k, o in optimizers.items()},
        "torch_rng": torch.get_rng_state(),
        "config_json": json.dumps(config or {}, sort_keys=True, default=str),
        "extra": extra or {},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as f:
        torch.save(blob, f)
    return path


def load_checkpoint(path, *, models: dict[str, torch.nn.Module],
                    optimizers: dict[str, torch.optim.Optimizer] | None = None,
                    map_location="cpu", lr: float | None = None,
                    optional: tuple[str, ...] = ()) -> dict:
    """Restore models/optimizers in place from :func:`save_checkpoint`; returns
    ``{"step", "config", "extra", "models"}`` (``models``: the names the file holds). ``lr``
    (the resumed run's ``--lr``) replaces the saved learning rate. Models named in ``optional``
    are left as they are when the file lacks them. Raises BrushworkError on a missing/foreign
    file."""
    path = Path(path)
    if not path.is_file():
        raise BrushworkError(f"{path}: no checkpoint to resume from")
    try:
        blob = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # corrupt file, pickle with code, ...
        raise BrushworkError(f"{path}: not a readable brushwork checkpoint ({e.__class__.__name__})") from None
    if not isinstance(blob, dict) or blob.get("format") != "brushwork-checkpoint-1":
        raise BrushworkError(f"{path}: not a brushwork checkpoint")
    for k, m in models.items():
        if k not in blob["models"]:
            if k in optional:
                continue
            raise BrushworkError(f"{path}: checkpoint has no model {k!r}")
        try:
            m.load_state_dict(blob["models"][k])
        except RuntimeError:
            raise BrushworkError(f"{path}: model {k!r} in the checkpoint does not match this "
                                 f"configuration (different method or width?)") from None
    for k, o in (optimizers or {}).items():
        if k in blob["optimizers"]:
            o.load_state_dict(blob["optimizers"][k])
            if lr is not None:
                for group in o.param_groups:
                    group["lr"] = lr
    torch.set_rng_state(blob["torch_rng"])
    return {"step": int(blob["step"]), "config": json.loads(blob["config_json"]),
            "extra": blob.get("extra", {}), "models": list(blob["models"])}


def load_checkpoint_config(path) -> dict:
    """The settings (``config``) a checkpoint was saved with."""
    path = Path(path)
    if not path.is_file():
        raise BrushworkError(f"{path}: no such checkpoint")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        return json.loads(blob["config_json"])
    except Exception:
        raise BrushworkError(f"{path}: not a readable brushwork checkpoint") from None


def load_checkpoint_step(path) -> int:
    """The step a checkpoint was saved at (0 if there is none yet)."""
    path = Path(path)
    if not path.is_file():
        return 0
    try:
        return int(torch.load(path, map_location="cpu", weights_only=True)["step"])
    except Exception:
        raise BrushworkError(f"{path}: not a readable brushwork checkpoint") from None


def export_checkpoint(checkpoint, out, models: dict[str, torch.nn.Module], meta, *,
                      fp16: bool = True, extra_meta: dict | None = None) -> str:
    """Write the ``models`` of a training checkpoint as one weight file (tensors prefixed
    ``name.``) with the metadata ``meta(step)`` plus ``extra_meta``; returns its sha256. Ships
    a model from a run stopped before its last step."""
    info = load_checkpoint(checkpoint, models=models)
    state = {}
    for name, module in models.items():
        state.update(prefixed_state(name, module.eval()))
    return save_weights(state, out, fp16=fp16,
                        metadata={**meta(info["step"]), **(extra_meta or {})})


# ------------------------------------------------------------------------------ sample grids/events
def save_grid(rows: list[torch.Tensor], path, *, max_cols: int = 8) -> Path:
    """Save rows of (N, 3, H, W) image batches (same H, W) as one PNG grid."""
    rows = [r[:max_cols].detach().float().cpu().clamp(0, 1) for r in rows]
    n = min(r.shape[0] for r in rows)
    grid = torch.cat([torch.cat(list(r[:n]), dim=2) for r in rows], dim=1)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return save_image(grid[None], path)


def train_event(method: str, step: int, total: int, losses: dict[str, float],
                elapsed: float, message: str = "", kind: str = "train") -> Progress:
    return Progress(method=method, kind=kind, step=step, total=total, losses=dict(losses),
                    elapsed=elapsed, message=message)


def after_step(name: str, args, step: int, t0: int, total: torch.Tensor,
               losses: dict[str, float], clock, callback, ckpt, *, models, optimizers,
               config) -> bool:
    """What every trainer does after optimiser step ``step`` (``t0``: the step it started or
    resumed at): refuse a diverged loss, emit the progress event, checkpoint and log on
    schedule. Returns whether this step writes a sample grid."""
    if not torch.isfinite(total):
        raise BrushworkError(f"training diverged at step {step} (loss is not finite); lower --lr")
    emit(callback, train_event(name, step, args.steps, losses, clock(),
                               f"{(step - t0) / max(clock(), 1e-9):.2f} it/s"))
    if step % args.checkpoint_every == 0 or step == args.steps:
        checkpoint_and_log(ckpt, models=models, optimizers=optimizers, step=step, config=config,
                           seconds=clock(), losses=losses)
    return bool(args.sample_every) and (step % args.sample_every == 0 or step == args.steps)


def checkpoint_and_log(ckpt, *, models, optimizers, step: int, config, seconds: float,
                       losses: dict[str, float]) -> None:
    """Save the checkpoint of ``step`` and append its line (step, time, losses) to the run's
    ``.log.jsonl`` beside it."""
    save_checkpoint(ckpt, models=models, optimizers=optimizers, step=step, config=config)
    log_line(Path(ckpt).with_suffix(".log.jsonl"),
             {"step": step, "time": round(seconds, 1), **losses})


def log_line(path, record: dict) -> None:
    """Append one json line (losses, step, time) to a training log."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(record, sort_keys=True) + "\n")


def add_run_arguments(parser, *, every: int) -> None:
    """How a training run runs (seed, device, precision, checkpoints, samples, resume, threads):
    shared by every trainer; ``every`` is the default checkpoint and sample interval."""
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto")
    parser.add_argument("--no-bf16", dest="bf16", action="store_false",
                        help="disable bf16 autocast (on by default)")
    parser.add_argument("--checkpoint", default=None,
                        help="checkpoint path (default: OUT with .ckpt)")
    parser.add_argument("--checkpoint-every", type=int, default=every)
    parser.add_argument("--sample-every", type=int, default=every,
                        help="save a sample grid PNG next to the checkpoint every N steps")
    parser.add_argument("--resume", action="store_true", help="continue from the checkpoint")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")


def add_artist_arguments(parser, *, min_images: int = 100) -> None:
    """The data arguments of per-artist trainers: ``--styles`` (a folder of artist folders),
    ``--content``, ``--out``, ``--artists``, ``--min-images`` and ``--exclude``."""
    parser.add_argument("--styles", required=True,
                        help="folder of artist sub-folders of paintings")
    parser.add_argument("--content", required=True, help="folder of content photos (recursive)")
    parser.add_argument("--out", required=True, help="output weight file (.safetensors)")
    parser.add_argument("--artists", default=None,
                        help="comma-separated artist folder names (default: every folder with "
                             "at least --min-images paintings, in name order)")
    parser.add_argument("--min-images", type=int, default=min_images,
                        help="without --artists: skip artist folders with fewer paintings")
    parser.add_argument("--exclude", action="append", default=[], metavar="FILE",
                        help="leave out the images named in FILE (one file name per line; "
                             "repeatable), e.g. the photos a benchmark holds out")


def add_common_arguments(parser, *, size: int = 256, batch: int = 8, steps: int = 40000,
                         lr: float = 1e-4) -> None:
    """The flags every trainer shares."""
    parser.add_argument("--content", required=True, help="folder of content photos (recursive)")
    parser.add_argument("--styles", required=True, action="append",
                        help="folder of style images (recursive; repeatable)")
    parser.add_argument("--out", required=True, help="output weight file (.safetensors)")
    parser.add_argument("--size", type=int, default=size, help="random crop size in pixels")
    parser.add_argument("--load-size", type=int, default=None,
                        help="short side images are scaled to before cropping (default 2*size, "
                             "at most 512, at least size)")
    parser.add_argument("--batch", type=int, default=batch)
    parser.add_argument("--steps", type=int, default=steps)
    parser.add_argument("--lr", type=float, default=lr)
    add_run_arguments(parser, every=500)
    parser.add_argument("--data-cache", default=None,
                        help="file to keep the decoded, resized training images in (reused "
                             "when it exists and the folders and sizes match)")


def check_out_and_threads(args) -> None:
    """--out must be a .safetensors path in an existing folder; apply --threads."""
    if not str(args.out).endswith(".safetensors"):
        raise BrushworkError(f"--out {args.out}: use a .safetensors file name")
    out_dir = Path(args.out).parent
    if str(out_dir) and not out_dir.is_dir():
        raise BrushworkError(f"--out {args.out}: directory {out_dir} does not exist")
    if args.threads:
        torch.set_num_threads(args.threads)


def check_common_arguments(args) -> None:
    for name in ("size", "batch", "steps"):
        if getattr(args, name) < 1:
            raise BrushworkError(f"--{name} must be at least 1")
    if args.size < 16:
        raise BrushworkError("--size must be at least 16 pixels")
    if not args.lr > 0:
        raise BrushworkError("--lr must be positive")
    check_out_and_threads(args)


def start_run(args) -> tuple[torch.device, bool]:
    """The common start of a trainer's ``run``: checks the shared arguments, seeds torch with
    ``--seed``; returns (the ``--device``, whether bf16 autocast is on there)."""
    check_common_arguments(args)
    device = pick_device(args.device)
    bf16 = args.bf16 and has_bf16(device)
    torch.manual_seed(args.seed)
    return device, bf16


def checkpoint_path(args) -> Path:
    return Path(args.checkpoint) if args.checkpoint else Path(args.out).with_suffix(".ckpt")


def default_load_size(args) -> int:
    return args.load_size or max(args.size, min(512, 2 * args.size))


def load_style_folders(folders, load_size: int, exclude=frozenset()) -> list[torch.Tensor]:
    imgs = []
    for d in folders:
        imgs.extend(load_folder(d, load_size, exclude=exclude))
    return imgs


def read_exclude(files) -> set[str]:
    """The image file names listed in ``files`` (one per line, ``#`` comments), for ``--exclude``."""
    names = set()
    for f in files:
        try:
            text = Path(f).read_text()
        except OSError as e:
            raise BrushworkError(f"--exclude {f}: cannot read it ({e.strerror})") from None
        names |= {line.strip() for line in text.splitlines()
                  if line.strip() and not line.startswith("#")}
    return names


def load_training_data(args, exclude=frozenset()) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """(content images, style images) for a trainer's args, through ``--data-cache`` if set;
    files named in ``exclude`` are left out."""
    load = default_load_size(args)
    spec = {"content": str(Path(args.content).resolve()), "load": load,
            "styles": [str(Path(d).resolve()) for d in args.styles]}
    if exclude:
        spec["exclude"] = sorted(exclude)
    key = json.dumps(spec, sort_keys=True)
    cache = Path(args.data_cache) if getattr(args, "data_cache", None) else None
    if cache is not None and cache.is_file():
        try:
            blob = torch.load(cache, map_location="cpu", weights_only=True)
            if blob.get("key") == key:
                return list(blob["content"]), list(blob["styles"])
        except Exception:
            pass  # unreadable or foreign cache: rebuild it
    contents = load_folder(args.content, load, exclude=exclude)
    styles = load_style_folders(args.styles, load, exclude)
    if cache is not None:
        with atomic_write(cache) as f:
            torch.save({"key": key, "content": contents, "styles": styles}, f)
    return contents, styles
