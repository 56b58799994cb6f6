"""Temporal consistency for video: optical flow, warping, occlusion masks, warping error.

Conventions: a *flow* from frame A to frame B is a float32 numpy array (H, W, 2) holding, for
each pixel x of A, the displacement (dx, dy) of that point in B. *Backward warping* an image
``img`` (living in B) with the flow from A to B gives ``img(x + flow(x))``, an image aligned
with A. So to bring the previous stylised frame onto the current one we warp it with the flow
from the current frame to the previous one.

The occlusion mask follows the forward-backward consistency test of Sundaram et al. (2010) as
used by Ruder et al. ("Artistic style transfer for videos", 2016): with ``b`` the flow from the
current frame to the previous one and ``f`` the flow from the previous frame to the current
one, ``f~(x) = f(x + b(x))`` is the forward flow seen from the current frame, and a pixel is
disoccluded where ``|f~ + b|^2 > 0.01 (|f~|^2 + |b|^2) + 0.5``; it lies on a motion boundary
where ``|grad b_x|^2 + |grad b_y|^2 > 0.01 |b|^2 + 0.002``. The mask is 1 where the previous
frame is a trustworthy prediction and 0 elsewhere (also where ``x + b(x)`` leaves the frame).

The warping error (Lai et al., "Learning blind video temporal consistency", 2018) of an output
video O given the input video I is the mean, over consecutive frame pairs, of
``sum_x M_t(x) |O_t(x) - warp(O_{t-1}, b_t)(x)|^2 / sum_x M_t(x)`` where the flow ``b_t`` and
the mask ``M_t`` come from the *input* frames and ``|.|^2`` is the squared difference averaged
over the three RGB channels (values in [0, 1]).
"""
from __future__ import annotations

import contextlib
import functools
import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import torch

from ..errors import BrushworkError, ControlError
from ..core.image import resize
from ..core.protocol import Progress
from ..core.stats import mean_std

CONSISTENCY_MODES = ("none", "flow")
FLOW_METHODS = ("dis", "farneback")
RESAMPLING = ("linear", "lanczos")


def _cv2():
    try:
        import cv2
    except ImportError:  # pragma: no cover - a declared dependency
        raise BrushworkError("temporal consistency needs OpenCV "
                             "(pip install opencv-python-headless)") from None
    return cv2


def _gray_u8(x: torch.Tensor) -> np.ndarray:
    """(1, 3, H, W) [0, 1] tensor -> (H, W) uint8 luminance."""
    t = x[0].detach().float().clamp(0, 1)
    y = 0.299 * t[0] + 0.587 * t[1] + 0.114 * t[2]
    return (y * 255.0).round().to(torch.uint8).cpu().numpy()


def _hwc(x: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(x[0].detach().float().permute(1, 2, 0).cpu().numpy())


def _chw(a: np.ndarray) -> torch.Tensor:
    if a.ndim == 2:
        a = a[..., None]
    return torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1).unsqueeze(0).float()


def _planes(x: torch.Tensor) -> np.ndarray:
    """(1, C, H, W) tensor -> (C, H, W) float32 numpy array (a view when it can be one), so
    that OpenCV works on each channel plane without a transposing copy."""
    return np.ascontiguousarray(x[0].detach().float().cpu().numpy())


@functools.lru_cache(maxsize=8)
def _grid(h: int, w: int) -> np.ndarray:
    """(H, W, 2) float32 pixel coordinates (x, y): a remap map is ``_grid + flow``."""
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    g = np.stack([gx, gy], -1)
    g.flags.writeable = False
    return g


SMALL_FLOW_PIXELS = 160 * 120  # the fast flow uses the reference settings up to this size

# Working scale of the fast flow: frames are reduced by this factor (area average) before the
# flow and the masks are found, and the flow and the mask are brought back up (bilinear).
def fast_flow_scale(hw: tuple[int, int]) -> int:
    """1 up to 256 px on the long side, 2 up to 1024 px, 4 above."""
    long_side = max(hw)
    return 1 if long_side <= 256 else 2 if long_side <= 1024 else 4


