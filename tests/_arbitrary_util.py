"""Tiny weight files and images for the arbitrary-style tests (no ../shared, seconds to run)."""
from __future__ import annotations

import torch

from brushwork.core import weights as weights_io


def image(h=40, w=48, seed=0):
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(1, 3, 1, 1, generator=g)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    ramp = torch.stack([yy, xx, (yy + xx) / 2])[None]
    return (0.5 * base + 0.3 * ramp + 0.2 * torch.rand(1, 3, h, w, generator=g)).clamp(0, 1)


def check_weights_and_masks(model, content, s1, s2, weights=([1, 0], [0, 1]), atol=1e-5,
                            full_mask=False):
    """With two different styles, swapping the style weights changes the output, and so does
    giving each style half of the image by masks; ``full_mask``: a mask covering everything
    gives that style alone. Returns the left-half mask."""
    a = model.stylize(content, [s1, s2], style_weights=weights[0])
    b = model.stylize(content, [s1, s2], style_weights=weights[1])
    assert not torch.allclose(a, b, atol=atol)
    h, w = content.shape[-2:]
    left = torch.zeros(1, 1, h, w)
    left[..., :w // 2] = 1
    m = model.stylize(content, [s1, s2], controls={"masks": [left, 1 - left]})
    assert m.shape == a.shape and not torch.allclose(m, a, atol=atol)
    if full_mask:
        full = torch.ones_like(left)
        only1 = model.stylize(content, [s1, s2], controls={"masks": [full, 0 * full]})
        torch.testing.assert_close(only1, model.stylize(content, [s1]), atol=1e-5, rtol=0)
    return left


def save_tiny(path, method, modules: dict, meta: dict | None = None, seed=0, first_gain=None):
    """Save ``modules`` (prefix -> module) as a weight file. Decoders fed by the small
    encoder's weak random features get their first conv scaled by ``first_gain`` (default 100;
    1 for VGG19's) so outputs are neither constant nor all saturated."""
    torch.manual_seed(seed)
    state = {}
    for prefix, m in modules.items():
        lively(m)
        if prefix.startswith("decoder"):
            small = (meta or {}).get("encoder") == "small"
            gain = first_gain if first_gain is not None else (100.0 if small else 1.0)
            first = next(c for c in m.modules() if isinstance(c, torch.nn.Conv2d))
            first.weight.data *= gain
        state.update(weights_io.prefixed_state(prefix, m))
    md = {"method": method, **(meta or {})}
    return weights_io.save_weights(state, path, metadata=md)


def lively(module):
    """Re-initialise convs (He init, small random biases) so tiny random nets do not collapse
    to a constant output through their ReLUs."""
    for m in module.modules():
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            torch.nn.init.normal_(m.bias, 0.0, 0.1)
    return module


def tiny_weight_files(d) -> dict:
    """Seeded tiny weight files (2-16 channels) for wct, linear, sanet, the small encoder and
    adain in folder ``d``: name -> path."""
    from brushwork.core import blocks

    W = 1 / 32
    torch.manual_seed(0)
    out = {}
    out["wct"] = d / "wct.safetensors"
    save_tiny(out["wct"], "wct", {f"decoder{l}": blocks.decoder(l, W) for l in (1, 2, 3)},
              {"levels": "1,2,3", "width": str(W)})
    out["linear"] = d / "linear.safetensors"
    lst = blocks.LinearTransform(256, 4, W)
    for net in (lst.cnet, lst.snet):  # random covariance -> matrix maps must stay O(1)
        net.fc.weight.data.mul_(1e-4)
    save_tiny(out["linear"], "linear", {"transform": lst,
                                        "decoder": blocks.decoder(3, W)},
              {"layer": "relu3_1", "width": str(W), "dim": "4"})
    out["sanet"] = d / "sanet.safetensors"
    save_tiny(out["sanet"], "sanet", {"transform": blocks.SATransform(512),
                                      "decoder": blocks.decoder(4, W)}, {"width": str(W)})
    enc = blocks.SmallEncoder(3, 1 / 16)
    out["distill"] = d / "distill.safetensors"
    save_tiny(out["distill"], "distill",
              {"encoder": enc, **{f"decoder{l}": blocks.decoder(l, W, enc.channels[f"relu{l}_1"])
                                  for l in (1, 2, 3)}},
              {"levels": "1,2,3", "width": str(W), "encoder": "small", "encoder_level": "3",
               "encoder_width": str(1 / 16)})
    out["adain3"] = d / "adain3.safetensors"
    save_tiny(out["adain3"], "adain", {"decoder": blocks.decoder(3, W)},
              {"level": "3", "width": str(W)})
    out["adain_small"] = d / "adain_small.safetensors"
    enc4 = blocks.SmallEncoder(4, 1 / 16)
    save_tiny(out["adain_small"], "adain",
              {"encoder": enc4, "decoder": blocks.decoder(4, W, enc4.channels["relu4_1"])},
              {"level": "4", "width": str(W), "encoder": "small", "encoder_level": "4",
               "encoder_width": str(1 / 16)})
    return out


def seeded_images(seed: int, n: int = 2, size: int = 32) -> torch.Tensor:
    """``n`` seeded (3, size, size) images in [0, 1]: a random colour, ramps, noise."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size),
                            indexing="ij")
    out = []
    for _ in range(n):
        base = torch.rand(3, 1, 1, generator=g)
        a, b = torch.rand(2, generator=g) * 2 - 1
        ramp = torch.stack([a * yy + b * xx, b * yy - a * xx, (yy + xx) / 2])
        out.append(0.5 * base + 0.3 * ramp + 0.3 * torch.rand(3, size, size, generator=g))
    return torch.stack(out).clamp(0, 1)


def noise_png(path, size, seed) -> str:
    """A (w, h) = ``size`` PNG of seeded uniform noise at ``path``; returns the path as str."""
    import numpy as np
    from PIL import Image
    a = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(a).save(path)
    return str(path)


def assert_pinned_tiny(model, expected, expected_mean) -> None:
    """A tiny model's output on ``image(40, 48, 0)`` styled by ``image(32, 40, 1)``: in range,
    deterministic, its row 20 columns 20..23 (all channels) equal to ``expected`` and its mean
    to ``expected_mean`` (to 1e-4)."""
    content, style = image(40, 48, 0), image(32, 40, 1)
    out = model.stylize(content, [style], seed=0)
    assert out.shape == content.shape and 0 <= float(out.min()) and float(out.max()) <= 1
    torch.testing.assert_close(model.stylize(content, [style], seed=0), out)  # deterministic
    got = out[0, :, 20, 20:24].flatten()
    torch.testing.assert_close(got, torch.tensor(expected), atol=1e-4, rtol=0)
    assert abs(float(out.mean()) - expected_mean) < 1e-4


def assert_strength_zero_is_reconstruction(model) -> None:
    """``strength=0`` gives ``model.reconstruct(content)``; 0.5 and 1 differ from it."""
    content, style = image(40, 48, 0), image(32, 40, 1)
    zero = model.stylize(content, [style], controls={"strength": 0.0})
    torch.testing.assert_close(zero, model.reconstruct(content), atol=1e-6, rtol=0)
    full = model.stylize(content, [style])
    half = model.stylize(content, [style], controls={"strength": 0.5})
    assert not torch.allclose(zero, full, atol=1e-3) and not torch.allclose(half, full, atol=1e-3)


def training_folders(root):
    """``root/content`` (3 images) and ``root/styles`` (2): smooth seeded 48x40 PNGs (random
    colours upscaled 4x), the data of a trainer's tiny runs; returns ``root``."""
    import numpy as np
    from PIL import Image
    for sub, n in (("content", 3), ("styles", 2)):
        (root / sub).mkdir()
        for i in range(n):
            base = np.random.default_rng(10 * n + i).integers(0, 256, (10, 12, 3), dtype=np.uint8)
            Image.fromarray(base).resize((48, 40), Image.BILINEAR).save(root / sub / f"{i}.png")
    return root


def assert_cli_refused(argv, dest, capsys) -> None:
    """``brushwork ARGV -o DEST`` exits 2 with one ``brushwork: error:`` line and writes
    nothing at DEST."""
    from brushwork.cli import main
    capsys.readouterr()
    assert main(list(argv) + ["-o", str(dest)]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("brushwork: error:"), err
    assert not dest.exists()


def skimage_photo(name: str, size) -> torch.Tensor:
    """scikit-image's ``name`` photo resized to ``size`` = (width, height): (1, 3, h, w) in [0, 1]."""
    import numpy as np
    from PIL import Image
    from skimage import data
    arr = np.asarray(Image.fromarray(getattr(data, name)()).resize(size, Image.BICUBIC))
    return torch.from_numpy(arr.copy()).permute(2, 0, 1)[None].float() / 255


def check_shipped_on_a_photo(make, file: str, err_max: float = 0.15, reconstruct=False):
    """The shipped ``file`` (skipped when absent) through ``make()`` on two scikit-image
    photos: a lively output of the photo's shape, and a strength-0 result (``reconstruct``:
    the method's ``reconstruct``) within ``err_max`` of the photo and closer to it than the
    stylisation. Returns (method, photo, that error)."""
    import pytest
    from brushwork.errors import BrushworkError
    try:
        weights_io.resolve_weights(None, file, "")
    except BrushworkError:
        pytest.skip(f"{file} is not shipped")
    m = make()
    content, style = skimage_photo("chelsea", (64, 48)), skimage_photo("coffee", (64, 48))
    out = m.stylize(content, [style])
    assert out.shape == content.shape and float(out.std()) > 0.05
    zero = m.reconstruct(content) if reconstruct else \
        m.stylize(content, [style], controls={"strength": 0.0})
    err = float((zero - content).abs().mean())
    assert err < err_max and float((out - content).abs().mean()) > err
    return m, content, err


def write_png(path, t: torch.Tensor):
    """Save a (1, 3, h, w) image in [0, 1] as an 8-bit PNG; returns the path."""
    import numpy as np
    from PIL import Image
    Image.fromarray((t[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)).save(path)
    return path


def cli_pair(tmp_path) -> tuple[str, str]:
    """A 48x40 content PNG and a 40x32 style PNG for CLI runs: their paths."""
    return (str(write_png(tmp_path / "c.png", image(40, 48, 0))),
            str(write_png(tmp_path / "s.png", image(32, 40, 1))))


def trainer_args(trainer, argv: list[str], **kw):
    """``trainer``'s parsed arguments: ``argv`` plus one ``--key value`` per keyword (``--key``
    alone for True; underscores become dashes)."""
    import argparse
    p = argparse.ArgumentParser()
    trainer.add_arguments(p)
    argv = list(argv)
    for k, v in kw.items():
        argv += [f"--{k.replace('_', '-')}", str(v)] if v is not True else [f"--{k}"]
    return p.parse_args(argv)


def check_resume_and_export(trainer, make_args, tmp_path):
    """Two steps in one run equal one step plus one resumed (every tensor), and the resumed
    run's checkpoint exported in float32 holds the same tensors. ``make_args(out, **kw)`` gives
    the trainer's arguments. Returns (tensors, metadata, path of the exported file)."""
    full = trainer.run(make_args(tmp_path / "full.safetensors", steps=2))
    trainer.run(make_args(tmp_path / "part.safetensors", steps=1))
    resumed = trainer.run(make_args(tmp_path / "part.safetensors", steps=2, resume=True))
    a, meta = weights_io.load_weights(full)
    b, _ = weights_io.load_weights(resumed)
    assert meta["steps"] == "2" and set(a) == set(b)
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-6, rtol=0)
    exported = tmp_path / "exported.safetensors"
    trainer.export(tmp_path / "part.ckpt", exported, fp16=False)
    e, emeta = weights_io.load_weights(exported)
    assert emeta["method"] == meta["method"] and emeta["steps"] == "2" and set(e) == set(a)
    for k in a:
        torch.testing.assert_close(a[k], e[k], atol=1e-6, rtol=0)
    return a, meta, exported


def save_metastyle_file(path, width: float = 0.125, n_res: int = 1, seed: int = 0) -> str:
    """A seeded adapted metastyle file (johnson's net, what `brushwork adapt` writes): the
    method ships no default weights, each painting gets its own. Returns the path."""
    import json
    from brushwork.methods.johnson import TransformerNet
    torch.manual_seed(seed)
    net = TransformerNet(width, 1, n_res)
    weights_io.save_weights(weights_io.prefixed_state("net", net), path,
                            metadata={"method": "metastyle", "config": json.dumps(net.config())})
    return str(path)
