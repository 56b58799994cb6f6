"""Recipes: everything needed to reproduce one stylisation, as a small JSON document.

A recipe records the method, its constructor options, the controls, the seed, the output size,
the style weights, the sha256 of each weight file the method read and of each input image.
``brushwork stylize CONTENT -s STYLE --recipe FILE`` reads one back (flags given on the command
line override it); the batch manifest and the studio write one per result.

    {"brushwork_recipe": 1, "method": "adain", "options": {"encoder": "small"},
     "controls": {"strength": 0.8}, "seed": 0, "size": 512, "style_weights": null,
     "weights": {"adain_small.safetensors": "3f2a..."},
     "content_sha256": "...", "style_sha256": ["..."]}
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import BrushworkError
from .weights import sha256_file

VERSION = 1
KEYS = ("method", "options", "controls", "seed", "size", "style_weights", "weights",
        "content_sha256", "style_sha256")


def weight_files(stylizer) -> list[Path]:
    """The weight files a method instance read (its ``weight_files`` attribute: its own file and
    the VGG19 file where it uses VGG19)."""
    return [Path(p) for p in getattr(stylizer, "weight_files", ()) if p is not None]


def weights_sha256(stylizer) -> dict[str, str]:
    """{file name: sha256} of the weight files a method instance read."""
    return {p.name: sha256_file(p) for p in weight_files(stylizer)}


def _jsonable(value):
    """A control value as JSON: paths and plain values pass; tensors and images (API-only
    values) cannot be recorded and are refused."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    raise BrushworkError(f"a recipe cannot record a control value of type {type(value).__name__}")


def make_recipe(method: str, *, options: dict | None = None, controls: dict | None = None,
                seed: int | None = 0, size: int | None = None, style_weights=None,
                weights: dict[str, str] | None = None, content_sha256: str | None = None,
                style_sha256: list[str] | None = None) -> dict[str, Any]:
    """A recipe dict (see the module docstring); ``controls`` are the values the user set."""
    return {"brushwork_recipe": VERSION, "method": method,
            "options": {k: _jsonable(v) for k, v in (options or {}).items()},
            "controls": {k: _jsonable(v) for k, v in (controls or {}).items() if v is not None},
            "seed": seed, "size": size,
            "style_weights": None if style_weights is None else [float(w) for w in style_weights],
            "weights": dict(weights or {}), "content_sha256": content_sha256,
            "style_sha256": list(style_sha256 or [])}


def check_recipe(data, source: str = "recipe") -> dict[str, Any]:
    """``data`` checked as a recipe: a dict with a known version, a method name and well-typed
    fields; raises BrushworkError naming ``source`` otherwise."""
    if not isinstance(data, dict) or data.get("brushwork_recipe") != VERSION:
        raise BrushworkError(f"{source}: not a brushwork recipe (version {VERSION})")
    if not isinstance(data.get("method"), str) or not data["method"]:
        raise BrushworkError(f"{source}: the recipe names no method")
    for key, kind in (("options", dict), ("controls", dict), ("weights", dict)):
        if not isinstance(data.get(key, {}), kind):
            raise BrushworkError(f"{source}: {key!r} must be an object")
    for key in ("seed", "size"):
        v = data.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int)):
            raise BrushworkError(f"{source}: {key!r} must be an integer or null")
    sw = data.get("style_weights")
    if sw is not None and not (isinstance(sw, list)
                               and all(isinstance(w, (int, float)) for w in sw)):
        raise BrushworkError(f"{source}: 'style_weights' must be a list of numbers or null")
    unknown = sorted(set(data) - set(KEYS) - {"brushwork_recipe"})
    if unknown:
        raise BrushworkError(f"{source}: unknown recipe field(s) {', '.join(unknown)}")
    return data


def read_recipe(path) -> dict[str, Any]:
    """The recipe in the JSON file ``path``, checked."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BrushworkError(f"{path}: recipe file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise BrushworkError(f"{path}: cannot read the recipe ({e})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise BrushworkError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
    return check_recipe(data, str(path))


def dumps(recipe: dict) -> str:
    return json.dumps(recipe, sort_keys=True)
