"""The optimisation stylizer on tiny images: each control acts, determinism, errors."""
import pytest
import torch

from brushwork.core import losses as L, stats as S
from brushwork.core.color import rgb_to_yiq
from brushwork.core.stats import match_color
from brushwork.errors import ControlError
from brushwork.methods.gatys import plan_scales
from brushwork.core.device import has_bf16
from brushwork.core.vgg import VGG19

FAST = {"steps": 12, "fine_steps": 12, "tol": 0, "precision": "fp32", "style_weight": 1e5}


def run(g, content, styles, seed=0, weights=None, **controls):
    return g.stylize(content, styles, style_weights=weights, controls={**FAST, **controls},
                     seed=seed)


def diff(a, b):
    return (a - b).abs().mean().item()


@pytest.fixture(scope="module")
def base(gatys, content_img, style_img):
    return run(gatys, content_img, [style_img])


@pytest.fixture(scope="module")
def vgg():
    return VGG19(last_layer="relu5_1")


def style_gram_loss(vgg, img, style, mask=None):
    layers = ["relu1_1", "relu2_1", "relu3_1"]
    fi, fs = vgg(img, layers), vgg(style, layers)
    return sum(L.gram_loss(fi[k], S.gram(fs[k]), mask).item() for k in layers)


def test_shape_range_and_style_loss_goes_down(base, content_img, style_img, vgg):
    assert base.shape == content_img.shape
    assert 0 <= base.min() and base.max() <= 1
    assert style_gram_loss(vgg, base, style_img) < 0.5 * style_gram_loss(vgg, content_img, style_img)


def test_seeded_runs_are_identical(gatys, content_img, style_img):
    a = run(gatys, content_img, [style_img], seed=3, init="noise", steps=4)
    b = run(gatys, content_img, [style_img], seed=3, init="noise", steps=4)
    c = run(gatys, content_img, [style_img], seed=4, init="noise", steps=4)
    assert torch.equal(a, b)
    assert diff(a, c) > 1e-3


def test_progress_events(gatys, content_img, style_img):
    events = []
    run(gatys, content_img, [style_img], steps=5)
    gatys.stylize(content_img, [style_img], controls={**FAST, "steps": 5}, callback=events.append)
    steps = [e for e in events if e.kind == "step"]
    assert len(steps) == 5 and events[-1].kind == "done"
    assert {"content", "style", "total"} <= set(steps[0].losses)
    assert [e.step for e in steps] == [1, 2, 3, 4, 5]


def test_blend_modes_run_and_differ(gatys, content_img, style_img, style_img2):
    a = run(gatys, content_img, [style_img, style_img2], blend="gram-mix")
    b = run(gatys, content_img, [style_img, style_img2], blend="loss-mix")
    assert diff(a, b) > 0.01


def test_style_weights_move_toward_that_style(gatys, content_img, style_img, style_img2, vgg):
    to1 = run(gatys, content_img, [style_img, style_img2], weights=[0.9, 0.1])
    to2 = run(gatys, content_img, [style_img, style_img2], weights=[0.1, 0.9])
    assert style_gram_loss(vgg, to1, style_img) < style_gram_loss(vgg, to2, style_img)
    assert style_gram_loss(vgg, to2, style_img2) < style_gram_loss(vgg, to1, style_img2)


def test_luminance_preservation_keeps_content_chroma(gatys, content_img, style_img, base):
    out = run(gatys, content_img, [style_img], preserve_color="luminance")
    iq_out, iq_c = rgb_to_yiq(out)[:, 1:], rgb_to_yiq(content_img)[:, 1:]
    kept = (iq_out - iq_c).abs().mean()
    assert kept < 0.01  # clipping to [0, 1] aside, the chroma is the content's
    assert kept < 0.3 * (rgb_to_yiq(base)[:, 1:] - iq_c).abs().mean()  # without it: recoloured


def test_match_color_gives_reference_mean_and_covariance(content_img, style_img2):
    out = match_color(style_img2 * 0.6 + 0.2, content_img)

    def stats(x):
        f = x[0].reshape(3, -1).double()
        return f.mean(1), torch.cov(f, correction=0)
    (m1, c1), (m2, c2) = stats(out), stats(content_img)
    assert torch.allclose(m1, m2, atol=2e-3) and torch.allclose(c1, c2, atol=2e-3)


def test_histogram_colour_preservation_changes_output(gatys, content_img, style_img2):
    plain = run(gatys, content_img, [style_img2])
    out = run(gatys, content_img, [style_img2], preserve_color="histogram")
    assert diff(out, plain) > 0.01
    # the blue/yellow style no longer recolours the photo: per-pixel chroma stays near the content's
    iq = lambda x: rgb_to_yiq(x)[:, 1:]  # noqa: E731
    assert (iq(out) - iq(content_img)).abs().mean() < 0.6 * (iq(plain) - iq(content_img)).abs().mean()


