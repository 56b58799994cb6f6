"""The flexible convolutional solver: the objective, the unrolled blocks, run-time changes of
the loss, the method, the trainer, the CLI (tiny seeded solvers, 32-48 px images)."""

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from brushwork.cli import main
from brushwork.core import blocks
from brushwork.core.stats import gram
from brushwork.core.vgg import VGG19
from brushwork.core.weights import prefixed_state, resolve_weights, save_weights
from brushwork.errors import BrushworkError, ControlError
from brushwork.methods import fcs as M
from brushwork.methods.fcs import FCS, Solver
from brushwork.train import fcs as trainer

from _arbitrary_util import (check_resume_and_export, cli_pair, skimage_photo, trainer_args,
                             assert_cli_refused, assert_pinned_tiny, check_weights_and_masks,
                             image, lively, save_tiny, training_folders)


def _save(path, solver, **meta):
    md = {"method": "fcs", "blocks": str(len(solver.blocks)),
          "width": str(solver.blocks[0].conv_in.out_channels), **meta}
    save_weights(prefixed_state("solver", solver), path, metadata=md)
    return path


def _lively_solver(blocks=2, width=4, seed=0):
    """A seeded solver whose convolutions are random (small output convolutions), so the
    learned part of every block moves the image."""
    torch.manual_seed(seed)
    s = Solver(blocks, width)
    for b in s.blocks:
        lively(b)
        b.conv_out.weight.data *= 0.02
        b.conv_out.bias.data *= 0.1
    return s


def _gradient_solver(blocks=1, width=4, step=0.05):
    """A solver whose update is the pure normalised gradient step (zero convolutional part)."""
    s = Solver(blocks, width)
    for b in s.blocks:
        b.step.data.fill_(step)
    return s


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("fcs")
    return {"tiny": _save(d / "fcs_tiny.safetensors", _lively_solver()),
            "zero": _save(d / "fcs_zero.safetensors", _gradient_solver(2, step=0.0)),
            "grad": _save(d / "fcs_grad.safetensors", _gradient_solver(1, step=0.05))}


@pytest.fixture(scope="module")
def model(files):
    return FCS(weights=str(files["tiny"]), bf16=False)


@pytest.fixture(scope="module")
def grad_model(files):
    return FCS(weights=str(files["grad"]), bf16=False)


# ----------------------------------------------------------------------------- known values
def test_zero_update_gives_the_content_back(files):
    m = FCS(weights=str(files["zero"]), bf16=False)
    content, style = image(40, 48, 0), image(32, 40, 1)
    out = m.stylize(content, [style])
    torch.testing.assert_close(out, content, atol=1e-6, rtol=0)
    torch.testing.assert_close(m.stylize(content, [style], controls={"iterations": 7}), content,
                               atol=1e-6, rtol=0)


def test_gradient_scale_is_the_running_maximum_rms():
    g = torch.zeros(2, 3, 4, 4)
    g[0] = 2.0
    g[1, 0] = 3.0  # RMS sqrt(9 / 3) = sqrt(3)
    first = M.gradient_scale(g)
    torch.testing.assert_close(first.flatten(), torch.tensor([2.0, 3.0 ** 0.5]))
    smaller = M.gradient_scale(g * 0.5, first)
    torch.testing.assert_close(smaller, first)
    larger = M.gradient_scale(g * torch.tensor([4.0, 0.1]).view(2, 1, 1, 1), first)
    torch.testing.assert_close(larger.flatten(), torch.tensor([8.0, 3.0 ** 0.5]))
    assert float(M.gradient_scale(torch.zeros(1, 3, 2, 2))) == pytest.approx(1e-6)


