"""Pinned outputs: every method with its shipped weights on a fixed tiny image, and VGG19 itself.

The expected values were recorded from the shipped weight files; a change that alters any
method's output (a refactor, a new statistic, another resampling) fails here. Outputs are
8-bit images, so the tolerance is under one grey level (1/255 = 0.0039).
"""
import numpy as np
import pytest
import torch
from PIL import Image

import brushwork
import brushwork.api



@pytest.fixture(autouse=True)
def fp32(monkeypatch):
    """Pinned values are fp32 results: bf16 off, and no method instance made with bf16 reused."""
    monkeypatch.setenv("BRUSHWORK_BF16", "0")
    monkeypatch.setattr(brushwork.api, "_instances", {})

def _content():
    from skimage import data
    return Image.fromarray(data.chelsea()).resize((64, 48), Image.BICUBIC)


def _style():
    from skimage import data
    return Image.fromarray(data.coffee()).resize((48, 40), Image.BICUBIC)


# (case, controls, method options, expected mean, expected out[20:23, 30:33, :] flattened)
PINNED = [
    ("gatys", dict(steps=3), {},
     0.451878, [0.4431, 0.2275, 0.2471, 0.7137, 0.5529, 0.5490, 0.6824, 0.5294, 0.5255, 0.4039, 0.1765, 0.2039, 0.8078, 0.6353, 0.6235, 0.7569, 0.5843, 0.5725, 0.4431, 0.2118, 0.2039, 0.8627, 0.6706, 0.6275, 0.8353, 0.6588, 0.6039]),
    ("adain", {}, {},
     0.367306, [0.8078, 0.3804, 0.2471, 1.0000, 0.5961, 0.4431, 0.9804, 0.6157, 0.3098, 0.8431, 0.4902, 0.3137, 1.0000, 0.6275, 0.4078, 0.9765, 0.5451, 0.3059, 0.9608, 0.4980, 0.4157, 1.0000, 0.6157, 0.3922, 1.0000, 0.5843, 0.3373]),
    ("adain_small", {}, {"encoder": "small"},
     0.404400, [0.3686, 0.0863, 0.1294, 0.9020, 0.5843, 0.5333, 1.0000, 0.7647, 0.5843, 0.2549, 0.0000, 0.0353, 0.7647, 0.4275, 0.3882, 1.0000, 0.7176, 0.5373, 0.2471, 0.0000, 0.0157, 0.7098, 0.3608, 0.3059, 1.0000, 0.6941, 0.5255]),
    ("wct", {}, {},
     0.437376, [0.8745, 0.5451, 0.2863, 0.5647, 0.1294, 0.0000, 0.5412, 0.1098, 0.0000, 0.7216, 0.4118, 0.1882, 0.5490, 0.1333, 0.0000, 0.5765, 0.1529, 0.0000, 0.6314, 0.3137, 0.1451, 0.6549, 0.2275, 0.1137, 0.6588, 0.2510, 0.1098]),
    ("wct_small", {}, {"encoder": "small"},
     0.417956, [0.6745, 0.4392, 0.4314, 1.0000, 0.8000, 0.7176, 1.0000, 0.6392, 0.6275, 0.5843, 0.3490, 0.3451, 0.9294, 0.7137, 0.6275, 1.0000, 0.6588, 0.6118, 0.3608, 0.1490, 0.1412, 0.6941, 0.4706, 0.4157, 0.8706, 0.5569, 0.4745]),
    ("linear", {}, {},
     0.412187, [0.5451, 0.3686, 0.2157, 0.7961, 0.5137, 0.3725, 0.7137, 0.4353, 0.3490, 0.5216, 0.3529, 0.2431, 0.7961, 0.5020, 0.3765, 0.7529, 0.4588, 0.3529, 0.4471, 0.2824, 0.1961, 0.7137, 0.4510, 0.3373, 0.7725, 0.4706, 0.3686]),
    ("sanet", {}, {},
     0.345375, [0.1647, 0.0000, 0.0980, 0.1882, 0.0118, 0.1216, 0.3765, 0.1412, 0.1216, 0.1373, 0.0000, 0.1059, 0.2314, 0.0275, 0.1176, 0.3922, 0.1529, 0.1137, 0.2157, 0.0000, 0.1725, 0.3333, 0.1608, 0.2118, 0.4667, 0.2157, 0.2039]),
    ("styleswap", {}, {},
     0.461953, [0.8510, 0.3765, 0.2471, 0.8510, 0.3922, 0.2863, 0.8353, 0.4000, 0.2588, 0.8353, 0.4118, 0.2706, 0.8078, 0.3569, 0.2510, 0.7804, 0.3608, 0.2314, 0.7765, 0.3647, 0.2314, 0.7569, 0.3137, 0.2353, 0.7412, 0.3137, 0.2235]),
    ("adain_half", dict(strength=0.5, preserve_color="luminance"), {},
     0.366402, [0.4784, 0.3098, 0.2275, 0.6745, 0.5255, 0.4549, 0.6941, 0.5451, 0.4706, 0.4863, 0.3176, 0.2353, 0.6824, 0.5333, 0.4627, 0.7098, 0.5608, 0.4863, 0.5333, 0.3608, 0.2824, 0.7020, 0.5451, 0.4667, 0.7294, 0.5804, 0.4941]),
    ("wct_hist", dict(strength=0.7, preserve_color="histogram"), {},
     0.438591, [0.5137, 0.4000, 0.2863, 0.4118, 0.2667, 0.1529, 0.5373, 0.3216, 0.2039, 0.4627, 0.3412, 0.2471, 0.4353, 0.2706, 0.1608, 0.5373, 0.3451, 0.2157, 0.4863, 0.3176, 0.2431, 0.4706, 0.3176, 0.2118, 0.5529, 0.3804, 0.2471]),
    ("gatys_mix", dict(steps=3, style_loss="w2", tv_weight=100.0, preserve_color="luminance"), {},
     0.454709, [0.5255, 0.3569, 0.2745, 0.7333, 0.5843, 0.5137, 0.7255, 0.5765, 0.5020, 0.4471, 0.2784, 0.1961, 0.7059, 0.5569, 0.4863, 0.7373, 0.5882, 0.5137, 0.4314, 0.2588, 0.1804, 0.6941, 0.5373, 0.4588, 0.7333, 0.5843, 0.4980]),
    ("gatys_hist", dict(steps=3, hist_weight=1e3, mrf_weight=1e2), {},
     0.451642, [0.4392, 0.2235, 0.2392, 0.7373, 0.5686, 0.5608, 0.7137, 0.5490, 0.5490, 0.4039, 0.1843, 0.1961, 0.8078, 0.6353, 0.6157, 0.7569, 0.5804, 0.5725, 0.4510, 0.2392, 0.2078, 0.8353, 0.6549, 0.6039, 0.8039, 0.6275, 0.5804]),
    ("johnson", {}, {},
     0.438278, [0.1373, 0.2588, 0.3529, 0.2549, 0.4902, 0.4627, 0.2549, 0.3333, 0.3843, 0.0980, 0.2039, 0.3176, 0.2157, 0.4784, 0.4706, 0.2235, 0.3451, 0.4235, 0.1020, 0.2078, 0.3176, 0.2627, 0.4784, 0.5216, 0.2902, 0.3882, 0.5412]),
    ("cin", dict(style_id="1"), {},
     0.412935, [0.4118, 0.2627, 0.1529, 0.5373, 0.3843, 0.2275, 0.5647, 0.3686, 0.2235, 0.3647, 0.2471, 0.1373, 0.4588, 0.3725, 0.2196, 0.4941, 0.3725, 0.2471, 0.3725, 0.2235, 0.1333, 0.4549, 0.3804, 0.2275, 0.5098, 0.3843, 0.2941]),
    ("asma", dict(artist="2"), {},
     0.467650, [0.4000, 0.3373, 0.1725, 0.6471, 0.5373, 0.2784, 0.7804, 0.6471, 0.4078, 0.3647, 0.2745, 0.1373, 0.6118, 0.4902, 0.2431, 0.7882, 0.6588, 0.4196, 0.3843, 0.2471, 0.1294, 0.5765, 0.4706, 0.2392, 0.7647, 0.6510, 0.4510]),
]