def test_masks_apply_each_style_to_its_region(gatys, content_img, style_img, style_img2, vgg):
    h, w = content_img.shape[-2:]
    left = torch.zeros(1, 1, h, w)
    left[..., : w // 2] = 1
    out = run(gatys, content_img, [style_img, style_img2], masks=[left, 1 - left])
    l_half, r_half = out[..., : w // 2], out[..., w // 2:]
    # the brick style is red, the stripes blue/yellow: each half takes its style's colour
    assert l_half[:, 0].mean() - l_half[:, 2].mean() > r_half[:, 0].mean() - r_half[:, 2].mean()


def test_style_scale_changes_output(gatys, content_img, style_img, base):
    assert diff(run(gatys, content_img, [style_img], style_scale=2.0), base) > 0.01


@pytest.mark.parametrize("term,layers", [("tv", None), ("hist", "relu1_1,relu3_1"),
                                         ("mrf", "relu3_1")])
def test_extra_terms_act_and_their_loss_goes_down(gatys, content_img, style_img, base, vgg,
                                                  term, layers):
    extra = {f"{term}_weight": 3e4 if term == "tv" else 1e5}
    if layers:
        extra[f"{term}_layers"] = layers
    out = run(gatys, content_img, [style_img], **extra)
    assert diff(out, base) > 0.003
    if term == "tv":
        assert L.tv_loss(out) < L.tv_loss(base)
    else:
        layer = layers.split(",")[-1]
        fs = vgg(style_img, layer)[layer]
        mod = L.HistogramLoss(fs) if term == "hist" else L.MRFLoss(fs)
        assert mod(vgg(out, layer)[layer]) < mod(vgg(base, layer)[layer])


def test_style_depth_changes_output(gatys, content_img, style_img, base):
    assert diff(run(gatys, content_img, [style_img], style_depth=1), base) > 0.01


def test_alternative_style_losses_and_adam(gatys, content_img, style_img, vgg):
    for kw in ({"style_loss": "meanstd"}, {"style_loss": "w2"}):
        out = run(gatys, content_img, [style_img], **kw)
        assert style_gram_loss(vgg, out, style_img) < style_gram_loss(vgg, content_img, style_img)
    events = []
    gatys.stylize(content_img, [style_img], controls={**FAST, "optimizer": "adam", "steps": 30},
                  callback=events.append)
    totals = [e.losses["total"] for e in events if e.kind == "step"]
    assert totals[-1] < 0.7 * totals[0]


def test_coarse_to_fine_plan():
    assert plan_scales((288, 512), None) == [(144, 256), (288, 512)]
    assert plan_scales((100, 120), None) == [(100, 120)]
    assert len(plan_scales((1024, 2048), None)) == 4
    assert plan_scales((64, 64), 2) == [(32, 32), (64, 64)]


def test_coarse_to_fine_runs(gatys, content_img, style_img):
    events = []
    gatys.stylize(content_img, [style_img], controls={**FAST, "scales": 2, "steps": 3},
                  callback=events.append)
    sizes = [e.size for e in events if e.kind == "scale"]
    assert sizes == [(20, 28), (40, 56)]


def test_time_budget_stops_early(gatys, content_img, style_img):
    events = []
    out = gatys.stylize(content_img, [style_img], controls={**FAST, "steps": 10_000,
                        "time_budget": 0.5}, callback=events.append)
    assert out.shape == content_img.shape
    assert events[-1].step < 10_000 and events[-1].elapsed < 5


def test_errors(gatys, content_img, style_img):
    with pytest.raises(ControlError, match="does not support"):
        gatys.stylize(content_img, [style_img], controls={"strength": 0.5})
    with pytest.raises(ControlError, match="style weight"):
        gatys.stylize(content_img, [style_img], style_weights=[0.5, 0.5])
    with pytest.raises(ControlError, match="mask"):
        gatys.stylize(content_img, [style_img], controls={"masks": [torch.ones(1, 1, 4, 4)] * 2})
    with pytest.raises(ControlError, match="layer"):
        gatys.stylize(content_img, [style_img], controls={"style_layers": "relu9_1"})
    with pytest.raises(ControlError):
        gatys.stylize(content_img, [style_img], controls={"blend": "average"})
    with pytest.raises(ControlError, match="finite"):
        gatys.stylize(content_img, [style_img], controls={"style_weight": float("nan")})


@pytest.mark.skipif(not has_bf16(torch.device("cpu")), reason="no bf16 on this CPU")
def test_bf16_path_stylises_like_fp32(gatys, base, content_img, style_img, vgg):
    # bf16 runs VGG and the loss products (Gram) in bf16 with fp32 accumulation
    low = run(gatys, content_img, [style_img], precision="bf16")
    assert torch.isfinite(low).all() and low.shape == base.shape
    start = style_gram_loss(vgg, content_img, style_img)
    assert style_gram_loss(vgg, low, style_img) < 0.5 * start
    assert diff(low, base) < 0.05


@pytest.mark.skipif(not has_bf16(torch.device("cpu")), reason="no bf16 on this CPU")
@pytest.mark.parametrize("extra", [{"hist_weight": 1e3}, {"mrf_weight": 1e3},
                                   {"style_loss": "w2"}, {"style_loss": "meanstd"}])
def test_bf16_path_runs_every_loss(gatys, content_img, style_img, extra):
    out = run(gatys, content_img, [style_img], precision="bf16", steps=4, **extra)
    assert torch.isfinite(out).all() and out.shape == content_img.shape
    assert diff(out, content_img) > 1e-3


def test_lbfgs_that_runs_off_restarts_with_adam_and_still_stylises(gatys, content_img, style_img):
    """An L-BFGS step far out of range (here forced by a huge learning rate) restarts from the
    last good image with Adam: the optimisation goes on and the loss falls."""
    events = []
    out = gatys.stylize(content_img, [style_img], seed=0, callback=events.append,
                        controls={**FAST, "steps": 12, "lr": 1e6, "tol": 0})
    totals = [e.losses["total"] for e in events if e.kind == "step"]
    assert len(totals) == 12 and totals[-1] < 0.9 * totals[0]
    assert torch.isfinite(out).all() and (out - content_img).abs().mean() > 1e-3


# ------------------------------------------------------------------ start images, schedule
def test_init_method_starts_from_that_methods_output(gatys, content_img, style_img):
    from brushwork.methods.adain import AdaIN
    expected = AdaIN().stylize(content_img, [style_img], seed=0)
    out = gatys.stylize(content_img, [style_img], seed=0, controls={**FAST, "init": "adain",
                                                                    "steps": 0})
    assert torch.equal(out, expected.clamp(0, 1))
    events = []
    gatys.stylize(content_img, [style_img], seed=0, callback=events.append,
                  controls={**FAST, "init": "adain", "steps": 1})
    first = next(e for e in events if e.kind == "scale")
    assert torch.equal(first.image, expected.clamp(0, 1))


def test_init_content_noise_and_path_still_start_there(gatys, content_img, style_img, tmp_path):
    from conftest import save_png
    out = gatys.stylize(content_img, [style_img], controls={**FAST, "init": "content",
                                                            "steps": 0})
    assert torch.equal(out, content_img)
    noise = gatys.stylize(content_img, [style_img], seed=1, controls={**FAST, "init": "noise",
                                                                      "steps": 0})
    assert diff(noise, content_img) > 0.1
    path = save_png(style_img, tmp_path / "start.png")
    start = gatys.stylize(content_img, [style_img], controls={**FAST, "init": str(path),
                                                              "steps": 0})
    assert start.shape == content_img.shape and diff(start, content_img) > 0.05


def test_unknown_init_is_refused_before_any_work(gatys, content_img, style_img):
    with pytest.raises(ControlError, match="init: 'nonesuch' is not content, noise, a method"):
        gatys.stylize(content_img, [style_img], controls={"init": "nonesuch"})
    with pytest.raises(ControlError, match="adain"):  # the message lists the methods
        gatys.stylize(content_img, [style_img], controls={"init": "gatys"})
    with pytest.raises(ControlError):  # a method with built-in styles cannot start it
        gatys.stylize(content_img, [style_img], controls={"init": "johnson"})


def test_cli_unknown_init_method_exits_2_and_writes_nothing(content_img, style_img, tmp_path,
                                                            capsys):
    from conftest import save_png
    from brushwork.cli import main
    c, s = save_png(content_img, tmp_path / "c.png"), save_png(style_img, tmp_path / "s.png")
    out = tmp_path / "o.png"
    code = main(["stylize", str(c), "-s", str(s), "-o", str(out), "--init", "nonesuch",
                 "--size", "32"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("brushwork: error:") and err.count("\n") == 1, err
    assert "nonesuch" in err and not out.exists()


def test_cli_init_method_end_to_end(content_img, style_img, tmp_path):
    from conftest import save_png
    from brushwork.cli import main
    c, s = save_png(content_img, tmp_path / "c.png"), save_png(style_img, tmp_path / "s.png")
    out = tmp_path / "o.png"
    assert main(["stylize", str(c), "-s", str(s), "-o", str(out), "--init", "adain",
                 "--steps", "2", "--size", "32", "--precision", "fp32", "--quiet"]) == 0
    assert out.exists()


def test_first_scale_and_fine_steps(gatys, content_img, style_img):
    events = []
    gatys.stylize(content_img, [style_img], callback=events.append,
                  controls={**FAST, "scales": 3, "steps": 5, "fine_steps": 2})
    per_scale = [sum(1 for e in events if e.kind == "step" and e.scale == k) for k in range(3)]
    assert per_scale == [5, 2, 2]
    assert events[-1].step == events[-1].total == 9


def test_history_size_acts(gatys, content_img, style_img):
    a = run(gatys, content_img, [style_img], steps=8, history_size=1)
    b = run(gatys, content_img, [style_img], steps=8, history_size=50)
    assert diff(a, b) > 1e-4
    with pytest.raises(ControlError):
        run(gatys, content_img, [style_img], history_size=0)