def _manual_loss(enc, x, content, style, cw=1.0, sw=1e3, lw=(0.2,) * 5):
    """The Gatys loss written out: relu4_2 MSE + layer-weighted Gram MSEs."""
    layers = list(M.STYLE_LAYERS) + ["relu4_2"]
    fx, fc, fs = enc(x, layers), enc(content, layers), enc(style, layers)
    loss = cw * F.mse_loss(fx["relu4_2"], fc["relu4_2"])
    for w, layer in zip(lw, M.STYLE_LAYERS):
        loss = loss + sw * w * F.mse_loss(gram(fx[layer]), gram(fs[layer]))
    return loss


def test_one_gradient_step_block_is_one_manual_gradient_step(grad_model):
    content, style = image(32, 40, 0), image(32, 40, 1)
    enc = VGG19(last_layer="relu5_1")
    # start away from the content so the content term's gradient is not zero
    start = (content * 0.8 + 0.1).detach()
    x = start.clone().requires_grad_(True)
    g, = torch.autograd.grad(_manual_loss(enc, x, content, style), x)
    expected = start - 0.05 * g / g.pow(2).mean().sqrt()
    obj = M.Objective(grad_model.encoder, content, [style], [1.0], None, [0.2] * 5, 1.0, 1e3)
    got, logs = grad_model.solver.run(start.clone(), obj)
    torch.testing.assert_close(got, expected, atol=2e-5, rtol=0)
    assert logs[0]["total"] == pytest.approx(float(_manual_loss(enc, start, content, style)),
                                             rel=1e-4)
    # the method: the same step from the content image (style term only there)
    out = grad_model.stylize(content, [style])
    x = content.clone().requires_grad_(True)
    g, = torch.autograd.grad(_manual_loss(enc, x, content, style), x)
    torch.testing.assert_close(out, (content - 0.05 * g / g.pow(2).mean().sqrt()).clamp(0, 1),
                               atol=2e-5, rtol=0)


def test_zero_style_weight_leaves_only_the_content_term(model, grad_model):
    content = image(40, 48, 0)
    s1, s2 = image(32, 40, 1), image(40, 32, 5)
    # at the content image the content gradient is 0: a gradient step stays there
    out = grad_model.stylize(content, [s1], controls={"style_weight": 0})
    torch.testing.assert_close(out, content, atol=1e-6, rtol=0)
    # the style images no longer matter
    a = model.stylize(content, [s1], controls={"style_weight": 0})
    b = model.stylize(content, [s2], controls={"style_weight": 0})
    torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
    assert not torch.allclose(model.stylize(content, [s1]), model.stylize(content, [s2]),
                              atol=1e-3)


def test_layer_weights_and_masks_change_the_output_without_retraining(model):
    content, style = image(40, 48, 0), image(32, 40, 1)
    base = model.stylize(content, [style])
    torch.testing.assert_close(model.stylize(content, [style], controls={
        "style_layer_weights": [0.2] * 5}), base)  # the default: equal weights
    shallow = model.stylize(content, [style], controls={"style_layer_weights": [1, 1, 0, 0, 0]})
    deep = model.stylize(content, [style], controls={"style_layer_weights": [0, 0, 0, 1, 1]})
    assert not torch.allclose(shallow, base, atol=1e-3)
    assert not torch.allclose(shallow, deep, atol=1e-3)
    s2 = image(40, 32, 5)
    check_weights_and_masks(model, content, style, s2, full_mask=True)


def test_iterations_run_more_or_fewer_blocks(model):
    content, style = image(40, 48, 0), image(32, 40, 1)
    events = []
    two = model.stylize(content, [style], callback=events.append)
    steps = [e for e in events if e.kind == "step"]
    assert [e.step for e in steps] == [1, 2] and all(e.total == 2 for e in steps)
    assert all("total" in e.losses and e.image is not None for e in steps)
    assert events[-1].kind == "done"
    torch.testing.assert_close(model.stylize(content, [style], controls={"iterations": 2}), two)
    one = model.stylize(content, [style], controls={"iterations": 1})
    four = model.stylize(content, [style], controls={"iterations": 4})
    assert not torch.allclose(one, two, atol=1e-3) and not torch.allclose(four, two, atol=1e-3)