class FlowEstimator:
    """Dense optical flow with OpenCV: DIS (default, fast and good) or Farneback.

    ``fast=False`` (the reference, used by :func:`warping_error`): DIS "medium" with
    refinement at full resolution up to 640 px. ``fast=True`` (what video stylisation uses):
    the frames are first reduced by :func:`fast_flow_scale` (2 at 512x384) and DIS runs with
    its "ultrafast" preset there, refining down to half of that working resolution; the flow
    is then resized back up. At 512x384 this is about 30x less work, and the flow stays
    within about 0.4 px of the reference on smooth motion. Working images of at most
    ``SMALL_FLOW_PIXELS`` keep the reference settings, which cost next to nothing there.
    """

    def __init__(self, method: str = "dis", *, fast: bool = False):
        if method not in FLOW_METHODS:
            raise ControlError(f"unknown flow method {method!r} (choose {', '.join(FLOW_METHODS)})")
        cv2 = _cv2()
        self.method = method
        self.fast = fast
        if method == "dis":
            preset = cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST if fast else \
                cv2.DISOPTICAL_FLOW_PRESET_MEDIUM
            self._dis = cv2.DISOpticalFlow_create(preset)
            self._dis_small = None

    def scale(self, hw: tuple[int, int]) -> int:
        """The factor frames of size ``hw`` are reduced by before the flow is found."""
        return fast_flow_scale(hw) if self.fast else 1

    def prepare(self, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """(RGB (h, w, 3) float32, luminance (h, w) uint8) of frame ``x`` at the working
        resolution (reduced by :meth:`scale`): what :meth:`flow_between` reads."""
        cv2 = _cv2()
        s = self.scale(tuple(x.shape[-2:]))
        t = x.detach().float()
        if s > 1:
            t = torch.nn.functional.avg_pool2d(t, s)
        rgb = _hwc(t)
        gray = cv2.convertScaleAbs(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), alpha=255.0)
        return rgb, gray

    def flow_between(self, ga: np.ndarray, gb: np.ndarray) -> np.ndarray:
        """Flow from luminance ``ga`` to ``gb`` (from :meth:`prepare`), at their resolution
        and in their pixel units."""
        cv2 = _cv2()
        if self.method == "dis":
            dis = self._dis
            if self.fast and ga.size <= SMALL_FLOW_PIXELS:
                # tiny frames: the reference settings cost next to nothing there
                if self._dis_small is None:
                    self._dis_small = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
                dis = self._dis_small
            # The reference refines at full resolution on small frames (DIS stops at half
            # resolution by default); above 640 px the default keeps 480p flow fast. The
            # fast flow stops at half its (already reduced) working resolution.
            dis.setFinestScale(1 if max(ga.shape) > (160 if self.fast else 640) else 0)
            flow = dis.calc(ga, gb, None)
        else:
            flow = cv2.calcOpticalFlowFarneback(ga, gb, None, pyr_scale=0.5, levels=4,
                                                winsize=15, iterations=3, poly_n=5,
                                                poly_sigma=1.2, flags=0)
        return np.ascontiguousarray(flow, dtype=np.float32)

    def __call__(self, a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
        """Flow from image ``a`` to image ``b`` (same size) as (H, W, 2) float32."""
        if a.shape[-2:] != b.shape[-2:]:
            raise BrushworkError(f"flow needs frames of one size, got {tuple(a.shape[-2:])} "
                                 f"and {tuple(b.shape[-2:])}")
        if not self.fast:
            return self.flow_between(_gray_u8(a), _gray_u8(b))
        flow = self.flow_between(self.prepare(a)[1], self.prepare(b)[1])
        return upsample_flow(flow, tuple(a.shape[-2:]))


def upsample_flow(flow: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """A flow found on reduced frames, resized (bilinear) to ``hw`` and scaled to its pixels."""
    h, w = hw
    fh, fw = flow.shape[:2]
    if (fh, fw) == (h, w):
        return flow
    up = _cv2().resize(flow, (w, h), interpolation=_cv2().INTER_LINEAR)
    up[..., 0] *= w / fw
    up[..., 1] *= h / fh
    return up


def optical_flow(a: torch.Tensor, b: torch.Tensor, method: str = "dis", *,
                 fast: bool = False) -> np.ndarray:
    """Flow from ``a`` to ``b``; see :class:`FlowEstimator`."""
    return FlowEstimator(method, fast=fast)(a, b)


def _check_resample(resample: str) -> None:
    if resample not in RESAMPLING:
        raise ControlError(f"unknown resampling {resample!r} (choose {', '.join(RESAMPLING)})")


def _remap(a: np.ndarray, flow: np.ndarray, resample: str = "linear",
           dst: np.ndarray | None = None) -> np.ndarray:
    cv2 = _cv2()
    h, w = flow.shape[:2]
    mode = {"linear": cv2.INTER_LINEAR, "lanczos": cv2.INTER_LANCZOS4}[resample]
    return cv2.remap(a, _grid(h, w) + flow, None, interpolation=mode,
                     borderMode=cv2.BORDER_REPLICATE, dst=dst)


def _warp_planes(planes: np.ndarray, flow: np.ndarray, resample: str) -> np.ndarray:
    """Backward-warp each (H, W) plane of ``planes`` (C, H, W) with one remap map."""
    cv2 = _cv2()
    h, w = flow.shape[:2]
    mode = {"linear": cv2.INTER_LINEAR, "lanczos": cv2.INTER_LANCZOS4}[resample]
    m = _grid(h, w) + flow
    out = np.empty_like(planes)
    for c in range(planes.shape[0]):
        cv2.remap(planes[c], m, None, dst=out[c], interpolation=mode,
                  borderMode=cv2.BORDER_REPLICATE)
    return out


def warp(image: torch.Tensor, flow: np.ndarray, resample: str = "linear") -> torch.Tensor:
    """Backward-warp ``image`` (1, C, H, W): ``out(x) = image(x + flow(x))``, bilinear, or with
    ``resample="lanczos"`` the 8x8 Lanczos kernel: sharper, so that an image warped again and
    again (a result carried along the flow for many frames) is not blurred a little more each
    time."""
    if tuple(image.shape[-2:]) != flow.shape[:2]:
        raise BrushworkError(f"flow of size {flow.shape[:2]} does not match image "
                             f"{tuple(image.shape[-2:])}")
    _check_resample(resample)
    out = torch.from_numpy(_warp_planes(_planes(image), flow, resample))[None]
    return out.clamp_(0, 1) if image.shape[1] == 3 else out


def _consistent(forward: np.ndarray, backward: np.ndarray, motion_boundaries: bool,
                scale: float = 1.0) -> np.ndarray:
    """The (H, W) bool trust mask of :func:`occlusion_mask` for flows found at a resolution
    reduced by ``scale`` (their values in those pixels): the thresholds are applied in
    full-resolution pixels, so the test means the same at any working scale."""
    h, w = backward.shape[:2]
    s2 = float(scale) ** 2
    f_tilde = _remap(forward, backward)               # f(x + b(x)), seen from the current frame
    fu, fv = f_tilde[..., 0], f_tilde[..., 1]
    bu, bv = backward[..., 0], backward[..., 1]
    b2 = bu * bu + bv * bv
    su, sv = fu + bu, fv + bv
    ok = (su * su + sv * sv) <= 0.01 * (fu * fu + fv * fv + b2) + 0.5 / s2
    if motion_boundaries:
        # the gradient of a flow is the same in full and reduced pixels; |b|^2 is not
        gy_u, gx_u = np.gradient(bu)
        gy_v, gx_v = np.gradient(bv)
        grad2 = gx_u * gx_u + gy_u * gy_u + gx_v * gx_v + gy_v * gy_v
        ok &= grad2 <= 0.01 * s2 * b2 + 0.002
    g = _grid(h, w)
    tx, ty = g[..., 0] + bu, g[..., 1] + bv
    ok &= (tx >= 0) & (tx <= w - 1) & (ty >= 0) & (ty <= h - 1)
    return ok


def occlusion_mask(forward: np.ndarray, backward: np.ndarray, *,
                   motion_boundaries: bool = True) -> torch.Tensor:
    """Consistency mask (1, 1, H, W) in the coordinates of the *current* frame.

    ``forward``: flow previous -> current; ``backward``: flow current -> previous. 1 where the
    previous frame, warped by ``backward``, is a reliable prediction of the current one.
    """
    ok = _consistent(forward, backward, motion_boundaries)
    return torch.from_numpy(ok.astype(np.float32))[None, None]


def _photometric_ok(prev_rgb: np.ndarray, cur_rgb: np.ndarray, backward: np.ndarray,
                    threshold: float) -> np.ndarray:
    """(H, W) float32 of :func:`photometric_mask` from (H, W, 3) float32 RGB frames."""
    cv2 = _cv2()
    warped = _remap(prev_rgb, backward)
    np.clip(warped, 0, 1, out=warped)
    d = cv2.absdiff(warped, cur_rgb).mean(-1, dtype=np.float32)
    ok = (cv2.GaussianBlur(d, (5, 5), 0) < threshold).astype(np.float32)
    return cv2.erode(ok, np.ones((3, 3), np.uint8))


def photometric_mask(prev: torch.Tensor, cur: torch.Tensor, backward: np.ndarray,
                     threshold: float = 0.08) -> torch.Tensor:
    """(1, 1, H, W): 0 where ``prev`` warped onto ``cur`` differs from ``cur`` by more than
    ``threshold`` (mean absolute RGB difference after a 5x5 Gaussian blur), eroded by one pixel.

    Catches flow errors the forward-backward test misses (smooth flow dragging a moving
    object's pixels over the background it uncovers), which would otherwise leave ghosts.
    """
    ok = _photometric_ok(_hwc(prev), _hwc(cur), backward, threshold)
    return torch.from_numpy(ok)[None, None]


def warping_error_pair(prev_out: torch.Tensor, cur_out: torch.Tensor, forward: np.ndarray,
                       backward: np.ndarray) -> float | None:
    """Masked mean squared error between ``cur_out`` and ``prev_out`` warped onto it."""
    mask = occlusion_mask(forward, backward)
    m = float(mask.sum())
    if m == 0:
        return None
    diff = (cur_out.float() - warp(prev_out.float(), backward)) ** 2
    return float((diff.mean(1, keepdim=True) * mask).sum() / m)


def warping_error(inputs: Iterable[torch.Tensor], outputs: Iterable[torch.Tensor], *,
                  flow: str = "dis", callback: Callable[[Progress], None] | None = None,
                  total: int = 0) -> dict[str, Any]:
    """Warping error of the output frames given the input frames (see the module docstring).

    Input frames are resized to the output size when they differ. Returns
    ``{"warping_error": mean, "per_frame": [...], "pairs": n, "frames": n_frames,
    "input_warping_error": the same measure of the input against itself}``. The latter is the
    floor set by flow failures (pixels the forward-backward test trusts but the flow gets
    wrong): an output that follows the input faithfully cannot go much below it.
    """
    est = FlowEstimator(flow)
    errors: list[float] = []
    floor: list[float] = []
    prev_in = prev_out = None
    n = 0
    it_in, it_out = iter(inputs), iter(outputs)
    while True:
        a, b = next(it_in, None), next(it_out, None)
        if a is None and b is None:
            break
        if a is None or b is None:
            raise BrushworkError(f"input and output have different frame counts "
                                 f"(they differ after {n} frames)")
        n += 1
        if tuple(a.shape[-2:]) != tuple(b.shape[-2:]):
            a = resize(a, tuple(b.shape[-2:]))
        if prev_in is not None:
            if tuple(prev_out.shape[-2:]) != tuple(b.shape[-2:]):
                raise BrushworkError("output frames change size within the video")
            fwd, bwd = est(prev_in, a), est(a, prev_in)
            e = warping_error_pair(prev_out, b, fwd, bwd)
            if e is not None:
                errors.append(e)
                floor.append(warping_error_pair(prev_in, a, fwd, bwd))
        prev_in, prev_out = a, b
        if callback is not None:
            callback(Progress("warping_error", "step", step=n, total=max(total, n)))
    if n < 2:
        raise BrushworkError(f"warping error needs at least 2 frames, got {n}")
    mean = float(np.mean(errors)) if errors else 0.0
    return {"warping_error": mean, "per_frame": errors, "pairs": n - 1, "frames": n,
            "input_warping_error": float(np.mean(floor)) if floor else 0.0}


def _stats_view(x: torch.Tensor) -> torch.Tensor:
    """``x`` (1, C, H, W) on a regular grid of about 49k pixels (every k-th row and column,
    k >= 1): per-channel statistics of a whole frame are as good from it and cost less."""
    k = max(1, int(math.sqrt(x.shape[-2] * x.shape[-1] / 49152)))
    return x if k == 1 else x[..., ::k, ::k]


def _match_channel_stats(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Give ``x`` the per-channel mean and standard deviation of ``ref`` (both (1, 3, H, W))."""
    xm, xs = mean_std(x, eps=0, unbiased=True, keepdim=True)
    rm, rs = mean_std(ref, eps=0, unbiased=True, keepdim=True)
    return (x - xm) / xs.clamp_min(1e-6) * rs + rm


def _blur_planes(t: torch.Tensor, k: int, sigma: float) -> torch.Tensor:
    """Gaussian blur (k x k, reflected border) of each channel plane of (1, C, H, W) ``t``."""
    cv2 = _cv2()
    a = _planes(t)
    out = np.empty_like(a)
    for c in range(a.shape[0]):
        cv2.GaussianBlur(a[c], (k, k), sigma, dst=out[c], borderType=cv2.BORDER_REFLECT)
    return torch.from_numpy(out)[None]


def _restore_detail(x: torch.Tensor, ref: torch.Tensor, sigma: float) -> torch.Tensor:
    """Scale the high-frequency band of ``x`` (``x`` minus its Gaussian blur of ``sigma`` px) per
    channel so its standard deviation matches ``ref``'s: blending frames averages away the
    painted texture (the fine strokes), and this gives its energy back."""
    k = 2 * int(math.ceil(3 * sigma)) + 1
    x, ref = x.detach().float().cpu(), ref.detach().float().cpu()
    low = _blur_planes(x, k, sigma)
    high = x - low
    ref_high = ref - _blur_planes(ref, k, sigma)
    _, hs = mean_std(high, eps=0, keepdim=True)
    _, rs = mean_std(ref_high, eps=0, keepdim=True)
    return torch.addcmul(low, high, rs / hs.clamp_min(1e-6))


class TemporalStylizer:
    """Wrap any image Stylizer so that successive calls stylise successive video frames.

    ``mode="none"`` stylises each frame independently. ``mode="flow"`` carries the previous
    result forward along the optical flow of the *content* frames:

    * methods declaring ``capabilities.temporal_hooks`` (optimisation methods such as gatys,
      with ``init_image`` and ``temporal`` controls) follow Ruder et al. 2016: the warped previous result initialises the optimisation
      and a temporal loss ``temporal_weight * mean(mask * (x - warped)^2)`` keeps it where the
      mask says the warp is reliable; frames after the first run at one scale (``scales=1``
      unless given) since coarse-to-fine would blur the warped start image;
    * any other method is stylised per frame and blended with the warped previous *output*:
      ``out = a*m*warped + (1 - a*m)*new`` with ``a = blend`` and ``m`` the occlusion mask, so
      disoccluded regions take the fresh stylisation. Averaging lowers contrast and washes out
      the painted texture, so the blend then gets the fresh frame's per-channel mean and
      standard deviation back (``restore_contrast``) and the energy of its fine detail, the
      band above a Gaussian blur of ``detail_sigma`` px (``detail_sigma=None``: off).

    ``blend`` and ``resample`` (how the previous result is warped) left at ``None`` take the
    wrapped method's ``capabilities.video_defaults`` (a dict with those keys) where it has them, else
    ``DEFAULTS`` (0.4, bilinear). wct declares ``{"blend": 0.95, "resample": "lanczos"}``: its
    texture is re-invented from small content changes, so averaging two frames' textures
    loses its style; near-complete carrying (0.95) keeps one texture moving with the scene,
    and the sharp Lanczos warp keeps that texture from blurring away over many frames (with
    bilinear warps the style distance drifts up along the clip).

    The mask is the forward-backward occlusion mask times, unless ``photometric=None``, a
    photometric check on the content frames (:func:`photometric_mask`).

    ``fast_flow=True`` (default) finds the flow and the masks on frames reduced by
    :func:`fast_flow_scale` with DIS "ultrafast" (see :class:`FlowEstimator`), then brings the
    flow and the mask back up; ``False`` uses the reference flow at full resolution. The flow,
    the masks and the warp of the previous result depend only on earlier frames, so feed-forward
    methods get them from a thread while the model stylises the frame. ``times``: a
    :class:`StageTimes` that gets the time of the model, flow, masks and warp/blend stages.

    Call :meth:`reset` between clips. The wrapper has the wrapped method's name and controls.
    """

    DEFAULTS = {"blend": 0.4, "resample": "linear"}

    def __init__(self, stylizer, mode: str = "flow", *, blend: float | None = None,
                 temporal_weight: float = 1.0, flow: str = "dis", motion_boundaries: bool = True,
                 use_optimization_hooks: bool = True, post_blend: float | None = None,
                 photometric: float | None = 0.08, restore_contrast: bool = True,
                 detail_sigma: float | None = 1.5, resample: str | None = None,
                 fast_flow: bool = True, times: StageTimes | None = None):
        caps = stylizer.capabilities
        own = {**self.DEFAULTS, **caps.video_defaults}
        blend = own["blend"] if blend is None else blend
        resample = own["resample"] if resample is None else resample
        _check_resample(resample)  # here, not at the second frame
        if mode not in CONSISTENCY_MODES:
            raise ControlError(f"unknown consistency mode {mode!r} "
                               f"(choose {', '.join(CONSISTENCY_MODES)})")
        if not 0.0 <= blend < 1.0:
            raise ControlError(f"blend must be in [0, 1), got {blend}")
        if detail_sigma is not None and not 0.0 < detail_sigma <= 20.0:
            raise ControlError(f"detail_sigma must be in (0, 20] px, got {detail_sigma}")
        self.stylizer = stylizer
        self.mode = mode
        self.name = stylizer.name
        self.controls = stylizer.controls
        self.capabilities = caps
        self.blend = blend
        self.resample = resample
        self.post_blend = post_blend
        self.temporal_weight = temporal_weight
        self.motion_boundaries = motion_boundaries
        self.photometric = photometric
        self.restore_contrast = restore_contrast
        self.detail_sigma = detail_sigma
        self.flow = FlowEstimator(flow, fast=fast_flow) if mode == "flow" else None
        self.hooks = use_optimization_hooks and caps.temporal_hooks
        self.times = times if times is not None else StageTimes()
        self._executor: ThreadPoolExecutor | None = None
        self.reset()

    def _pool(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="brushwork-flow")
        return self._executor

    def close(self) -> None:
        """Stop the flow thread (a later call starts a new one)."""
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    def _motion(self, content: torch.Tensor, prev: torch.Tensor, prev_prep=None,
                cur_prep=None):
        """(backward flow, trust mask (1, 1, H, W), the current frame's prepared images)
        between the previous content frame and this one; ``prev_prep``: the previous frame's
        :meth:`FlowEstimator.prepare` output when it is kept from the last call."""
        hw = tuple(content.shape[-2:])
        with self.times("flow"):
            cur_prep = cur_prep or self.flow.prepare(content)
            prev_prep = prev_prep or self.flow.prepare(prev)
            (cur_rgb, cur_g), (prev_rgb, prev_g) = cur_prep, prev_prep
            backward = self.flow.flow_between(cur_g, prev_g)
            forward = self.flow.flow_between(prev_g, cur_g)
        with self.times("masks"):
            scale = hw[1] / backward.shape[1]
            ok = _consistent(forward, backward, self.motion_boundaries, scale)
            mask = ok.astype(np.float32)
            if self.photometric is not None:
                mask *= _photometric_ok(prev_rgb, cur_rgb, backward, self.photometric)
            if mask.shape != hw:
                mask = _cv2().resize(mask, (hw[1], hw[0]), interpolation=_cv2().INTER_LINEAR)
        with self.times("flow"):
            backward = upsample_flow(backward, hw)
        return backward, torch.from_numpy(mask)[None, None], cur_prep

    def _motion_and_warp(self, content, prev, prev_out, prev_prep):
        """:meth:`_motion` plus the previous result warped onto this frame: all of it depends
        on the frames before this one only, so it runs beside the model."""
        backward, mask, prep = self._motion(content, prev, prev_prep)
        with self.times("warp_blend"):
            warped = warp(prev_out, backward, self.resample)
        return warped, mask, prep

    def _blend(self, fresh: torch.Tensor, warped: torch.Tensor, mask: torch.Tensor,
               a: float | None) -> torch.Tensor:
        """``a*m*warped + (1 - a*m)*fresh`` with the fresh frame's contrast and detail back.

        The contrast restore is an affine map per channel, ``y = g*out + c``, and the blur is
        linear, so the detail restore of ``y`` is ``g*low(out) + c + (sd_f / sd_o)*high(out)``
        (``sd``: standard deviation of the high band of the fresh frame and of the blend): one
        blur of the blend and one of the fresh frame, no intermediate images."""
        if not a:
            return fresh
        fresh = fresh.detach().float().cpu()
        dev = warped.device
        out = torch.addcmul(fresh, warped.cpu() - fresh, a * mask.cpu())
        parts = [out, fresh] if self.restore_contrast else []
        if self.detail_sigma:
            k = 2 * int(math.ceil(3 * self.detail_sigma)) + 1
            low = _blur_planes(out, k, self.detail_sigma)
            high = out - low
            parts += [high, fresh - _blur_planes(fresh, k, self.detail_sigma)]
        if not parts:
            return out.clamp_(0, 1).to(dev)
        # one call for every statistic (biased: the ratios below are the same either way)
        m, sd = mean_std(torch.cat([_stats_view(t) for t in parts]), eps=0, weighted=True,
                         keepdim=True)
        sd = sd.clamp_min(1e-6)
        if self.restore_contrast:
            g = sd[1:2] / sd[0:1]
            c = m[1:2] - g * m[0:1]
        if not self.detail_sigma:
            return torch.addcmul(c, out, g).clamp_(0, 1).to(dev)
        i = 2 if self.restore_contrast else 0
        high.mul_(sd[i + 1:i + 2] / sd[i:i + 1])
        if self.restore_contrast:
            low = torch.addcmul(c, low, g)
        return low.add_(high).clamp_(0, 1).to(dev)

    def reset(self) -> None:
        self._prev_in: torch.Tensor | None = None
        self._prev_out: torch.Tensor | None = None
        self._prev_prep = None
        self.last_mask: torch.Tensor | None = None

    def stylize(self, content: torch.Tensor, styles: Sequence[torch.Tensor], *,
                style_weights: Sequence[float] | None = None,
                controls: Mapping[str, Any] | None = None, seed: int | None = None,
                callback: Callable[[Progress], None] | None = None) -> torch.Tensor:
        kw = dict(style_weights=style_weights, seed=seed, callback=callback)
        controls = dict(controls or {})
        prev_ok = (self._prev_in is not None
                   and tuple(self._prev_in.shape[-2:]) == tuple(content.shape[-2:]))
        prep = None
        if self.mode == "none" or not prev_ok:
            with self.times("model"):
                out = self.stylizer.stylize(content, styles, controls=controls, **kw)
            if self.mode == "flow":
                with self.times("flow"):
                    prep = self.flow.prepare(content)
        elif not self.hooks:
            # the motion and the warped previous result depend only on earlier frames: they
            # are found in a thread while the model stylises this frame
            motion = self._pool().submit(self._motion_and_warp, content, self._prev_in,
                                         self._prev_out, self._prev_prep)
            with self.times("model"):
                out = self.stylizer.stylize(content, styles, controls=controls, **kw)
            warped, mask, prep = motion.result()
            self.last_mask = mask
            with self.times("warp_blend"):
                out = self._blend(out, warped, mask, self.blend)
        else:  # Ruder et al.: the warped previous result starts the optimisation
            backward, mask, prep = self._motion(content, self._prev_in, self._prev_prep)
            self.last_mask = mask
            warped = warp(self._prev_out, backward, self.resample)
            # Disoccluded pixels start from the content frame rather than a smeared warp.
            controls["init_image"] = mask * warped + (1 - mask) * content
            controls["temporal"] = (warped, mask, self.temporal_weight)
            if "scales" in self.controls and controls.get("scales") is None:
                controls["scales"] = 1  # coarse scales would blur the warped start image
            with self.times("model"):
                out = self.stylizer.stylize(content, styles, controls=controls, **kw)
            out = self._blend(out, warped, mask, self.post_blend)
        if self.mode == "flow":
            self._prev_in = content.detach()
            self._prev_out = out.detach()
            self._prev_prep = prep
        return out


class StageTimes:
    """Time spent per stage of a video pipeline, summed over frames: wall seconds and the CPU
    seconds of the thread that ran the stage (stages run in several threads at once, so the
    wall times overlap). Use as ``with times("flow"): ...``; thread-safe."""

    def __init__(self):
        self.wall: dict[str, float] = {}
        self.cpu: dict[str, float] = {}
        self.frames = 0
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def __call__(self, stage: str):
        w, c = time.perf_counter(), time.thread_time()
        try:
            yield
        finally:
            dw, dc = time.perf_counter() - w, time.thread_time() - c
            with self._lock:
                self.wall[stage] = self.wall.get(stage, 0.0) + dw
                self.cpu[stage] = self.cpu.get(stage, 0.0) + dc

    def add(self, stage: str, wall: float, cpu: float) -> None:
        with self._lock:
            self.wall[stage] = self.wall.get(stage, 0.0) + wall
            self.cpu[stage] = self.cpu.get(stage, 0.0) + cpu

    def per_frame(self) -> dict[str, dict[str, float]]:
        """``{stage: {"wall_ms": .., "cpu_ms": ..}}`` per frame (over ``frames``)."""
        n = max(1, self.frames)
        with self._lock:
            return {k: {"wall_ms": 1000 * self.wall[k] / n, "cpu_ms": 1000 * self.cpu[k] / n}
                    for k in self.wall}
