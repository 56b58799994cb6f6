"""CUDA against CPU: every method from its shipped weights gives the same image on both devices
(fp32, same seed), and every trainer that takes ``--device`` runs a step on CUDA.

Skipped where CUDA is not available. Precision: ``BRUSHWORK_BF16=0`` (as tests/test_pinned.py)
and TF32 off for convolutions and matrix products, so both devices compute in fp32 and the
differences left are those of summation order and library kernels.
"""
from __future__ import annotations

import argparse
import functools
import importlib.util
import math
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import brushwork.api
from brushwork.core.image import to_tensor
from brushwork.methods import METHODS
from brushwork.train import TRAINERS

from _arbitrary_util import save_metastyle_file

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

GREY = 1 / 255
# (controls, mean abs tolerance, max abs tolerance), with why
CASES = {
    # one forward pass of convolutions and per-channel statistics: fp32 rounding only
    "adain": ({}, GREY, 0.02),
    "efdm": ({}, GREY, 0.02),       # sorts features; equal values sort the same
    "linear": ({}, GREY, 0.02),
    "sanet": ({}, GREY, 0.02),      # softmax attention, smooth in its inputs
    "etnet": ({}, GREY, 0.02),
    "johnson": ({}, GREY, 0.02),
    "metastyle": ({}, GREY, 0.02),  # johnson's net, from a seeded adapted file
    "cin": ({"style_id": "1"}, GREY, 0.02),
    "asma": ({"artist": "2"}, GREY, 0.02),
    "styleaware": ({"artist": "2"}, GREY, 0.02),
    "ctb": ({"artist": "2"}, GREY, 0.02),
    # eigen-decompositions (whitening-colouring, matrix square roots) differ in the last bits
    # and the decoders amplify them
    "wct": ({}, 2 * GREY, 0.1),
    "aams": ({}, 2 * GREY, 0.1),    # and k-means stroke levels (start drawn on the CPU)
    "totalst": ({}, 2 * GREY, 0.1),
    # an affine map of the content features from learned layers on both images' statistics
    "efanet": ({}, GREY, 0.02),
    # k-nearest-neighbour recombination: a near tie may pick another neighbour
    "tpfr": ({}, 2 * GREY, 0.3),
    # nearest-patch choices: a near tie may pick another patch, changing a few pixels a lot
    "styleswap": ({}, 2 * GREY, 0.3),
    "avatar": ({}, 2 * GREY, 0.3),
    "mst": ({}, 2 * GREY, 0.3),     # k-means labels of the style features (start drawn on the CPU)
    # iterative: L-BFGS from the same seeded start; three steps keep the paths close
    "gatys": ({"steps": 3}, 2 * GREY, 0.1),
    "fcs": ({}, 2 * GREY, 0.1),  # VGG19 gradients, like gatys' steps
    # PatchMatch: the random search is drawn on the CPU (same offsets), but a flipped choice
    # spreads to its neighbours through propagation
    "analogy": ({}, 4 * GREY, 0.5),
}


def test_every_method_has_a_case():
    assert set(CASES) == set(METHODS)


@pytest.fixture(autouse=True)
def fp32(monkeypatch):
    monkeypatch.setenv("BRUSHWORK_BF16", "0")
    monkeypatch.setattr(brushwork.api, "_instances", {})
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)


def _content():
    from skimage import data
    return to_tensor(Image.fromarray(data.chelsea()).resize((64, 48), Image.BICUBIC))


def _style():
    from skimage import data
    return to_tensor(Image.fromarray(data.coffee()).resize((48, 40), Image.BICUBIC))


@functools.lru_cache(maxsize=None)
def _adapted_file() -> str:
    """A seeded metastyle file (metastyle ships none: `brushwork adapt` makes one per painting)."""
    return save_metastyle_file(Path(tempfile.mkdtemp()) / "adapted.safetensors", 0.25, 2)


