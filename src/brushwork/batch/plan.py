"""Which files a batch stylises and where each result goes.

Inputs are files, folders (searched recursively; the folder structure is kept under the output
folder) and glob patterns. Each input gets a ``name`` (its path relative to the folder it was
found in, or its file name), which names its output and decides its shard.
"""
from __future__ import annotations

import glob
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from ..core import validate
from ..core.image import SAVE_FORMATS
from ..errors import ControlError, ImageError

# What folders and globs pick up (files named explicitly may have any image suffix).
SEARCH_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")
GLOB_CHARS = set("*?[")


@dataclass(frozen=True)
class Item:
    """One input file, its name within the batch and its output path."""
    input: Path
    name: str
    output: Path


def parse_shard(text: str) -> tuple[int, int]:
    """``K/N`` -> (K, N) with 1 <= K <= N."""
    try:
        k, n = (int(p) for p in str(text).split("/"))
    except ValueError:
        raise ControlError(f"--shard {text!r}: expected K/N, e.g. 1/4") from None
    if n < 1 or not 1 <= k <= n:
        raise ControlError(f"--shard {text}: K must be between 1 and N (N >= 1)")
    return k, n


def in_shard(name: str, shard: tuple[int, int] | None) -> bool:
    """Whether ``name`` falls in shard K of N: by a hash of the name, so a file's shard does not
    change when other files are added or removed."""
    if shard is None:
        return True
    k, n = shard
    return int(hashlib.sha256(name.encode()).hexdigest()[:16], 16) % n == k - 1


def expand(specs: list[str]) -> list[tuple[Path, str]]:
    """(path, name) for every input: files as given, folders and globs expanded (sorted).
    A folder or glob with no images, or a named file that does not exist, raises ImageError."""
    found: list[tuple[Path, str]] = []
    for spec in specs:
        p = Path(spec)
        if p.is_dir():
            files = sorted(f for f in p.rglob("*")
                           if f.is_file() and f.suffix.lower() in SEARCH_SUFFIXES
                           and not f.name.startswith("."))
            if not files:
                raise ImageError(f"{spec}: no images in this folder "
                                 f"({', '.join(SEARCH_SUFFIXES)}, searched recursively)")
            found += [(f, f.relative_to(p).as_posix()) for f in files]
        elif GLOB_CHARS & set(spec) and not p.exists():
            files = sorted(Path(f) for f in glob.glob(spec, recursive=True)
                           if Path(f).is_file() and Path(f).suffix.lower() in SEARCH_SUFFIXES)
            if not files:
                raise ImageError(f"{spec}: the pattern matches no images")
            found += [(f, f.name) for f in files]
        elif p.is_file():
            found.append((p, p.name))
        else:
            raise ImageError(f"{spec}: no such file or folder")
    return found


def output_suffix(fmt: str | None) -> str:
    suffix = "." + (fmt or "png").lower().lstrip(".")
    if suffix not in SAVE_FORMATS:
        raise ControlError(f"--format {fmt!r}: use one of "
                           f"{', '.join(s[1:] for s in sorted(SAVE_FORMATS))}")
    return suffix


def check_output_folder(out) -> Path:
    """The batch's output folder: an existing folder or a new one whose parent is writable; a
    path with an image suffix (a file) is refused."""
    out = Path(out)
    if out.suffix.lower() in SAVE_FORMATS or (out.exists() and not out.is_dir()):
        raise ControlError(f"-o {out}: with several inputs, -o must be a folder, not a file")
    if not out.exists():
        validate.check_output_parent(out, "output folder")
    elif not os.access(out, os.W_OK | os.X_OK):
        raise ControlError(f"-o {out}: the output folder is not writable")
    return out


def plan(specs: list[str], out_dir, *, fmt: str | None = None,
         shard: tuple[int, int] | None = None) -> list[Item]:
    """The items of a batch: inputs expanded, deduplicated, in the shard, each with its output
    path under ``out_dir``. Two inputs that would write the same output raise ControlError."""
    out_dir = Path(out_dir)
    suffix = output_suffix(fmt)
    items, seen_inputs, seen_outputs = [], set(), {}
    for path, name in expand(specs):
        key = path.resolve()
        if key in seen_inputs:
            continue
        seen_inputs.add(key)
        out = out_dir / Path(name).with_suffix(suffix)
        if out in seen_outputs:
            raise ControlError(f"{path} and {seen_outputs[out]} would both be written to {out}; "
                               f"rename one or give their folder instead")
        seen_outputs[out] = path
        if validate.same_file(path, out):
            raise ControlError(f"{path}: the output would overwrite this input; choose another "
                               f"output folder")
        if in_shard(name, shard):
            items.append(Item(path, name, out))
    return items
