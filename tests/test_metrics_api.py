import pytest
import torch
from PIL import Image

import brushwork
from brushwork.eval import metrics
from brushwork.cli.demo import swirl_painting


@pytest.fixture(scope="module")
def enc():
    return metrics.metric_encoder()


def test_unstylised_content_scores(content_img, style_img, enc):
    assert metrics.content_distance(content_img, content_img, enc) == pytest.approx(0.0, abs=1e-9)
    d = metrics.style_distances(content_img, style_img, content_img, enc)
    assert set(d) == {"gram", "meanstd", "frechet"}
    assert all(v == pytest.approx(1.0, rel=1e-5) for v in d.values())
    assert metrics.ssim(content_img, content_img) == pytest.approx(1.0)


def test_style_image_itself_is_closest(content_img, style_img, enc):
    s = torch.nn.functional.interpolate(style_img, size=content_img.shape[-2:], mode="bilinear")
    d = metrics.style_distances(s, style_img, content_img, enc)
    assert all(v < 0.2 for v in d.values())
    assert metrics.content_distance(s, content_img, enc) > 0.1


def test_stylised_output_moves_toward_style(content_img, style_img, enc):
    out = brushwork.stylize(content_img, style_img, size=None, steps=10, precision="fp32",
                            style_weight=1e5, tol=0)
    assert isinstance(out, Image.Image) and out.size == (56, 40)
    r = metrics.evaluate(out, content_img, style_img, enc)
    assert r["gram"] < 0.8 and r["content"] > 0 and r["ssim"] < 1


def test_api_accepts_paths_pil_and_unknown_control_raises(tmp_path, content_img, style_img):
    from conftest import save_png
    c = save_png(content_img, tmp_path / "c.png")
    out = brushwork.stylize(str(c), Image.open(save_png(style_img, tmp_path / "s.png")), size=24,
                            steps=2, precision="fp32")
    assert max(out.size) == 24
    with pytest.raises(brushwork.ControlError):
        brushwork.stylize(str(c), str(c), size=24, strength=0.3)


def test_demo_style_is_deterministic():
    a, b = swirl_painting(64, seed=1), swirl_painting(64, seed=1)
    assert a.tobytes() == b.tobytes() and a.size == (64, 64)
