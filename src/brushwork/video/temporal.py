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

import math
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


class FlowEstimator:
    """Dense optical flow with OpenCV: DIS (default, fast and good) or Farneback."""

    def __init__(self, method: str = "dis"):
        if method not in FLOW_METHODS:
            raise ControlError(f"unknown flow method {method!r} (choose {', '.join(FLOW_METHODS)})")
        cv2 = _cv2()
        self.method = method
        if method == "dis":
            self._dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)

    def __call__(self, a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
        """Flow from image ``a`` to image ``b`` (same size) as (H, W, 2) float32."""
        if a.shape[-2:] != b.shape[-2:]:
            raise BrushworkError(f"flow needs frames of one size, got {tuple(a.shape[-2:])} "
                                 f"and {tuple(b.shape[-2:])}")
        ga, gb = _gray_u8(a), _gray_u8(b)
        if self.method == "dis":
            # Full-resolution refinement on small frames (DIS stops at half resolution by
            # default); above 640 px the default keeps 480p flow fast (~0.06 s vs 0.25 s).
            self._dis.setFinestScale(0 if max(ga.shape) <= 640 else 1)
            flow = self._dis.calc(ga, gb, None)
        else:
            cv2 = _cv2()
            flow = cv2.calcOpticalFlowFarneback(ga, gb, None, pyr_scale=0.5, levels=4,
                                                winsize=15, iterations=3, poly_n=5,
                                                poly_sigma=1.2, flags=0)
        return np.ascontiguousarray(flow, dtype=np.float32)


def optical_flow(a: torch.Tensor, b: torch.Tensor, method: str = "dis") -> np.ndarray:
    """Flow from ``a`` to ``b``; see :class:`FlowEstimator`."""
    return FlowEstimator(method)(a, b)


def _check_resample(resample: str) -> None:
    if resample not in RESAMPLING:
        raise ControlError(f"unknown resampling {resample!r} (choose {', '.join(RESAMPLING)})")


def _remap(a: np.ndarray, flow: np.ndarray, resample: str = "linear") -> np.ndarray:
    cv2 = _cv2()
    h, w = flow.shape[:2]
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    mode = {"linear": cv2.INTER_LINEAR, "lanczos": cv2.INTER_LANCZOS4}[resample]
    return cv2.remap(a, gx + flow[..., 0], gy + flow[..., 1], interpolation=mode,
                     borderMode=cv2.BORDER_REPLICATE)


def warp(image: torch.Tensor, flow: np.ndarray, resample: str = "linear") -> torch.Tensor:
    """Backward-warp ``image`` (1, C, H, W): ``out(x) = image(x + flow(x))``, bilinear, or with
    ``resample="lanczos"`` the 8x8 Lanczos kernel: sharper, so that an image warped again and
    again (a result carried along the flow for many frames) is not blurred a little more each
    time."""
    if tuple(image.shape[-2:]) != flow.shape[:2]:
        raise BrushworkError(f"flow of size {flow.shape[:2]} does not match image "
                             f"{tuple(image.shape[-2:])}")
    _check_resample(resample)
    out = _chw(_remap(_hwc(image), flow, resample))
    return out.clamp(0, 1) if image.shape[1] == 3 else out


def occlusion_mask(forward: np.ndarray, backward: np.ndarray, *,
                   motion_boundaries: bool = True) -> torch.Tensor:
    """Consistency mask (1, 1, H, W) in the coordinates of the *current* frame.

    ``forward``: flow previous -> current; ``backward``: flow current -> previous. 1 where the
    previous frame, warped by ``backward``, is a reliable prediction of the current one.
    """
    h, w = backward.shape[:2]
    f_tilde = _remap(forward, backward)               # f(x + b(x)), seen from the current frame
    s = f_tilde + backward
    ok = (s ** 2).sum(-1) <= 0.01 * ((f_tilde ** 2).sum(-1) + (backward ** 2).sum(-1)) + 0.5
    if motion_boundaries:
        gy_u, gx_u = np.gradient(backward[..., 0])
        gy_v, gx_v = np.gradient(backward[..., 1])
        grad2 = gx_u ** 2 + gy_u ** 2 + gx_v ** 2 + gy_v ** 2
        ok &= grad2 <= 0.01 * (backward ** 2).sum(-1) + 0.002
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    tx, ty = gx + backward[..., 0], gy + backward[..., 1]
    ok &= (tx >= 0) & (tx <= w - 1) & (ty >= 0) & (ty <= h - 1)
    return torch.from_numpy(ok.astype(np.float32))[None, None]


def photometric_mask(prev: torch.Tensor, cur: torch.Tensor, backward: np.ndarray,
                     threshold: float = 0.08) -> torch.Tensor:
    """(1, 1, H, W): 0 where ``prev`` warped onto ``cur`` differs from ``cur`` by more than
    ``threshold`` (mean absolute RGB difference after a 5x5 Gaussian blur), eroded by one pixel.

    Catches flow errors the forward-backward test misses (smooth flow dragging a moving
    object's pixels over the background it uncovers), which would otherwise leave ghosts.
    """
    cv2 = _cv2()
    d = (warp(prev, backward) - cur).abs().mean(1)[0].numpy()
    ok = (cv2.GaussianBlur(d, (5, 5), 0) < threshold).astype(np.float32)
    ok = cv2.erode(ok, np.ones((3, 3), np.uint8))
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


def _match_channel_stats(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Give ``x`` the per-channel mean and standard deviation of ``ref`` (both (1, 3, H, W))."""
    xm, xs = mean_std(x, eps=0, unbiased=True, keepdim=True)
    rm, rs = mean_std(ref, eps=0, unbiased=True, keepdim=True)
    return (x - xm) / xs.clamp_min(1e-6) * rs + rm


def _restore_detail(x: torch.Tensor, ref: torch.Tensor, sigma: float) -> torch.Tensor:
    """Scale the high-frequency band of ``x`` (``x`` minus its Gaussian blur of ``sigma`` px) per
    channel so its standard deviation matches ``ref``'s: blending frames averages away the
    painted texture (the fine strokes), and this gives its energy back."""
    cv2 = _cv2()
    k = 2 * int(math.ceil(3 * sigma)) + 1

    def bands(t):
        a = _hwc(t)
        low = cv2.GaussianBlur(a, (k, k), sigma, borderType=cv2.BORDER_REFLECT)
        return low, a - low

    low, high = bands(x)
    _, ref_high = bands(ref)
    gain = ref_high.std((0, 1)) / np.maximum(high.std((0, 1)), 1e-6)
    return _chw(low + high * gain.astype(np.float32)).to(x.device)


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

    Call :meth:`reset` between clips. The wrapper has the wrapped method's name and controls.
    """

    DEFAULTS = {"blend": 0.4, "resample": "linear"}

    def __init__(self, stylizer, mode: str = "flow", *, blend: float | None = None,
                 temporal_weight: float = 1.0, flow: str = "dis", motion_boundaries: bool = True,
                 use_optimization_hooks: bool = True, post_blend: float | None = None,
                 photometric: float | None = 0.08, restore_contrast: bool = True,
                 detail_sigma: float | None = 1.5, resample: str | None = None):
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
        self.flow = FlowEstimator(flow) if mode == "flow" else None
        self.hooks = use_optimization_hooks and caps.temporal_hooks
        self._executor: ThreadPoolExecutor | None = None
        self.reset()

    def _pool(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="brushwork-flow")
        return self._executor

    def _motion(self, content: torch.Tensor, prev: torch.Tensor):
        """(backward flow, trust mask) between the previous content frame and this one."""
        backward = self.flow(content, prev)
        forward = self.flow(prev, content)
        mask = occlusion_mask(forward, backward, motion_boundaries=self.motion_boundaries)
        if self.photometric is not None:
            mask = mask * photometric_mask(prev, content, backward, self.photometric)
        return backward, mask

    def _blend(self, fresh: torch.Tensor, warped: torch.Tensor, mask: torch.Tensor,
               a: float | None) -> torch.Tensor:
        """``a*m*warped + (1 - a*m)*fresh`` with the fresh frame's contrast and detail back."""
        if not a:
            return fresh
        out = a * mask * warped + (1 - a * mask) * fresh
        if self.restore_contrast:
            out = _match_channel_stats(out, fresh)
        if self.detail_sigma:
            out = _restore_detail(out, fresh, self.detail_sigma)
        return out.clamp(0, 1)

    def reset(self) -> None:
        self._prev_in: torch.Tensor | None = None
        self._prev_out: torch.Tensor | None = None
        self.last_mask: torch.Tensor | None = None

    def stylize(self, content: torch.Tensor, styles: Sequence[torch.Tensor], *,
                style_weights: Sequence[float] | None = None,
                controls: Mapping[str, Any] | None = None, seed: int | None = None,
                callback: Callable[[Progress], None] | None = None) -> torch.Tensor:
        kw = dict(style_weights=style_weights, seed=seed, callback=callback)
        controls = dict(controls or {})
        prev_ok = (self._prev_in is not None
                   and tuple(self._prev_in.shape[-2:]) == tuple(content.shape[-2:]))
        if self.mode == "none" or not prev_ok:
            out = self.stylizer.stylize(content, styles, controls=controls, **kw)
        elif not self.hooks:
            # the motion depends only on the content frames: it is found in a thread while the
            # model stylises the frame
            motion = self._pool().submit(self._motion, content, self._prev_in)
            out = self.stylizer.stylize(content, styles, controls=controls, **kw)
            backward, mask = motion.result()
            self.last_mask = mask
            warped = warp(self._prev_out, backward, self.resample)
            out = self._blend(out, warped, mask, self.blend)
        else:  # Ruder et al.: the warped previous result starts the optimisation
            backward, mask = self._motion(content, self._prev_in)
            self.last_mask = mask
            warped = warp(self._prev_out, backward, self.resample)
            # Disoccluded pixels start from the content frame rather than a smeared warp.
            controls["init_image"] = mask * warped + (1 - mask) * content
            controls["temporal"] = (warped, mask, self.temporal_weight)
            if "scales" in self.controls and controls.get("scales") is None:
                controls["scales"] = 1  # coarse scales would blur the warped start image
            out = self.stylizer.stylize(content, styles, controls=controls, **kw)
            out = self._blend(out, warped, mask, self.post_blend)
        if self.mode == "flow":
            self._prev_in = content.detach()
            self._prev_out = out.detach()
        return out
