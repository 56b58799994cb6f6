"""Weights we ship (``src/brushwork/weights``) and user weight files: safetensors only, no pickle.

Reading/writing is training.load_weights/save_weights; ``MANIFEST.json`` maps each shipped file to its sha256 and provenance (data, steps, crop, time,
hardware); :func:`load_weights` verifies the hash of a shipped file before reading it.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from . import training
from .errors import BrushworkError

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
MANIFEST = WEIGHTS_DIR / "MANIFEST.json"


def read_manifest() -> dict:
    if not MANIFEST.exists():
        return {}
    try:
        data = json.loads(MANIFEST.read_text())
    except ValueError as e:
        raise BrushworkError(f"{MANIFEST}: not valid JSON ({e})") from None
    rows = data.get("weights", data) if isinstance(data, dict) else data
    if isinstance(rows, dict):
        return rows
    return {row["file"]: row for row in rows}


def shipped_path(filename: str) -> Path | None:
    """The path of a shipped weight file, or None if this install has none of that name."""
    path = WEIGHTS_DIR / filename
    return path if path.exists() else None


def resolve_weights(weights, default_file: str, train_hint: str) -> Path:
    """``weights=PATH`` if given (a path, or the bare name of another shipped file), else the
    shipped default file; a clear error naming the trainer if none."""
    if weights is not None:
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


def load_weights(path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read a safetensors file -> (float32 tensors, metadata); shipped files are sha256-checked
    against MANIFEST.json."""
    from safetensors import safe_open

    path = Path(path)
    row = read_manifest().get(path.name) if path.resolve().parent == WEIGHTS_DIR else None
    state = training.load_weights(path, sha256=(row or {}).get("sha256"))
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
    except Exception as e:  # safetensors raises its own error types
        raise BrushworkError(f"{path}: cannot read safetensors metadata ({e})") from None
    return state, meta


def save_weights(state, path, meta=None, half=False) -> str:
    """training.save_weights with string metadata; returns the sha256."""
    return training.save_weights(state, path, fp16=half, metadata=meta)


def meta_json(meta: dict[str, str], key: str, what: str):
    try:
        return json.loads(meta[key])
    except (KeyError, ValueError):
        raise BrushworkError(f"weight file lacks valid '{key}' metadata (is it a {what} file?)") \
            from None