def test_more_iterations_lower_the_loss_of_a_gradient_solver(files, tmp_path):
    path = _save(tmp_path / "g.safetensors", _gradient_solver(1, step=0.02))
    m = FCS(weights=str(path), bf16=False)
    content, style = image(40, 48, 0), image(32, 40, 1)
    totals = {}
    for n in (1, 6):
        events = []
        m.stylize(content, [style], controls={"iterations": n}, callback=events.append)
        totals[n] = [e.losses["total"] for e in events if e.kind == "step"]
    assert totals[6][-1] < totals[6][1] < totals[6][0] == totals[1][0]


def test_pinned_tiny_output(model):
    assert_pinned_tiny(model, PINNED_TINY, PINNED_TINY_MEAN)


PINNED_TINY = [0.48146, 0.56028, 0.52104, 0.48331, 0.7362, 0.70416, 0.71511, 0.72671, 0.2602,
               0.26266, 0.38802, 0.38252]
PINNED_TINY_MEAN = 0.481874


def test_metadata_sets_the_defaults(tmp_path):
    path = _save(tmp_path / "w.safetensors", _lively_solver(), style_weight="10",
                 content_weight="2", style_layer_weights="1,0,0,0,0")
    m = FCS(weights=str(path), bf16=False)
    content, style = image(32, 40, 0), image(32, 40, 1)
    torch.testing.assert_close(m.stylize(content, [style]), m.stylize(content, [style], controls={
        "style_weight": 10, "content_weight": 2, "style_layer_weights": [1, 0, 0, 0, 0]}))


# ----------------------------------------------------------------------------- bad input
def test_bad_controls_and_files_are_refused(model, tmp_path):
    content, style = image(32, 40, 0), image(32, 40, 1)
    with pytest.raises(ControlError, match="5 style layers"):
        model.stylize(content, [style], controls={"style_layer_weights": [1, 1]})
    with pytest.raises(ControlError, match="does not support"):
        model.stylize(content, [style], controls={"strength": 0.5})
    with pytest.raises(ControlError, match="nothing to solve"):
        model.stylize(content, [style], controls={"style_weight": 0, "content_weight": 0})
    with pytest.raises(ControlError):
        model.stylize(content, [style], controls={"iterations": 0})
    other = tmp_path / "adain.safetensors"
    save_tiny(other, "adain", {"decoder": blocks.decoder(3, 1 / 16)}, {"width": "0.0625",
                                                                      "level": "3"})
    with pytest.raises(BrushworkError, match="not 'fcs'"):
        FCS(weights=str(other))
    with pytest.raises(BrushworkError, match="not found"):
        FCS(weights=str(tmp_path / "missing.safetensors"))
    bad = tmp_path / "bad.safetensors"
    save_weights(prefixed_state("solver", Solver(1, 4)), bad, metadata={"method": "fcs"})
    with pytest.raises(BrushworkError, match="blocks"):
        FCS(weights=str(bad))


def test_missing_shipped_file_names_the_trainer():
    try:
        resolve_weights(None, M.DEFAULT_FILE, M.TRAIN_HINT)
    except BrushworkError as e:
        assert "brushwork train fcs" in str(e)
    else:
        pytest.skip("a shipped fcs_vgg.safetensors exists")


def test_shipped_weights_run_on_a_photo():
    try:
        resolve_weights(None, M.DEFAULT_FILE, M.TRAIN_HINT)
    except BrushworkError:
        pytest.skip("no shipped fcs_vgg.safetensors")
    m = FCS(bf16=False)
    content, style = skimage_photo("chelsea", (48, 40)), skimage_photo("coffee", (48, 40))
    events = []
    out = m.stylize(content, [style], callback=events.append)
    assert out.shape == content.shape and float(out.std()) > 0.05
    steps = [e.losses["total"] for e in events if e.kind == "step"]
    assert steps[-1] < steps[0]


