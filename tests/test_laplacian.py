"""The Laplacian loss (Li et al. 2017) and gatys's laplacian_weight / laplacian_pool."""
import pytest
import torch

import brushwork
from brushwork.core import losses as L
from brushwork.errors import ControlError


@pytest.mark.parametrize("pool", [1, 4, 16])
def test_constant_image_has_zero_laplacian_and_loss_is_zero_at_the_content(pool):
    assert torch.equal(L.laplacian(torch.full((1, 3, 64, 80), 0.7), pool),
                       torch.zeros_like(L.laplacian(torch.full((1, 3, 64, 80), 0.7), pool)))
    x = torch.rand(1, 3, 64, 80, generator=torch.Generator().manual_seed(pool))
    assert float(L.laplacian_loss(x, L.laplacian(x, pool), pool)) == 0.0
    assert float(L.LaplacianLoss(x, [pool, 4])(x)) == 0.0
    assert float(L.LaplacianLoss(x, [pool])(x.flip(-1))) > 0


def test_known_value_and_pooling():
    i = torch.arange(6.0).view(6, 1).expand(6, 5)
    lap = L.laplacian((i ** 2)[None, None])  # -(f(i-1) + f(i+1) - 2 f(i)) = -2
    assert lap.shape == (1, 1, 4, 3) and torch.equal(lap, torch.full_like(lap, -2.0))
    x = torch.rand(1, 2, 16, 16)
    assert L.laplacian(x, 4).shape == (1, 2, 2, 2)


def test_gradcheck():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 2, 8, 10, generator=g, dtype=torch.float64, requires_grad=True)
    target = L.laplacian(torch.rand(1, 2, 8, 10, generator=g, dtype=torch.float64), 2)
    assert torch.autograd.gradcheck(lambda v: L.laplacian_loss(v, target, 2), (x,))


def test_the_loss_keeps_the_contents_laplacian(gatys, content_img, style_img):
    controls = {"steps": 10, "tol": 0, "precision": "fp32", "style_weight": 1e5}
    events = []
    base = gatys.stylize(content_img, [style_img], controls=controls)
    out = gatys.stylize(content_img, [style_img], callback=events.append,
                        controls={**controls, "laplacian_weight": 1e5,
                                  "laplacian_pool": "2,4"})
    target = L.laplacian(content_img * 255, 2)
    assert L.laplacian_loss(out * 255, target, 2) < 0.7 * L.laplacian_loss(base * 255, target, 2)
    assert "laplacian" in events[-1].losses


@pytest.mark.parametrize("bad", [{"laplacian_weight": -1.0}, {"laplacian_pool": "0"},
                                 {"laplacian_pool": ""}, {"laplacian_pool": []},
                                 {"laplacian_pool": "4,2.5"}])
def test_bad_values_are_refused(content_img, style_img, bad):
    with pytest.raises(ControlError, match="laplacian"):
        brushwork.stylize(content_img, style_img, method="gatys", size=None, steps=1, **bad)
