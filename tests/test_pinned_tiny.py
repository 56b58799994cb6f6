"""Pinned outputs of the feed-forward architectures on tiny seeded weights (no shipped file):
a change to an encoder, decoder, transform or the shared skeleton that alters results fails
here even where the shipped weights would hide it. Recorded with the seeded files of
``_arbitrary_util.tiny_weight_files`` on fixed synthetic images."""
import pytest
import torch

import brushwork.api

from brushwork.api import get_stylizer

from _arbitrary_util import tiny_weight_files


def _img(h, w, seed):
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    base = torch.stack([yy, xx, (1 - yy) * xx])[None]
    return (0.6 * base + 0.4 * torch.rand(1, 3, h, w, generator=g)).clamp(0, 1)



@pytest.fixture(autouse=True)
def fp32(monkeypatch):
    """Pinned values are fp32 results: bf16 off, and no method instance made with bf16 reused."""
    monkeypatch.setenv("BRUSHWORK_BF16", "0")
    monkeypatch.setattr(brushwork.api, "_instances", {})

@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return tiny_weight_files(tmp_path_factory.mktemp("tiny"))


# (case, method, weight file, options, expected mean, expected out[0, :, 20:22, 24:26])
PINNED = [
    ("adain", "adain", "adain3", {}, 0.3262826,
     [0.25124, 0.28359, 0.66689, 0.44040, 0.07965, 0.00000, 0.20006, 0.00000, 0.00000, 0.00000, 0.00000, 0.00000]),
    ("adain_small", "adain", "adain_small", {'encoder': 'small'}, 0.0146496,
     [0.00000, 0.00000, 0.00000, 0.00000, 0.04173, 0.04173, 0.04173, 0.04173, 0.00000, 0.00000, 0.00000, 0.00000]),
    ("wct", "wct", "wct", {}, 0.3208607,
     [0.31730, 0.00000, 0.32804, 0.00000, 0.00000, 0.00000, 0.00000, 0.00000, 0.60915, 0.72694, 0.57014, 0.20361]),
    ("wct_small", "wct", "distill", {'encoder': 'small'}, 0.2306941,
     [0.00000, 0.00000, 0.00000, 0.00000, 0.69144, 0.69144, 0.69144, 0.69144, 0.00000, 0.00000, 0.00000, 0.00000]),
    ("linear", "linear", "linear", {}, 0.0175459,
     [0.00549, 0.00549, 0.00549, 0.00549, 0.00000, 0.00000, 0.00000, 0.00000, 0.00000, 0.00000, 0.00000, 0.00000]),
    ("sanet", "sanet", "sanet", {}, 0.5344650,
     [1.00000, 1.00000, 1.00000, 1.00000, 0.00000, 0.00000, 0.00000, 0.00000, 1.00000, 1.00000, 1.00000, 1.00000]),
    ("styleswap", "styleswap", "wct", {}, 0.2358091,
     [0.00000, 0.03203, 0.00000, 0.18803, 0.00000, 0.00000, 0.00000, 0.00000, 0.31494, 0.32132, 0.37430, 0.39781]),
]


@pytest.mark.parametrize("case,method,file,options,mean,expected", PINNED,
                         ids=[p[0] for p in PINNED])
def test_tiny_weights_pinned(files, case, method, file, options, mean, expected):
    out = get_stylizer(method, "cpu", weights=str(files[file]), **options).stylize(
        _img(40, 48, 0), [_img(36, 44, 1)], seed=0)
    assert out.shape == (1, 3, 40, 48)
    torch.testing.assert_close(out[0, :, 20:22, 24:26].reshape(-1), torch.tensor(expected),
                               atol=2e-5, rtol=0)
    assert abs(float(out.mean()) - mean) < 2e-6
