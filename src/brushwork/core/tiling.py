"""Large images in pieces: tile windows with overlap, feathered blend weights, a memory planner,
memory sizes, frozen statistics and a seam measure.

* :func:`tile_grid` covers an image with equal-sized windows (starts aligned to the networks'
  stride) that overlap; each window carries separable 1-D blend weights: 0 in a ``margin``
  along its inner edges (the pixels its convolutions' padding disturbs), a raised-cosine ramp
  over a ``feather`` band centred in each overlap, 1 elsewhere. The weights of all windows sum
  to exactly 1 at every pixel, so ``sum(weight * tile)`` is the blended image and no weight
  buffer is needed.
* :func:`plan_tiles` picks the largest tile side whose working memory fits ``max_memory`` next
  to the image buffers; :class:`~brushwork.errors.ResourceError` when even the smallest does not.
* :func:`parse_memory` reads "4G", "512M", "1.5GiB" or a byte count; :func:`default_max_memory`
  is the process's resident memory plus a share of the memory still available (``MemAvailable``,
  bounded by a cgroup limit); on a CUDA device, the allocator's reserve plus a share of the
  device's free memory.
* :func:`frozen_norms` runs a network once on a thumbnail recording every instance norm's
  channel mean/std and then normalises every tile with those (thumbnail instance normalisation,
  Chen et al. 2022); :func:`fit_frozen_map` expresses a feature transform applied to a
  thumbnail's features as the per-position map it applied (affine across channels, or monotone
  per channel), for the arbitrary-style transforms.
* :func:`seam_ratio`: gradient energy across the tile borders against the rest of the image.
"""
from __future__ import annotations

import math
import numbers
import os
import re
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ControlError, ResourceError
from . import stats as S

THUMB_SIDE = 1024       # long side of the thumbnail frozen statistics come from
MIN_TILE = 32           # smallest tile side a caller may ask for (pixels)
PLANNER_MIN_TILE = 256  # the planner's smallest tile (below it the overlap dominates)
PLANNER_MAX_TILE = 2048
DEFAULT_SHARE = 0.6     # default max_memory: this share of the available memory (+ own RSS)

GiB = 1024 ** 3


# ------------------------------------------------------------------------------ memory sizes
_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024 ** 2, "g": 1024 ** 3, "t": 1024 ** 4}


def parse_memory(value) -> int:
    """A memory size in bytes: an integer, or a string such as "4G", "512M", "1.5GiB", "800MB",
    "2048" (units K, M, G, T are powers of 1024 with or without "iB"/"B"). Positive."""
    if isinstance(value, bool):
        raise ControlError(f"max_memory must be a size such as 4G or 512M, got {value!r}")
    if isinstance(value, numbers.Real) and not isinstance(value, str):
        if not math.isfinite(value):
            raise ControlError(f"max_memory must be a finite size, got {value!r}")
        n = int(value)
    elif isinstance(value, str):
        m = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([kmgt]?)(?:i?b)?\s*", value.lower())
        if m is None:
            raise ControlError(f"max_memory: cannot read {value!r} as a size (e.g. 4G, 512M, "
                               f"1.5GiB or a number of bytes)")
        n = int(float(m.group(1)) * _UNITS[m.group(2)])
    else:
        raise ControlError(f"max_memory must be a size such as 4G or 512M, got {value!r}")
    if n < 1:
        raise ControlError(f"max_memory must be positive, got {value!r}")
    return n


def format_bytes(n: float) -> str:
    """1536 -> '1.5 KiB', 4.2e9 -> '3.9 GiB'."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"  # pragma: no cover


def _read_int(path: str) -> int | None:
    try:
        with open(path) as f:
            text = f.read().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def available_memory() -> int | None:
    """Bytes this process may still allocate: ``MemAvailable`` of /proc/meminfo (else the
    free pages of ``os.sysconf``), bounded by the cgroup's limit minus its usage; None when
    unknown."""
    avail = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
                    break
    except (OSError, ValueError, IndexError):
        avail = None
    if avail is None:
        try:
            avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            avail = None
    for limit, usage in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                         ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                          "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        lim, use = _read_int(limit), _read_int(usage)
        if lim is not None and use is not None and lim < 1 << 60:
            left = max(0, lim - use)
            avail = left if avail is None else min(avail, left)
            break
    return avail


def process_rss() -> int:
    """This process's resident memory in bytes (0 where /proc is not available)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError, AttributeError):
        return 0


