"""Weight files: safetensors only (no pickle), sha256-checked when shipped, written atomically.

Shipped files live in ``src/brushwork/weights``; ``MANIFEST.json`` there maps each to its sha256
and provenance (data, recipe, steps, crop, time, hardware). A file's sha256 is computed once per
process and file version (path, size, modification time) and the manifest read once per version,
so a process that loads a model several times hashes it once. A model's tensors are stored flat
under ``<part>.<param>`` names (:func:`prefixed_state`, :func:`load_prefixed`), with string
metadata describing the architecture (``method``, ``level``, ``width``, ...).
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch

from ..errors import BrushworkError
from .files import atomic_write

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
MANIFEST = WEIGHTS_DIR / "MANIFEST.json"


def _version(path) -> tuple[str, int, int] | None:
    """(absolute path, size, mtime in ns) of a file, or None if it cannot be read."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return os.path.abspath(path), st.st_size, st.st_mtime_ns


_manifest_cache: dict[tuple, dict] = {}


def read_manifest() -> dict:
    """file name -> manifest row of every shipped weight file."""
    key = _version(MANIFEST)
    if key is None:
        return {}
    if key not in _manifest_cache:
        try:
            data = json.loads(MANIFEST.read_text())
        except ValueError as e:
            raise BrushworkError(f"{MANIFEST}: not valid JSON ({e})") from None
        rows = data.get("weights", data) if isinstance(data, dict) else data
        if not isinstance(rows, dict):
            rows = {row["file"]: row for row in rows}
        _manifest_cache.clear()
        _manifest_cache[key] = rows
    return dict(_manifest_cache[key])


def shipped_path(filename: str) -> Path | None:
    """The path of a shipped weight file, or None if this install has none of that name."""
    path = WEIGHTS_DIR / filename
    return path if path.exists() else None


def resolve_weights(weights, default_file: str, train_hint: str) -> Path:
    """``weights=PATH`` if given (a path, or the bare name of another shipped file), else the
    shipped default file; a clear error naming the trainer if none."""
    if weights is not None:
        if not isinstance(weights, (str, Path)):
            raise BrushworkError(f"weights must be a file path, got {type(weights).__name__}")
        path = Path(weights)
        if not path.is_file() and path.name == str(weights):
            path = shipped_path(path.name) or path
        if not path.is_file():
            raise BrushworkError(f"{weights}: weight file not found")
        return path
    path = shipped_path(default_file)
    if path is None:
        raise BrushworkError(f"no shipped weights {default_file}; train them with `{train_hint}` "
                             f"and pass weights=PATH (CLI: --weights PATH)")
    return path


_sha256_cache: dict[tuple, str] = {}


def sha256_file(path) -> str:
    """The file's sha256 (hex), computed once per (path, size, modification time)."""
    key = _version(path)
    if key is not None and key in _sha256_cache:
        return _sha256_cache[key]
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    digest = h.hexdigest()
    if key is not None and key == _version(path):  # unchanged while it was read
        _sha256_cache[key] = digest
    return digest


def save_weights(tensors: dict[str, torch.Tensor], path, *, fp16: bool = False,
                 metadata: dict[str, str] | None = None) -> str:
    """Save a flat dict of tensors as safetensors (floats optionally as fp16), atomically;
    returns the file's sha256."""
    from safetensors.torch import save

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    out = {}
    for k, t in tensors.items():
        t = t.detach().cpu().contiguous()
        out[k] = t.half() if fp16 and t.is_floating_point() else t
    blob = save(out, metadata={k: str(v) for k, v in (metadata or {}).items()})
    with atomic_write(path) as f:
        f.write(blob)
    return hashlib.sha256(blob).hexdigest()


def load_weights(path, *, sha256: str | None = None
                 ) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read a safetensors file -> (float32 tensors, metadata). The file is checked against
    ``sha256`` first, or, for a shipped file, against its sha256 in MANIFEST.json."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise BrushworkError(f"{path}: weight file not found")
    row = read_manifest().get(path.name) if path.resolve().parent == WEIGHTS_DIR else None
    expected = sha256 or (row or {}).get("sha256")
    if expected is not None:
        got = sha256_file(path)
        if got != expected:
            raise BrushworkError(f"{path}: sha256 mismatch (expected {expected[:12]}..., got "
                                 f"{got[:12]}...); the file is corrupt or not the shipped one")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
            raw = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises its own error types
        raise BrushworkError(f"{path}: not a readable safetensors file ({e.__class__.__name__})") \
            from None
    return {k: (v.float() if v.is_floating_point() else v) for k, v in raw.items()}, meta


def meta_json(meta: dict[str, str], key: str, what: str):
    try:
        return json.loads(meta[key])
    except (KeyError, ValueError):
        raise BrushworkError(f"weight file lacks valid '{key}' metadata (is it a {what} file?)") \
            from None


def prefixed_state(prefix: str, module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {f"{prefix}.{k}": v for k, v in module.state_dict().items()}


def load_prefixed(module: torch.nn.Module, prefix: str, tensors: dict[str, torch.Tensor],
                  source="weights") -> None:
    """Load ``prefix.*`` entries of ``tensors`` into ``module``; raise BrushworkError on mismatch."""
    sub = {k[len(prefix) + 1:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}
    if not sub:
        raise BrushworkError(f"{source}: no '{prefix}' tensors (wrong weight file for this method?)")
    try:
        module.load_state_dict(sub)
    except RuntimeError:
        raise BrushworkError(f"{source}: '{prefix}' tensors do not match this network "
                             f"(different width or level?)") from None


def load_artist_weights(path, method: str, hint: str = "") -> tuple[dict, dict, list[str], dict]:
    """A per-artist weight file of ``method`` (one model per artist, tensors prefixed by the
    artist's name; metadata ``artists`` and ``config`` as JSON) -> (tensors, metadata,
    artists, config); a BrushworkError for another method's file or missing metadata."""
    state, meta = load_weights(path)
    make = f"; make one with `{hint}`" if hint else ""
    if meta.get("method") != method:
        raise BrushworkError(f"{path}: not a {method} weight file (method "
                             f"{meta.get('method', 'unknown')!r}){make}")
    try:
        artists, cfg = json.loads(meta["artists"]), json.loads(meta["config"])
        if not artists or not all(isinstance(a, str) for a in artists) \
                or not isinstance(cfg, dict):
            raise ValueError
    except (KeyError, ValueError, TypeError):
        raise BrushworkError(f"{path}: not a {method} weight file (no valid artists/config "
                             f"metadata)") from None
    return state, meta, artists, cfg