def stylize(method, device):
    """``method`` with its case's controls on the pinned tiny images, as a CPU tensor."""
    controls = CASES[method][0]
    styles = [_style()] if METHODS[method].capabilities.styles == "images" else []
    options = {"weights": _adapted_file()} if method == "metastyle" else None
    out = brushwork.api.stylize_tensors(_content(), styles, method, size=None, seed=0,
                                        device=device, controls=dict(controls),
                                        method_options=options)
    return out.detach().float().cpu()


@pytest.mark.parametrize("method", sorted(CASES))
def test_cuda_matches_cpu(method):
    controls, mean_tol, max_tol = CASES[method]
    cpu = stylize(method, "cpu")
    torch.cuda.reset_peak_memory_stats()
    gpu = stylize(method, "cuda")
    assert torch.cuda.max_memory_allocated() > 0  # it did run on the device
    assert gpu.shape == cpu.shape == (1, 3, 48, 64)
    assert 0 <= float(gpu.min()) and float(gpu.max()) <= 1
    diff = (gpu - cpu).abs()
    assert float(diff.mean()) <= mean_tol, f"mean abs {float(diff.mean()):.5f}"
    assert float(diff.max()) <= max_tol, f"max abs {float(diff.max()):.4f}"


# ------------------------------------------------------------------------------- trainers
# the tiniest settings each trainer's own tests use (one table, in the GPU script); classifier
# and texture-judge fit their heads on CPU features and take no --device
def _gpu_script():
    spec = importlib.util.spec_from_file_location(
        "gpu_run", Path(__file__).resolve().parents[1] / "scripts" / "gpu_run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


TINY = _gpu_script().TINY


def test_every_device_trainer_is_covered():
    assert set(TINY) == set(TRAINERS) - {"classifier", "texture-judge"}


def png(path, size, seed):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 256, (size[1] // 4, size[0] // 4, 3), dtype=np.uint8)
    Image.fromarray(a).resize(size, Image.BILINEAR).save(path)
    return path


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    return make_folders(tmp_path_factory.mktemp("cuda_data"))


def make_folders(root):
    """3 content photos and two 'artists' of 2 paintings each under ``root``."""
    (root / "content").mkdir()
    for i in range(3):
        png(root / "content" / f"c{i}.png", (48, 40), i)
    for a, artist in enumerate(("alpha", "beta")):
        (root / "styles" / artist).mkdir(parents=True)
        for i in range(2):
            png(root / "styles" / artist / f"{i}.png", (48, 48), 10 + 5 * a + i)
    return root


@pytest.mark.parametrize("name", sorted(TINY))
def test_trainer_step_on_cuda(name, folders, tmp_path):
    losses, out = train_step(name, folders, tmp_path, "cuda")
    assert losses and all(math.isfinite(float(v)) for v in losses)
    assert out.with_suffix(".ckpt").is_file() and out.is_file()


def train_step(name, folders, tmp_path, device):
    """One step of trainer ``name`` on ``device`` with its tiniest settings: (every loss value
    it reported, the weight file)."""
    out = tmp_path / f"{name}.safetensors"
    argv = ["--content", str(folders / "content"), "--out", str(out), "--device", device,
            "--size", "32", "--batch", "2", "--steps", "1", "--checkpoint-every", "1",
            "--sample-every", "0", "--no-bf16", *TINY[name]]
    if name in ("johnson", "cin"):
        argv += ["--style", str(folders / "styles" / "alpha" / "0.png")]
        if name == "cin":
            argv += ["--style", str(folders / "styles" / "beta" / "0.png")]
    else:
        argv += ["--styles", str(folders / "styles")]
    p = argparse.ArgumentParser()
    TRAINERS[name].add_arguments(p)
    events = []
    TRAINERS[name].run(p.parse_args(argv), events.append)
    return [v for e in events if e.kind == "train" for v in e.losses.values()], out