@pytest.mark.parametrize("case,controls,options,mean,expected", PINNED,
                         ids=[p[0] for p in PINNED])
def test_pinned_output(case, controls, options, mean, expected):
    method = case.split("_")[0]
    styles = None if method in ("johnson", "cin", "asma") else _style()
    out = brushwork.stylize(_content(), styles, method=method, size=None, seed=0,
                            method_options=options, **controls)
    a = np.asarray(out).astype(np.float32) / 255
    assert a.shape == (48, 64, 3)
    np.testing.assert_allclose(a[20:23, 30:33, :].reshape(-1), expected, atol=2e-3)
    assert abs(float(a.mean()) - mean) < 1e-4


def test_pinned_vgg19_features():
    from brushwork.core.vgg import VGG19
    x = torch.from_numpy(np.array(_content())).permute(2, 0, 1)[None].float() / 255
    f = VGG19(last_layer="relu4_1")(x, ["relu1_1", "relu4_1"])
    got1 = f["relu1_1"][0, :3, 10:12, 10:12].reshape(-1)
    got4 = f["relu4_1"][0, :3, 2:4, 2:4].reshape(-1)
    torch.testing.assert_close(got1, torch.tensor([11.25504, 0.0, 29.29916, 15.09105, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(got4, torch.tensor([682.43433, 3804.4353, 655.6601, 4494.16602, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]), atol=1e-3, rtol=1e-4)
    assert abs(float(f["relu1_1"].mean()) - 18.604799) < 1e-4
    assert abs(float(f["relu4_1"].mean()) - 603.699402) < 1e-3
