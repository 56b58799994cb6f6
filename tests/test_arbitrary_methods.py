"""wct, linear, sanet, styleswap and the small encoder with tiny random networks."""
import pytest
import torch

from brushwork.core import blocks
from brushwork.errors import BrushworkError, ControlError
from brushwork.methods import METHODS
from brushwork.methods.adain import AdaIN
from brushwork.methods.linear import Linear
from brushwork.methods.sanet import SANet
from brushwork.methods.styleswap import StyleSwap
from brushwork.methods.wct import WCT

from _arbitrary_util import check_weights_and_masks, image, tiny_weight_files

W = 1 / 32  # tiny decoders: 2-16 channels


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return tiny_weight_files(tmp_path_factory.mktemp("weights"))


@pytest.fixture(scope="module")
def models(files):
    return {
        "wct": WCT(weights=files["wct"], bf16=False),
        "wct_small": WCT(weights=files["distill"], encoder="small", bf16=False),
        "adain_small": AdaIN(weights=files["adain_small"], encoder="small", bf16=False),
        "adain3": AdaIN(weights=files["adain3"], bf16=False),
        "linear": Linear(weights=files["linear"], bf16=False),
        "sanet": SANet(weights=files["sanet"], bf16=False),
        "styleswap": StyleSwap(weights=files["wct"], bf16=False),
    }


NAMES = ["wct", "wct_small", "adain_small", "adain3", "linear", "sanet", "styleswap"]


@pytest.mark.parametrize("name", NAMES)
def test_shape_and_range(models, name):
    out = models[name].stylize(image(37, 42), [image(32, 36, seed=1)])
    assert out.shape == (1, 3, 37, 42)
    assert out.min() >= 0 and out.max() <= 1 and torch.isfinite(out).all()


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("controls", [{"strength": 0.2}, {"preserve_color": "luminance"},
                                      {"style_scale": 0.5}])
