"""AdaIN method with a tiny random decoder: shape, range, controls, weights and errors."""
import pytest
import torch

from brushwork.core import blocks
from brushwork.core import weights as weights_io
from brushwork.errors import BrushworkError, ControlError
from brushwork.methods.adain import AdaIN

from _arbitrary_util import check_weights_and_masks, image, save_tiny


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory):
    path = tmp_path_factory.mktemp("w") / "adain_tiny.safetensors"
    torch.manual_seed(0)
    save_tiny(path, "adain", {"decoder": blocks.decoder(4, width=1 / 32)},
              {"level": "4", "width": str(1 / 32), "encoder": "vgg"})
    return path


@pytest.fixture(scope="module")
def model(tiny_weights):
    return AdaIN(weights=tiny_weights, bf16=False)


def test_shape_and_range(model):
    content = image(37, 45)  # not a multiple of 8
    out = model.stylize(content, [image(32, 32, seed=1)])
    assert out.shape == (1, 3, 37, 45)
    assert out.min() >= 0 and out.max() <= 1 and torch.isfinite(out).all()


@pytest.mark.parametrize("controls", [
    {"strength": 0.3},
    {"preserve_color": "luminance"},
    {"preserve_color": "histogram"},
    {"style_scale": 0.5},
])
def test_each_control_changes_output(model, controls):
    content, style = image(40, 48), image(40, 40, seed=2)
    base = model.stylize(content, [style])
    assert not torch.allclose(base, model.stylize(content, [style], controls=controls), atol=1e-4)


def test_style_weights_and_masks_change_output(model):
    content, s1, s2 = image(40, 48), image(40, 40, seed=3), 1 - image(40, 40, seed=4)
    left = check_weights_and_masks(model, content, s1, s2, ([0.9, 0.1], [0.1, 0.9]), atol=1e-4)
    with pytest.raises(ControlError):
        model.stylize(content, [s1, s2], controls={"masks": [left]})


def test_unsupported_control_raises(model):
    with pytest.raises(ControlError, match="does not support"):
        model.stylize(image(), [image(seed=1)], controls={"content_weight": 2.0})
    with pytest.raises(ControlError):
        model.stylize(image(), [image(seed=1)], controls={"strength": 1.5})


def test_weights_round_trip_and_checksum(tiny_weights, tmp_path):
    sha = weights_io.sha256_file(tiny_weights)
    state = weights_io.load_weights(tiny_weights, sha256=sha)[0]
    dec = blocks.decoder(4, width=1 / 32)
    weights_io.load_prefixed(dec, "decoder", state)
    with pytest.raises(BrushworkError, match="sha256 mismatch"):
        weights_io.load_weights(tiny_weights, sha256="0" * 64)[0]
    copy = tmp_path / "half.safetensors"
    sha2 = weights_io.save_weights(state, copy, fp16=True, metadata={"method": "adain"})
    assert weights_io.sha256_file(copy) == sha2
    back = weights_io.load_weights(copy)[0]
    assert all(torch.allclose(back[k], state[k], atol=1e-2, rtol=1e-2) for k in state)


def test_wrong_or_missing_weights_raise(tmp_path):
    with pytest.raises(BrushworkError, match="not found"):
        AdaIN(weights=tmp_path / "nope.safetensors")
    other = tmp_path / "other.safetensors"
    save_tiny(other, "wct", {"decoder": blocks.decoder(4, width=1 / 32)})
    with pytest.raises(BrushworkError, match="for method 'wct'"):
        AdaIN(weights=other)
    wrong_width = tmp_path / "wrong.safetensors"
    save_tiny(wrong_width, "adain", {"decoder": blocks.decoder(4, width=1 / 16)},
              {"width": str(1 / 32)})
    with pytest.raises(BrushworkError, match="do not match"):
        AdaIN(weights=wrong_width)


def test_shipped_file_checked_against_manifest(tiny_weights, tmp_path, monkeypatch):
    import json
    import shutil

    from brushwork.core import weights as shipped

    shutil.copy(tiny_weights, tmp_path / "adain_vgg.safetensors")
    manifest = tmp_path / "MANIFEST.json"
    monkeypatch.setattr(shipped, "WEIGHTS_DIR", tmp_path.resolve())
    monkeypatch.setattr(shipped, "MANIFEST", manifest)
    row = {"file": "adain_vgg.safetensors", "sha256": weights_io.sha256_file(tiny_weights)}
    manifest.write_text(json.dumps({"weights": [row]}))
    assert AdaIN(bf16=False).stylize(image(), [image(seed=1)]).shape == (1, 3, 40, 48)
    manifest.write_text(json.dumps({"weights": [{**row, "sha256": "f" * 64}]}))
    with pytest.raises(BrushworkError, match="sha256 mismatch"):
        AdaIN(bf16=False)


def test_shipped_adain_weights_load_and_run():
    from brushwork.core import weights as shipped

    if shipped.shipped_path("adain_vgg.safetensors") is None:
        pytest.skip("no shipped adain weights in this checkout")
    model = AdaIN(bf16=False)  # sha256 checked against MANIFEST.json
    out = model.stylize(image(48, 64), [image(64, 64, seed=5)])
    assert out.shape == (1, 3, 48, 64) and torch.isfinite(out).all()
    assert out.std() > 0.01  # not a constant image
