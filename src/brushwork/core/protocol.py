"""The one protocol every stylisation method implements, its controls and progress events.

A method is a class with::

    name: str
    summary: str                          # one line for `brushwork methods`
    controls: dict[str, Control]          # the controls it supports, with defaults
    capabilities: Capabilities            # what it takes and how it behaves (declared, not guessed)
    def __init__(self, device="cpu", **options)   # options: only those in capabilities.options
    def stylize(self, content, styles, *, style_weights=None, controls=None,
                seed=None, callback=None) -> torch.Tensor

Label-driven methods (``capabilities.styles == "labels"``) also have ``labels() -> list[str]``
and ``render_all(content, controls) -> list[Tensor]`` (one result per built-in style).

``content`` is a (1, 3, H, W) float tensor in [0, 1], ``styles`` a list of such tensors (any
sizes), ``style_weights`` one weight per style (normalised to sum 1), ``controls`` a dict of
control values (unknown or unsupported names raise :class:`ControlError`), ``callback`` receives
:class:`Progress` events. The result has the content's height and width, values in [0, 1].

Methods are created from the explicit name -> factory table ``brushwork.methods.METHODS``.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Protocol, Sequence

import torch

from ..errors import ControlError


def _parse_bool(s):
    if isinstance(s, bool):
        return s
    v = str(s).strip().lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"not a boolean: {s!r}")


def _parse_str_list(s):
    if isinstance(s, (list, tuple)):
        return [str(x) for x in s]
    return [p.strip() for p in str(s).split(",") if p.strip()]


def _parse_float_list(s):
    if isinstance(s, (list, tuple)):
        return [float(x) for x in s]
    return [float(p) for p in str(s).split(",") if p.strip()]


PARSERS: dict[str, Callable[[Any], Any]] = {
    "float": float, "int": int, "str": str, "bool": _parse_bool,
    "str_list": _parse_str_list, "float_list": _parse_float_list,
    "images": lambda v: list(v) if isinstance(v, (list, tuple)) else [v],
}


@dataclass(frozen=True)
class Control:
    """One user-facing knob: name, kind (a key of PARSERS), default, choices, help, range."""
    name: str
    kind: str
    default: Any
    help: str
    choices: tuple | None = None
    low: float | None = None
    high: float | None = None

    def parse(self, value):
        if value is None:
            return None
        try:
            v = PARSERS[self.kind](value)
        except (TypeError, ValueError):
            raise ControlError(f"control {self.name}: cannot read {value!r} as {self.kind}") from None
        is_list = self.kind.endswith("_list") or self.kind == "images"
        if is_list and not v:
            raise ControlError(f"control {self.name}: needs at least one value, got {value!r}")
        if self.choices is not None and v not in self.choices:
            raise ControlError(f"control {self.name}: {v!r} is not one of "
                               f"{', '.join(map(str, self.choices))}")
        vals = v if is_list else [v]  # bounds apply to every element of a list
        for x in vals:
            if isinstance(x, (int, float)) and not isinstance(x, bool):
                if x != x or x in (float("inf"), float("-inf")):
                    raise ControlError(f"control {self.name}: {x} is not a finite number")
                if self.low is not None and x < self.low:
                    raise ControlError(f"control {self.name}: {x} is below the minimum {self.low}")
                if self.high is not None and x > self.high:
                    raise ControlError(f"control {self.name}: {x} is above the maximum {self.high}")
        return v


# Controls shared by several methods; methods import these so the same name means the same thing.
STRENGTH = Control("strength", "float", 1.0, "content-style trade-off: 0 = content, 1 = full style",
                   low=0.0, high=1.0)
PRESERVE_COLOR = Control("preserve_color", "str", "none",
                         "keep the content's colours: luminance = transfer on luminance only; "
                         "histogram = colour-match the styles to the content first",
                         choices=("none", "luminance", "histogram"))
MASKS = Control("masks", "images", None,
                "one mask image per style (white = apply that style there), content-sized")
STYLE_SCALE = Control("style_scale", "float", 1.0,
                      "stroke size: the style image's working size relative to the output",
                      low=0.05, high=8.0)
AUTO_REGIONS = Control("auto_regions", "int", None,
                       "find K corresponding regions of content and style automatically "
                       "(joint k-means of their relu4_1 VGG19 features) and style each content "
                       "region from its matching style region", low=2, high=16)


STYLE_KINDS = ("images", "builtin", "labels")


@dataclass(frozen=True)
class Capabilities:
    """What a method declares about itself; callers (CLI, API, video, evaluation) read this
    instead of guessing from attributes.

    * ``styles``: ``"images"`` (takes one or more style images), ``"builtin"`` (one style
      trained into its weights, e.g. johnson) or ``"labels"`` (several built-in styles chosen
      by a control, e.g. cin's ``style_id``, with ``labels()`` and ``render_all()``). Methods
      that are not ``"images"`` refuse style images.
    * ``options``: the constructor options besides ``device`` (``weights``, ``encoder``).
    * ``video_defaults``: the flow blend/resampling a video of this method starts from
      (``{"blend": 0.95, "resample": "lanczos"}``; empty: the video layer's defaults).
    * ``temporal_hooks``: it accepts ``init_image`` and ``temporal`` controls, so video uses the
      Ruder et al. scheme (warped previous result as start image plus a temporal loss).
    * ``iterative``: an optimisation (seconds to minutes) rather than one forward pass.
    """
    styles: str = "images"
    options: tuple[str, ...] = ("weights",)
    video_defaults: Mapping[str, Any] = field(default_factory=dict)
    temporal_hooks: bool = False
    iterative: bool = False

    def __post_init__(self):
        if self.styles not in STYLE_KINDS:
            raise ValueError(f"Capabilities.styles must be one of {STYLE_KINDS}, not {self.styles!r}")

    @property
    def takes_style_images(self) -> bool:
        return self.styles == "images"


@dataclass
class Progress:
    """A progress event sent to ``callback``. ``kind`` is 'step', 'scale' (a new scale begins)
    or 'done'. ``losses`` maps term names to floats (weighted terms plus 'total'). ``image``:
    on some events of iterative methods, the current image (a detached CPU copy, (1, 3, H, W)
    in [0, 1]) for live previews; None otherwise."""
    method: str
    kind: str
    step: int = 0
    total: int = 0
    scale: int = 0
    n_scales: int = 1
    size: tuple[int, int] = (0, 0)
    losses: dict[str, float] = field(default_factory=dict)
    elapsed: float = 0.0
    message: str = ""
    image: torch.Tensor | None = None


class Stylizer(Protocol):
    name: str
    summary: str
    controls: Mapping[str, Control]
    capabilities: Capabilities

    def stylize(self, content: torch.Tensor, styles: Sequence[torch.Tensor], *,
                style_weights: Sequence[float] | None = None,
                controls: Mapping[str, Any] | None = None,
                seed: int | None = None,
                callback: Callable[[Progress], None] | None = None) -> torch.Tensor: ...


def resolve_controls(method: str, supported: Mapping[str, Control],
                     given: Mapping[str, Any] | None) -> dict[str, Any]:
    """Defaults overlaid with ``given``; raises ControlError on a control the method lacks."""
    if given is not None and not isinstance(given, Mapping):
        raise ControlError(f"controls must be a mapping of names to values, got "
                           f"{type(given).__name__}")
    given = dict(given or {})
    unknown = [k for k in given if k not in supported]
    if unknown:
        have = ", ".join(sorted(supported)) or "none"
        raise ControlError(f"method {method!r} does not support control(s) "
                           f"{', '.join(sorted(unknown))} (it supports: {have})")
    out = {}
    for name, c in supported.items():
        v = given.get(name)
        out[name] = c.default if v is None else c.parse(v)
    return out


def normalize_style_weights(n_styles: int, weights: Sequence[float] | None) -> list[float]:
    if n_styles < 1:
        raise ControlError("at least one style image is required")
    if weights is None:
        return [1.0 / n_styles] * n_styles
    if isinstance(weights, (str, bytes)) or not hasattr(weights, "__len__"):
        raise ControlError(f"style weights must be a list of numbers, got {weights!r}")
    try:
        weights = [float(w) for w in weights]
    except (TypeError, ValueError):
        raise ControlError(f"style weights must be numbers, got {list(weights)!r}") from None
    if len(weights) != n_styles:
        raise ControlError(f"{len(weights)} style weight(s) given for {n_styles} style image(s)")
    if any(w != w or w < 0 or w == float("inf") for w in weights):
        raise ControlError("style weights must be finite and non-negative")
    s = sum(weights)
    if s <= 0:
        raise ControlError("style weights must not all be zero")
    return [w / s for w in weights]


def begin(method, styles, style_weights, controls) -> tuple[dict[str, Any], list[float]]:
    """The common start of every ``stylize``: refuses style images a method does not take (and a
    missing one it needs), resolves the controls strictly; returns (controls, normalised style
    weights; empty for methods without style images)."""
    caps = method.capabilities
    styles = list(styles or [])
    if caps.takes_style_images:
        weights = normalize_style_weights(len(styles), style_weights)
    else:
        if styles:
            raise ControlError(f"method {method.name!r} takes no style images (its styles are "
                               f"built in); remove -s/--style")
        if style_weights is not None:
            raise ControlError(f"method {method.name!r} takes no style weights")
        weights = []
    return resolve_controls(method.name, method.controls, controls), weights


class Clock:
    """Elapsed wall time since creation; helper for progress events and time budgets."""

    def __init__(self):
        self.t0 = time.perf_counter()

    def __call__(self) -> float:
        return time.perf_counter() - self.t0


def emit(callback, event: Progress) -> None:
    if callback is not None:
        callback(event)