# ----------------------------------------------------------------------------- the trainer
@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    return training_folders(tmp_path_factory.mktemp("fcs_data"))


def _args(folders, out, **kw):
    return trainer_args(trainer, ["--content", str(folders / "content"), "--styles", str(folders / "styles"),
            "--out", str(out), "--size", "32", "--batch", "2", "--steps", "2", "--blocks", "2",
            "--width", "4", "--checkpoint-every", "1", "--sample-every", "0", "--no-bf16"], **kw)


@pytest.mark.parametrize("block_loss", ["last", "sum"])
def test_training_loss_falls(block_loss):
    enc = VGG19(last_layer="relu5_1", channels_last=True)
    solver = Solver(2, 4)
    c = torch.cat([image(32, 32, 0), image(32, 32, 5)])
    s = torch.cat([image(32, 32, 1), image(32, 32, 2)])
    opt = torch.optim.Adam(solver.parameters(), lr=2e-2)
    seen = []
    for _ in range(4):
        total, parts, out = trainer.losses(enc, solver, c, s, 1.0, 1e3, block_loss)
        assert set(parts) == {"start", "end", "ratio", "total"} and out.shape == c.shape
        assert parts["ratio"] == pytest.approx(parts["end"] / parts["start"], rel=1e-6)
        seen.append(parts["total"])
        opt.zero_grad()
        total.backward()
        opt.step()
    assert seen[3] < seen[0]
    assert all(b.conv_out.weight.abs().sum() > 0 for b in solver.blocks)  # the convs learn


def test_training_resumes_where_it_stopped_and_exports(folders, tmp_path):
    a, meta, exported = check_resume_and_export(trainer, lambda out, **kw: _args(folders, out, **kw),
                                                tmp_path)
    assert meta["method"] == "fcs" and meta["blocks"] == "2"
    assert meta["width"] == "4" and meta["crop"] == "32" and meta["style_weight"] == "1000.0"
    assert "solver.blocks.1.step" in a
    assert (tmp_path / "part.log.jsonl").read_text().count("\n") == 2
    m = FCS(weights=str(exported), bf16=False)
    assert m.stylize(image(32, 32, 0), [image(32, 32, 1)]).shape == (1, 3, 32, 32)


def test_bad_training_options_are_refused(folders, tmp_path):
    out = tmp_path / "x.safetensors"
    with pytest.raises(BrushworkError, match="nothing to train"):
        trainer.run(_args(folders, out, content_weight=0, style_weight=0))
    with pytest.raises(BrushworkError, match="--style-weight"):
        trainer.run(_args(folders, out, style_weight=-1))
    with pytest.raises(BrushworkError, match="--blocks"):
        trainer.run(_args(folders, out, blocks=0))
    assert not out.exists()


# ----------------------------------------------------------------------------- the CLI
def test_cli_end_to_end_and_bad_input(files, tmp_path, capsys):
    c, s = cli_pair(tmp_path)
    base = ["stylize", str(c), "-s", str(s), "-m", "fcs", "--weights", str(files["tiny"]),
            "--size", "0", "-q"]
    out = tmp_path / "out.png"
    assert main(base + ["-o", str(out), "--iterations", "3", "--style-layer-weights",
                        "1,1,1,0,0"]) == 0
    assert Image.open(out).size == (48, 40)
    assert_cli_refused(base + ["--strength", "0.5"], tmp_path / "bad.png", capsys)
    assert_cli_refused(base + ["--style-layer-weights", "1,1"], tmp_path / "bad2.png", capsys)
    other = tmp_path / "adain.safetensors"
    save_tiny(other, "adain", {"decoder": blocks.decoder(3, 1 / 16)}, {"width": "0.0625",
                                                                      "level": "3"})
    argv = [a if a != str(files["tiny"]) else str(other) for a in base]
    assert_cli_refused(argv, tmp_path / "bad3.png", capsys)