def test_controls_change_output(models, name, controls):
    content, style = image(40, 40), image(48, 48, seed=2)
    base = models[name].stylize(content, [style])
    assert not torch.allclose(base, models[name].stylize(content, [style], controls=controls),
                              atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_weights_and_masks_change_output(models, name):
    check_weights_and_masks(models[name], image(40, 40), image(40, 40, seed=3),
                            1 - image(40, 40, seed=4))


@pytest.mark.parametrize("name", NAMES)
def test_unsupported_control_raises(models, name):
    with pytest.raises(ControlError):
        models[name].stylize(image(), [image(seed=1)], controls={"tv_weight": 1.0})


def test_wct_levels_control(models):
    m = models["wct"]
    full = m.stylize(image(), [image(seed=1)])
    one = m.stylize(image(), [image(seed=1)], controls={"levels": "3"})
    assert not torch.allclose(full, one)
    with pytest.raises(BrushworkError, match="no decoder for level"):
        m.stylize(image(), [image(seed=1)], controls={"levels": "5"})


def test_styleswap_patch_size(models):
    m = models["styleswap"]
    assert not torch.allclose(m.stylize(image(), [image(seed=1)]),
                              m.stylize(image(), [image(seed=1)], controls={"patch_size": 5}))
    with pytest.raises(BrushworkError, match="odd"):
        m.stylize(image(), [image(seed=1)], controls={"patch_size": 4})


@pytest.mark.parametrize("cls", [WCT, Linear, SANet, StyleSwap])
def test_missing_shipped_weights_is_a_clear_error(cls, monkeypatch, tmp_path):
    from brushwork.core import weights as shipped

    monkeypatch.setattr(shipped, "WEIGHTS_DIR", tmp_path)
    with pytest.raises(BrushworkError, match="no shipped weights.*brushwork train"):
        cls()


def test_methods_registered():
    for name in ("adain", "wct", "linear", "sanet", "styleswap"):
        assert name in METHODS and METHODS[name].summary


# methods (and encoder) whose default weights ship in the package
SHIPPED = ["adain", "wct", "styleswap", "linear", "sanet", "adain:small", "wct:small"]


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_weights_load_checked_and_stylise(name):
    from brushwork.methods import METHODS

    name, _, encoder = name.partition(":")
    options = {"encoder": encoder} if encoder else {}
    model = METHODS[name](bf16=False, **options)  # default file, sha256 checked (MANIFEST.json)
    g = torch.Generator().manual_seed(0)
    content = torch.rand(1, 3, 48, 64, generator=g) * 0.2 + 0.4   # grey-ish photo
    style = torch.zeros(1, 3, 64, 64)
    style[:, 2] = torch.rand(1, 64, 64, generator=g) * 0.5 + 0.5  # a blue painting
    out = model.stylize(content, [style], seed=0)
    assert out.shape == (1, 3, 48, 64) and torch.isfinite(out).all()
    assert 0 <= out.min() and out.max() <= 1
    # the output moves toward the style's colours: more blue than red, unlike the content
    assert out[:, 2].mean() - out[:, 0].mean() > 0.1 + (content[:, 2].mean() - content[:, 0].mean())


def test_sanet_strength_default_comes_from_the_weight_file(tmp_path):
    """The shipped file says 0.9; an explicit strength wins; a file without it means 1.0."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file
    from brushwork.core.weights import WEIGHTS_DIR
    shipped = SANet(bf16=False)
    assert shipped.control_defaults["strength"] == 0.9
    g = torch.Generator().manual_seed(0)
    content, style = torch.rand(1, 3, 32, 32, generator=g), torch.rand(1, 3, 32, 32, generator=g)
    default = shipped.stylize(content, [style])
    assert torch.equal(default, shipped.stylize(content, [style], controls={"strength": 0.9}))
    assert not torch.equal(default, shipped.stylize(content, [style], controls={"strength": 1.0}))
    path = WEIGHTS_DIR / "sanet_vgg.safetensors"
    with safe_open(str(path), "pt") as f:
        meta = {k: v for k, v in f.metadata().items() if k != "default_strength"}
    plain = tmp_path / "plain.safetensors"
    save_file(load_file(str(path)), str(plain), metadata=meta)
    assert SANet(weights=plain, bf16=False).control_defaults["strength"] == 1.0
    meta["default_strength"] = "1.5"
    save_file(load_file(str(path)), str(plain), metadata=meta)
    with pytest.raises(BrushworkError, match="default_strength"):
        SANet(weights=plain, bf16=False)


def test_distill_pruned_init_is_vgg_itself_at_full_width():
    """Kept filters copied from VGG19 with the first layer rewritten for RGB [-1, 1] input: at
    width 1 the student is VGG19 up to one global scale (away from the zero-padded border)."""
    from brushwork.train.distill import prune_from_vgg
    from brushwork.core.vgg import VGG19
    x = torch.rand(2, 3, 40, 40, generator=torch.Generator().manual_seed(0))
    student = blocks.SmallEncoder(2, 1.0)
    prune_from_vgg(student, x, target_rms=3.0)
    layers = ["relu1_1", "relu2_1"]
    with torch.no_grad():
        s, t = student(x, layers), VGG19(last_layer="relu2_1")(x, layers)
    assert s["relu2_1"].pow(2).mean().sqrt().item() == pytest.approx(3.0, rel=1e-4)
    scale = s["relu2_1"].pow(2).mean().sqrt() / t["relu2_1"].pow(2).mean().sqrt()
    for name, m in (("relu1_1", 1), ("relu2_1", 3)):
        a, b = s[name][..., m:-m, m:-m], t[name][..., m:-m, m:-m] * scale
        assert torch.allclose(a, b, rtol=1e-3, atol=1e-3 * b.abs().max().item())


def test_distill_pruned_init_keeps_the_most_active_filters():
    from brushwork.train.distill import prune_from_vgg
    from brushwork.core.vgg import VGG19
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    student = blocks.SmallEncoder(1, 0.25)  # 16 of relu1_1's 64 filters
    prune_from_vgg(student, x)
    with torch.no_grad():
        t = VGG19(last_layer="relu1_1")(x, "relu1_1")["relu1_1"]
        s = student(x, "relu1_1")["relu1_1"][..., 1:-1, 1:-1]
    keep = t.mean((0, 2, 3)).topk(16).indices.sort().values
    t = t[:, keep, 1:-1, 1:-1]
    on = t > 1e-2
    gain = (s[on] / t[on]).median()  # one scale for all kept filters (float32 rounding: atol)
    assert torch.allclose(s[on], gain * t[on], rtol=1e-3, atol=1e-5)