def accelerator_memory(device) -> tuple[int, int] | None:
    """(bytes this process's allocator holds on a CUDA ``device``, bytes still free on it);
    None for any other device (its tensors live in host memory)."""
    dev = torch.device(device)
    if dev.type != "cuda":
        return None
    free, _ = torch.cuda.mem_get_info(dev)
    return torch.cuda.memory_reserved(dev), free


def held_memory(device="cpu") -> int:
    """Bytes the process holds where ``device``'s tensors live: the CUDA allocator's reserve on
    a CUDA device, the resident host memory otherwise."""
    acc = accelerator_memory(device)
    return process_rss() if acc is None else acc[0]


def default_max_memory(share: float = DEFAULT_SHARE, device="cpu") -> int:
    """The memory budget when none is given: what the process holds now plus ``share`` of the
    memory still available, on the device whose memory the tensors use (host memory: 8 GiB in
    all where that is unknown)."""
    acc = accelerator_memory(device)
    if acc is not None:
        return acc[0] + int(share * acc[1])
    avail = available_memory()
    if avail is None:
        return 8 * GiB
    return process_rss() + int(share * avail)


def budget(max_memory: int | None, device="cpu") -> tuple[int, int]:
    """(max_memory or the default, the bytes still free under it: max_memory minus what the
    process holds now), in the memory of ``device`` (host memory unless it is a CUDA device)."""
    total = default_max_memory(device=device) if max_memory is None else int(max_memory)
    return total, total - held_memory(device)


# ---------------------------------------------------------------------------------- planner
def _round_up(n: int, m: int) -> int:
    return -(-n // m) * m


def overlap_for(tile: int, margin: int, feather: int) -> tuple[int, int]:
    """(margin, feather) for a tile side: the given ones, scaled down for small tiles so the
    overlap 2 * margin + feather is at most a third of the tile."""
    if 3 * (2 * margin + feather) <= tile:
        return margin, feather
    feather = max(2, tile // 6)
    return max(0, tile // 12), feather


def plan_tiles(h: int, w: int, bytes_per_pixel: float, max_memory: int, *, fixed: int = 0,
               align: int = 1,
               min_tile: int = PLANNER_MIN_TILE, max_tile: int = PLANNER_MAX_TILE,
               what: str | None = None) -> int:
    """The largest tile side (a multiple of ``align`` in ``min_tile..max_tile``) whose working
    memory, ``bytes_per_pixel`` x its window's area, fits in ``max_memory`` minus ``fixed``
    (the bytes already committed: the image buffers). Raises ResourceError when even
    ``min_tile`` does not fit."""
    room = max_memory - fixed

    def cost(t):
        return bytes_per_pixel * min(t, h) * min(t, w)

    lo = _round_up(max(min_tile, MIN_TILE), align)
    hi = max(lo, max_tile // align * align)
    if cost(lo) > room:
        raise ResourceError(f"max memory {format_bytes(max_memory)} is too small for "
                            f"{what or f'a {w}x{h} image'}: what it holds, the image buffers "
                            f"and the smallest tile ({lo} px) need "
                            f"{format_bytes(fixed + cost(lo))}")
    while lo < hi:  # largest t in [lo, hi] (multiples of align) with cost(t) <= room
        mid = _round_up((lo + hi + 1) // 2, align)
        if mid > hi:
            mid = hi
        if cost(mid) <= room:
            if mid == lo:
                break
            lo = mid
        else:
            hi = mid - align
    return lo


def plan(hw: tuple[int, int], tile, max_memory: int | None, per_pixel: float, *,
         whole_bytes: float, what: str, align: int = 1, margin: int = 0, feather: int = 0,
         buffers: int = 0, thumb_side: int | None = THUMB_SIDE, padded=None, device="cpu"):
    """A method's tiling decision for an ``hw`` image: None (one piece) or (tile side, margin,
    feather).

    ``tile`` None: one piece when ``whole_bytes`` (the whole-image estimate) fits what is
    left under ``max_memory`` (None: :func:`default_max_memory`), else as "auto"; "auto": the
    :func:`plan_tiles` side; an int: that side rounded up to ``align``. ``per_pixel``: working
    bytes per tile pixel; ``buffers``: the full-resolution buffers the tiled run allocates;
    ``thumb_side``: the thumbnail statistics are taken from (its working memory must fit too);
    ``padded``: the (h, w) the windows cover (default ``hw``); ``device``: whose memory the
    budget is (:func:`budget`). ResourceError when no tile fits; ``what`` names the work in
    its message."""
    h, w = hw
    hv, wv = padded or hw
    total, free = budget(max_memory, device)
    if tile is None:
        if whole_bytes <= free:
            return None
        tile = "auto"
    fixed = (total - free) + buffers  # held now (input, networks) + the tiled run's buffers
    thumb = 0.0
    if thumb_side is not None:
        s = min(1.0, thumb_side / max(h, w))
        thumb = per_pixel * (h * s + (hv - h)) * (w * s + (wv - w))
    if tile == "auto":
        side = plan_tiles(hv, wv, per_pixel, total, fixed=fixed, align=align,
                          min_tile=max(PLANNER_MIN_TILE, 4 * align), what=what)
    else:
        side = max(2 * align, _round_up(int(tile), align))
    need = fixed + max(thumb, per_pixel * min(side, hv) * min(side, wv))
    if need > total:
        raise ResourceError(f"max memory {format_bytes(total)} is too small for {what}: "
                            f"what it holds, the image buffers and a {side} px tile need "
                            f"{format_bytes(need)}")
    m, f = overlap_for(side, margin, feather)
    return side, m, f


# ------------------------------------------------------------------------- windows, weights
def spans(n: int, tile: int, overlap: int, align: int = 1) -> list[tuple[int, int]]:
    """Windows (start, end) of length ``min(tile, n)`` covering 0..n, consecutive ones
    overlapping by at least ``overlap``, spread evenly; starts are multiples of ``align``
    (the last ends at n; ``n`` and ``tile`` should be multiples of ``align`` for that one to
    be aligned too)."""
    if n <= tile:
        return [(0, n)]
    if overlap >= tile:
        raise ControlError(f"tile overlap {overlap} must be smaller than the tile {tile}")
    k = max(2, math.ceil((n - overlap) / (tile - overlap)))
    while True:
        starts = [int(round(i * (n - tile) / (k - 1))) // align * align for i in range(k - 1)]
        starts.append(n - tile)
        if all(b - a > 0 and a + tile - b >= overlap for a, b in zip(starts, starts[1:])):
            return [(s, s + tile) for s in starts]
        k += 1


def blend_weights(windows: list[tuple[int, int]], n: int, margin: int,
                  feather: int) -> list[torch.Tensor]:
    """1-D float32 weights, one per window, summing to 1 at every position of 0..n: for each
    pair of neighbours a raised-cosine ramp sin^2(pi t / 2) over a ``feather``-wide band
    centred in their overlap (narrower where the overlap leaves less than ``margin`` on each
    side), 1 before it for the first window, 1 after it for the second."""
    ws = [torch.ones(e - s, dtype=torch.float64) for s, e in windows]
    for i in range(len(windows) - 1):
        a, b = windows[i + 1][0], windows[i][1]  # the overlap [a, b)
        ov = b - a
        f = max(1, min(feather, ov - 2 * margin)) if ov > 2 * margin else max(1, ov)
        u = a + (ov - f) // 2
        p = torch.arange(u, u + f, dtype=torch.float64)
        up = torch.sin(math.pi / 2 * (p + 0.5 - u) / f) ** 2
        s0, s1 = windows[i][0], windows[i + 1][0]
        ws[i][u - s0:u - s0 + f] *= 1 - up
        ws[i][u + f - s0:] = 0
        ws[i + 1][u - s1:u - s1 + f] *= up
        ws[i + 1][:u - s1] = 0
    total = torch.zeros(n, dtype=torch.float64)
    for (s, e), wt in zip(windows, ws):
        total[s:e] += wt
    if bool((total <= 0).any()):
        raise ControlError("tile overlap too large for the tile size")  # excluded by spans()
    return [(wt / total[s:e]).float() for (s, e), wt in zip(windows, ws)]


@dataclass(frozen=True)
class Tile:
    """One window ``[y0:y1, x0:x1]`` and its separable blend weights ``wy`` (y1 - y0) and
    ``wx`` (x1 - x0)."""
    y0: int
    y1: int
    x0: int
    x1: int
    wy: torch.Tensor
    wx: torch.Tensor

    def weight(self) -> torch.Tensor:
        """The (1, 1, h, w) weight map."""
        return (self.wy[:, None] * self.wx[None, :])[None, None]


@dataclass(frozen=True)
class TileGrid:
    """The windows covering an ``h`` x ``w`` image, and the band centres (y, x) where
    neighbouring windows hand over (the tile borders a hard tiling would have)."""
    h: int
    w: int
    tile: int
    margin: int
    feather: int
    tiles: tuple[Tile, ...]
    borders_y: tuple[float, ...]
    borders_x: tuple[float, ...]

    def __len__(self):
        return len(self.tiles)

    def __iter__(self) -> Iterator[Tile]:
        return iter(self.tiles)


def _band_centres(windows, margin, feather) -> tuple[float, ...]:
    out = []
    for (s0, e0), (s1, e1) in zip(windows, windows[1:]):
        ov = e0 - s1
        f = max(1, min(feather, ov - 2 * margin)) if ov > 2 * margin else max(1, ov)
        out.append(s1 + (ov - f) // 2 + f / 2)
    return tuple(out)


def tile_grid(h: int, w: int, tile: int, *, margin: int, feather: int,
              align: int = 1) -> TileGrid:
    """Windows of side ``tile`` (a multiple of ``align``) over an ``h`` x ``w`` image (multiples
    of ``align`` too, for aligned windows), overlapping by ``2 * margin + feather``, with
    their blend weights (:func:`blend_weights`)."""
    overlap = 2 * margin + feather
    ys, xs = spans(h, tile, overlap, align), spans(w, tile, overlap, align)
    wys, wxs = blend_weights(ys, h, margin, feather), blend_weights(xs, w, margin, feather)
    tiles = tuple(Tile(y0, y1, x0, x1, wy, wx) for (y0, y1), wy in zip(ys, wys)
                  for (x0, x1), wx in zip(xs, wxs))
    return TileGrid(h, w, tile, margin, feather, tiles, _band_centres(ys, margin, feather),
                    _band_centres(xs, margin, feather))


def reflect_index(start: int, end: int, n: int, offset: int = 0) -> torch.Tensor:
    """Indices into 0..n of positions ``start..end`` of the image reflected about its edges
    (no edge repeat) and shifted by ``offset`` (virtual position p reads p - offset)."""
    v = torch.arange(start - offset, end - offset)
    if n == 1:
        return torch.zeros_like(v)
    period = 2 * (n - 1)
    v = v.remainder(period)
    return torch.where(v >= n, period - v, v)


def read_window(x: torch.Tensor, y0: int, y1: int, x0: int, x1: int, oy: int = 0,
                ox: int = 0) -> torch.Tensor:
    """``x[..., y0:y1, x0:x1]`` of ``x`` extended by reflection and shifted by (oy, ox) (the
    image starts at virtual position (oy, ox)); a copy the size of the window."""
    h, w = x.shape[-2:]
    if y0 - oy >= 0 and y1 - oy <= h and x0 - ox >= 0 and x1 - ox <= w:
        return x[..., y0 - oy:y1 - oy, x0 - ox:x1 - ox].contiguous()
    iy = reflect_index(y0, y1, h, oy).to(x.device)
    ix = reflect_index(x0, x1, w, ox).to(x.device)
    ry, rx = int(iy.min()), int(ix.min())
    part = x[..., ry:int(iy.max()) + 1, rx:int(ix.max()) + 1]
    return part.index_select(-2, iy - ry).index_select(-1, ix - rx)


def add_tile(out: torch.Tensor, tile_out: torch.Tensor, t: Tile, oy: int = 0,
             ox: int = 0) -> None:
    """``out += weight * tile_out`` over the part of window ``t`` (virtual coordinates, the
    image at (oy, ox)) that lies inside ``out``."""
    h, w = out.shape[-2:]
    ya, yb = max(t.y0, oy), min(t.y1, oy + h)
    xa, xb = max(t.x0, ox), min(t.x1, ox + w)
    if ya >= yb or xa >= xb:
        return
    wy = t.wy[ya - t.y0:yb - t.y0].to(tile_out)
    wx = t.wx[xa - t.x0:xb - t.x0].to(tile_out)
    part = tile_out[..., ya - t.y0:yb - t.y0, xa - t.x0:xb - t.x0]
    out[..., ya - oy:yb - oy, xa - ox:xb - ox].add_(part * wy[:, None] * wx[None, :])


def in_strips(x: torch.Tensor, fn: Callable[[torch.Tensor, int, int], torch.Tensor],
              rows: int = 256) -> torch.Tensor:
    """``x`` with ``fn(x[..., y0:y1, :], y0, y1)`` written back strip by strip (bounded
    temporaries for pixel-wise finishing on huge images); in place, returns ``x``."""
    h = x.shape[-2]
    for y0 in range(0, h, rows):
        y1 = min(h, y0 + rows)
        x[..., y0:y1, :] = fn(x[..., y0:y1, :], y0, y1)
    return x


def thumbnail(x: torch.Tensor, side: int = THUMB_SIDE) -> torch.Tensor:
    """``x`` with its long side at most ``side`` (area-averaged; unchanged when smaller)."""
    h, w = x.shape[-2:]
    if max(h, w) <= side:
        return x
    s = side / max(h, w)
    size = (max(1, round(h * s)), max(1, round(w * s)))
    return F.interpolate(x, size=size, mode="area")


def stylize_in_tiles(fn: Callable[[torch.Tensor, "Tile | None"], torch.Tensor], x: torch.Tensor,
                     grid: TileGrid, frozen: "FrozenNorms | None" = None, *,
                     out: torch.Tensor | None = None, weight=None,
                     on_tile: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """``sum over tiles of blend weight x fn(window of x, tile)`` (the windows of ``grid``,
    read with reflection past the edges): an image network run piece by piece. With
    ``frozen``, ``fn(thumbnail, None)`` first runs once on a thumbnail of ``x`` (recording its
    instance-norm statistics) and every tile is normalised with those. ``out``: accumulate into this
    (1, C, H, W) buffer (default: a new one of x's size, 3 channels); ``weight(t)``: an extra
    per-pixel weight of each tile's result (masks); ``on_tile(done, total)`` after each tile."""
    h, w = x.shape[-2:]
    if frozen is not None:
        th = thumbnail(x)
        with frozen.recording():
            fn(th, None)
    if out is None:
        out = torch.zeros(1, 3, h, w, device=x.device)
    ctx = frozen.applying() if frozen is not None else _null()
    with ctx:
        for k, t in enumerate(grid):
            y = fn(read_window(x, t.y0, t.y1, t.x0, t.x1), t)
            if weight is not None:
                y = y * weight(t)
            add_tile(out, y, t)
            if on_tile is not None:
                on_tile(k + 1, len(grid))
    return out


@contextmanager
def _null():
    yield None


# --------------------------------------------------------------------- memory of a network
def probe_peak_bytes(modules: Iterable[nn.Module], run: Callable[[torch.Tensor], object],
                     shape: tuple[int, ...], device="cpu") -> int:
    """Bytes of the largest single layer call (its inputs plus its output) while ``run``
    processes a random probe of ``shape``: a network's working memory at inference scales
    with this. ``modules``: the networks whose leaf modules are watched."""
    peak = [0]

    def hook(mod, args, out):
        n = sum(a.numel() * a.element_size() for a in args if torch.is_tensor(a))
        outs = out if isinstance(out, (tuple, list)) else (out,)
        n += sum(o.numel() * o.element_size() for o in outs if torch.is_tensor(o))
        peak[0] = max(peak[0], n)

    handles = [m.register_forward_hook(hook) for net in modules for m in net.modules()
               if not list(m.children())]
    try:
        with torch.inference_mode():
            probe = torch.rand(*shape, generator=torch.Generator().manual_seed(0))
            run(probe.to(device))  # a generator of its own: the global RNG stays untouched
    finally:
        for h in handles:
            h.remove()
    return peak[0]


# ------------------------------------------------------------------ thumbnail statistics
class _Stats:
    """Recorded (mean, std) per norm module; ``mode`` "record" or "apply"."""

    def __init__(self):
        self.values: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self.mode = "record"

    def norm(self, key, x: torch.Tensor, eps: float) -> torch.Tensor:
        """Instance normalisation of ``x`` (float32 math) with the recorded statistics (apply)
        or its own, recorded (record)."""
        xf = x.float()
        if self.mode == "record":
            mean, std = S.mean_std(xf, eps=eps, keepdim=True)
            self.values[key] = (mean, std)
        else:
            mean, std = self.values[key]
        return ((xf - mean) / std).to(x.dtype)


def _frozen_forward(mod: nn.Module, st: _Stats):
    from .blocks import ConditionalInstanceNorm2d

    key = id(mod)
    if isinstance(mod, ConditionalInstanceNorm2d):
        def forward(x, style):
            style = style.to(mod.gamma.dtype)
            g = (style @ mod.gamma)[:, :, None, None]
            b = (style @ mod.beta)[:, :, None, None]
            return st.norm(key, x, 1e-5) * g.to(x.dtype) + b.to(x.dtype)
        return forward

    def forward(x):  # nn.InstanceNorm2d (track_running_stats off)
        y = st.norm(key, x, mod.eps)
        if mod.affine:
            y = y * mod.weight.to(y.dtype)[None, :, None, None] + \
                mod.bias.to(y.dtype)[None, :, None, None]
        return y
    return forward


_LOCAL = threading.local()      # .table: id(module) -> this thread's forward override
_INSTALL_LOCK = threading.Lock()
_INSTALLED: dict[int, int] = {}  # id(module) -> threads using an override now


def _dispatcher(mod: nn.Module):
    cls_forward = type(mod).forward

    def forward(*args, **kwargs):
        table = getattr(_LOCAL, "table", None)
        override = table.get(id(mod)) if table else None
        if override is None:
            return cls_forward(mod, *args, **kwargs)
        return override(*args, **kwargs)
    return forward


@contextmanager
def thread_forward(overrides: dict):
    """Inside the block, ``module(...)`` runs ``overrides[module]`` instead of its forward --
    in this thread only: other threads sharing the module (the studio's workers share method
    instances) keep the module's own forward."""
    table = _LOCAL.__dict__.setdefault("table", {})
    with _INSTALL_LOCK:
        for m in overrides:
            if _INSTALLED.get(id(m), 0) == 0:
                m.forward = _dispatcher(m)  # an instance attribute shadows the class's
            _INSTALLED[id(m)] = _INSTALLED.get(id(m), 0) + 1
    saved = {id(m): table.get(id(m)) for m in overrides}
    table.update({id(m): f for m, f in overrides.items()})
    try:
        yield
    finally:
        for m in overrides:
            if saved[id(m)] is None:
                table.pop(id(m), None)
            else:
                table[id(m)] = saved[id(m)]
        with _INSTALL_LOCK:
            for m in overrides:
                _INSTALLED[id(m)] -= 1
                if _INSTALLED[id(m)] == 0:
                    del _INSTALLED[id(m)]
                    del m.forward


class FrozenNorms:
    """Thumbnail instance normalisation for a network (Chen et al. 2022): inside
    :meth:`recording`, every instance norm (``nn.InstanceNorm2d``,
    ``ConditionalInstanceNorm2d``) normalises with its input's own channel mean/std and records
    them; inside :meth:`applying` it normalises with the recorded ones (in this thread only:
    :func:`thread_forward`). ``extra`` holds anything else a caller freezes (e.g. asma's
    stroke-module gates); ``overrides`` more module forwards to swap in the same way."""

    def __init__(self, net: nn.Module, overrides: dict | None = None):
        from .blocks import ConditionalInstanceNorm2d
        self.net = net
        self.stats = _Stats()
        self.extra: dict = {}
        self.overrides = dict(overrides or {})
        self.modules = [m for m in net.modules()
                        if isinstance(m, (nn.InstanceNorm2d, ConditionalInstanceNorm2d))
                        and not getattr(m, "track_running_stats", False)]

    @property
    def mode(self) -> str:
        return self.stats.mode

    @contextmanager
    def _patched(self, mode: str):
        self.stats.mode = mode
        forwards = {m: _frozen_forward(m, self.stats) for m in self.modules}
        forwards.update({m: f(self) for m, f in self.overrides.items()})
        with thread_forward(forwards):
            yield self

    def recording(self):
        self.stats.values.clear()
        self.extra.clear()
        return self._patched("record")

    def applying(self):
        return self._patched("apply")


def norm_with(frozen: FrozenNorms | None, key, x: torch.Tensor, eps: float = 1e-5):
    """Instance normalisation of ``x`` inside a network's own forward: plain
    ``F.instance_norm`` without ``frozen``, else through its record/apply statistics."""
    if frozen is None:
        return F.instance_norm(x, eps=eps)
    return frozen.stats.norm(key, x, eps)


# ------------------------------------------------------------------------- frozen maps
AFFINE_TOL = 5e-3    # relative residual under which a thumbnail transform counts as affine
MONOTONE_TOL = 2e-2  # ... as a monotone per-channel map
KNOTS = 2048         # knots of a monotone per-channel map


@dataclass
class FrozenMap:
    """A per-position feature map fitted to a transform on a thumbnail: ``"affine"``
    (y = A x + b across channels) or ``"monotone"`` (each channel through piecewise-linear
    knots ``kx`` -> ``ky``)."""
    kind: str
    a: torch.Tensor | None = None
    b: torch.Tensor | None = None
    kx: torch.Tensor | None = None
    ky: torch.Tensor | None = None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """The map on (1, C, H, W) features (float32 out)."""
        n, c, h, w = x.shape
        f = x.reshape(c, h * w)
        if self.kind == "affine":  # float32: the map is fitted in float64, applied per tile
            out = torch.addmm(self.b.to(x.device, torch.float32), self.a.to(x.device, torch.float32),
                              f.float())
            return out.reshape(1, -1, h, w)
        out = torch.empty_like(f, dtype=torch.float32)
        for part, dst in zip(f.split(S.CHUNK, 1), out.split(S.CHUNK, 1)):
            dst.copy_(_interp(part.float().contiguous(), self.kx, self.ky))
        return out.reshape(1, c, h, w)


def _interp(v: torch.Tensor, kx: torch.Tensor, ky: torch.Tensor) -> torch.Tensor:
    """Per row: piecewise-linear interpolation of (C, N) values through sorted knots kx (C, K)
    -> ky (C, K), clamped to the end values."""
    k = kx.shape[1]
    i = torch.searchsorted(kx, v).clamp(1, k - 1)
    x0, x1 = kx.gather(1, i - 1), kx.gather(1, i)
    y0, y1 = ky.gather(1, i - 1), ky.gather(1, i)
    t = ((v - x0) / (x1 - x0).clamp_min(1e-12)).clamp(0, 1)
    return y0 + t * (y1 - y0)


def _relative_residual(y: torch.Tensor, fit: torch.Tensor) -> float:
    y, fit = y.double(), fit.double()
    spread = (y - y.mean(1, keepdim=True)).pow(2).sum().sqrt()
    return float((y - fit).pow(2).sum().sqrt() / spread.clamp_min(1e-12))


def _fit_affine(x: torch.Tensor, y: torch.Tensor) -> FrozenMap:
    c = x.shape[0]
    mean, cov = S.feature_stats(torch.cat([x.float(), y.float()], 0))
    cxx, cyx = cov[:c, :c], cov[c:, :c]
    evals, evecs = torch.linalg.eigh(cxx)
    keep = evals > evals.max().clamp_min(1e-300) * 1e-10
    pinv = (evecs[:, keep] / evals[keep]) @ evecs[:, keep].T
    a = cyx @ pinv
    return FrozenMap("affine", a=a, b=mean[c:] - a @ mean[:c])


def _fit_monotone(x: torch.Tensor, y: torch.Tensor) -> FrozenMap | None:
    if y.shape[0] != x.shape[0]:
        return None
    n = x.shape[1]
    order = x.float().argsort(1)
    xs, ys = x.float().gather(1, order), y.float().gather(1, order)
    if bool((ys[:, 1:] < ys[:, :-1] - 1e-4 * ys.abs().amax(1, keepdim=True)).any()):
        return None  # not monotone in its own channel
    pick = torch.linspace(0, n - 1, min(KNOTS, n)).round().long()
    return FrozenMap("monotone", kx=xs[:, pick].contiguous(), ky=ys[:, pick].contiguous())


def fit_frozen_map(x: torch.Tensor, y: torch.Tensor) -> FrozenMap | None:
    """The per-position map a transform applied: ``x`` (C, N) input features, ``y`` (C', N)
    its output at the same positions. Affine (least squares through the joint covariance of
    :func:`brushwork.core.stats.feature_stats`, pseudo-inverse on the input's well-determined
    subspace) when a map fitted on half of the positions reproduces the other half within
    :data:`AFFINE_TOL`; else, for C = C', a monotone map per channel (the sorted pairs as
    knots) within :data:`MONOTONE_TOL`; else None (the transform is not a function of each
    position's own features, or there are too few positions, under 4 (C + 1), to tell)."""
    c, n = x.shape
    if n < 4 * (c + 1):
        return None
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(0)).to(x.device)
    fit_on, check_on = perm[: n // 2], perm[n // 2:]
    for fitter, tol in ((_fit_affine, AFFINE_TOL), (_fit_monotone, MONOTONE_TOL)):
        half = fitter(x[:, fit_on], y[:, fit_on])
        if half is None:
            continue
        xc = x[:, check_on]
        err = _relative_residual(y[:, check_on], half(xc.reshape(1, c, 1, -1)).reshape(-1, xc.shape[1]))
        if err <= tol:
            return fitter(x, y)
    return None


# ------------------------------------------------------------------------------ seam measure
def seam_ratio(image: torch.Tensor, borders_y: Iterable[float], borders_x: Iterable[float],
               band: int = 4, ring: int = 64, rows: int = 512) -> float:
    """Mean squared gradient across the tile borders against the interior next to them.

    At a vertical border line x = c: the horizontal differences between columns j and j + 1
    with ``-band <= j + 1 - c < band`` (2 x ``band`` of them: whole periods of the decoders'
    2x/4x/8x upsampling patterns, whatever the border's phase) against those ``2 * band`` to
    ``ring`` px away on either side (the interior beside the border, so the image's own
    structure at that place cancels); horizontal borders likewise with vertical differences.
    1.0 = the borders are as smooth as their surroundings; a seam pushes it up. ``image``:
    (1, C, H, W) or (H, W, C), uint8 or float; computed in row strips (any size)."""
    x = image
    if x.dim() == 3:  # H, W, C array layout
        x = x.permute(2, 0, 1)[None]
    h, w = x.shape[-2:]
    col = torch.zeros(w - 1, dtype=torch.float64)   # sums of squared horizontal differences
    row = torch.zeros(h - 1, dtype=torch.float64)   # sums of squared vertical differences
    prev = None
    for y0 in range(0, h, rows):
        s = x[0, :, y0:min(h, y0 + rows)].double()
        col += (s[:, :, 1:] - s[:, :, :-1]).pow(2).sum((0, 1))
        if prev is not None:
            s = torch.cat([prev, s], 1)
        start = max(0, y0 - 1)
        row[start:start + s.shape[1] - 1] += (s[:, 1:] - s[:, :-1]).pow(2).sum((0, 2))
        prev = s[:, -1:]

    def split(sums, borders, length, per):
        pos = torch.arange(1, length + 1, dtype=torch.float64)  # difference j sits at j + 1
        borders = list(borders)
        near = torch.zeros(length, dtype=torch.bool)
        for c in borders:
            near |= (pos - c >= -band) & (pos - c < band)
        beside = torch.zeros(length, dtype=torch.bool)
        for c in borders:
            d = pos - c
            beside |= ((d >= 2 * band) & (d < ring)) | ((d < -2 * band) & (d >= -ring))
        beside &= ~near
        return (float(sums[near].sum()), int(near.sum()) * per,
                float(sums[beside].sum()), int(beside.sum()) * per)

    bx, nbx, ix, nix = split(col, borders_x, w - 1, h)
    by, nby, iy, niy = split(row, borders_y, h - 1, w)
    if nbx + nby == 0 or nix + niy == 0:
        return 1.0
    inner = (ix + iy) / (nix + niy)
    return (bx + by) / (nbx + nby) / max(inner, 1e-20)
