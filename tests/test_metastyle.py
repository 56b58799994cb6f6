"""MetaStyle: the inner step is johnson's training step, the first-order meta-gradient, the
meta-trainer (determinism, resume), `brushwork adapt` and `-m metastyle` (tiny seeded nets,
32-48 px images, no ../shared)."""
import argparse
import copy

import pytest
import torch
import torch.nn.functional as F

from brushwork.cli import main
from brushwork.core.image import load_image
from brushwork.core.vgg import VGG19
from brushwork.core.weights import load_weights, prefixed_state, save_weights
from brushwork.errors import BrushworkError
from brushwork.methods import METHODS
from brushwork.methods.johnson import TransformerNet
from brushwork.methods.metastyle import MetaStyle
from brushwork.train import common as training
from brushwork.train import johnson as johnson_trainer
from brushwork.train import metastyle as M

from _arbitrary_util import assert_cli_refused, image, lively, training_folders
from conftest import save_png

TINY = dict(width=0.125, n_res=1)  # 4/8/16 channels


def _net(seed=0):
    torch.manual_seed(seed)
    return lively(TransformerNet(TINY["width"], 1, TINY["n_res"]))


def _save_init(path, seed=0):
    net = _net(seed)
    meta = {"method": M.INIT_METHOD, "config": '{"width": 0.125, "n_styles": 1, "n_res": 1}',
            "steps": "0"}
    save_weights(prefixed_state("net", net), path, metadata=meta)
    return path


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    return training_folders(tmp_path_factory.mktemp("metastyle_data"))


@pytest.fixture(scope="module")
def vgg():
    return VGG19(last_layer="relu4_3")


@pytest.fixture(scope="module")
def tiny_init(tmp_path_factory):
    return _save_init(tmp_path_factory.mktemp("metastyle_init") / "init.safetensors")


@pytest.fixture(scope="module")
def adapted(tmp_path_factory, folders, tiny_init):
    out = tmp_path_factory.mktemp("metastyle_adapted") / "my_style.safetensors"
    events = []
    res = M.adapt(image(40, 48, 1), out, init=tiny_init, content=folders / "content", steps=3,
                  size=32, batch=1, style_size=32, lr=1e-3, schedule="constant", bf16=False,
                  callback=events.append)
    return out, res, events


# ------------------------------------------------------------------------------ the two levels
def test_one_inner_step_is_one_johnson_training_step(tmp_path, folders, vgg):
    p = argparse.ArgumentParser()
    johnson_trainer.add_arguments(p)
    args = p.parse_args(["--style", str(folders / "styles" / "0.png"), "--content",
                         str(folders / "content"), "--out", str(tmp_path / "j.safetensors"),
                         "--size", "32", "--batch", "2", "--steps", "1", "--style-size", "32",
                         "--no-bf16", "--sample-every", "0"])
    targets = johnson_trainer.PerceptualTargets(
        vgg, johnson_trainer.load_style_images([args.style], args.style_size))
    start = _net()
    j = copy.deepcopy(start)
    johnson_trainer.train_loop("johnson", args, j, targets, vgg, list(j.parameters()), [0],
                               ["s"])
    ours = copy.deepcopy(start)
    photos = training.load_folder(args.content, max(32, min(512, 64)))
    x = training.sample_batch(photos, 32, 2, training.step_generator(args.seed, 0))
    opt = M.inner_optimizer(list(ours.parameters()), args.lr)
    _, log, taken = M.inner_step(ours, opt, M.johnson_loss(vgg, targets, args), x)
    assert taken and set(log) == {"content", "style", "tv", "total"}
    moved = False
    for (name, a), b, s in zip(ours.named_parameters(), j.parameters(), start.parameters()):
        torch.testing.assert_close(a, b, atol=0, rtol=0, msg=name)
        moved |= not torch.equal(a, s)
    assert moved


def _quadratic_tasks(seed=0):
    """Two tasks of a plain MSE-to-a-target loss (one per 'style'), 2 inner batches each."""
    g = torch.Generator().manual_seed(seed)
    tasks = []
    for _ in range(2):
        target = torch.rand(1, 3, 16, 16, generator=g)
        inner = [torch.rand(1, 3, 16, 16, generator=g) for _ in range(2)]
        val = torch.rand(2, 3, 16, 16, generator=g)

        def loss_fn(net, x, target=target):
            v = F.mse_loss(net(x), target.expand_as(x))
            return v, {"total": float(v.detach())}
        tasks.append((loss_fn, inner, val, target))
    return tasks


def _hand_meta_gradient(net, tasks, update):
    """First-order MAML by hand: theta_s = inner updates of theta (``update(theta, grad,
    k)``), the held-out loss's gradient at theta_s, averaged over the tasks."""
    names = [n for n, _ in net.named_parameters()]
    theta = {n: p.detach().clone() for n, p in net.named_parameters()}
    total = {n: torch.zeros_like(v) for n, v in theta.items()}
    for _, inner, val, target in tasks:
        th = {n: v.clone().requires_grad_(True) for n, v in theta.items()}
        for k, x in enumerate(inner):
            out = torch.func.functional_call(net, th, (x,))
            grads = torch.autograd.grad(F.mse_loss(out, target.expand_as(out)),
                                        [th[n] for n in names])
            th = {n: update(th[n].detach(), g, k).requires_grad_(True)
                  for n, g in zip(names, grads)}
        out = torch.func.functional_call(net, th, (val,))
        grads = torch.autograd.grad(F.mse_loss(out, target.expand_as(out)),
                                    [th[n] for n in names])
        for n, g in zip(names, grads):
            total[n] += g / len(tasks)
    return [total[n] for n in names]


def test_first_order_meta_gradient_matches_a_hand_computation_sgd():
    init, fast = _net(1), _net(2)
    before = [p.detach().clone() for p in init.parameters()]
    tasks = _quadratic_tasks()
    alpha = 0.05
    grads, log = M.meta_gradient(init, fast, [t[:3] for t in tasks],
                                 lambda ps: torch.optim.SGD(ps, lr=alpha))
    expected = _hand_meta_gradient(init, tasks, lambda th, g, k: th - alpha * g)
    for g, e in zip(grads, expected):
        torch.testing.assert_close(g, e, atol=1e-6, rtol=1e-5)
    assert all(torch.equal(a, b) for a, b in zip(init.parameters(), before))  # theta untouched
    assert log["outer"] > 0 and log["inner"] > 0
    # the outer step: theta - beta * G with SGD
    outer = torch.optim.SGD(list(init.parameters()), lr=0.1)
    assert M.apply_gradient(list(init.parameters()), grads, outer)
    for p, b, g in zip(init.parameters(), before, grads):
        torch.testing.assert_close(p.detach(), b - 0.1 * g, atol=1e-7, rtol=0)


def test_first_order_meta_gradient_with_the_adam_inner_steps():
    """A fresh Adam's first step is lr * g / (|g| + eps); its second uses the moments."""
    init, fast = _net(3), _net(4)
    tasks = _quadratic_tasks(1)
    lr, b1, b2, eps = 1e-2, 0.9, 0.999, 1e-8
    grads, _ = M.meta_gradient(init, fast, [t[:3] for t in tasks],
                               lambda ps: M.inner_optimizer(ps, lr))

    # hand Adam: per task fresh (m, v) for every parameter
    names = [n for n, _ in init.named_parameters()]
    theta = {n: p.detach().clone() for n, p in init.named_parameters()}
    expected = {n: torch.zeros_like(v) for n, v in theta.items()}
    for _, inner, val, target in tasks:
        th = {n: v.clone() for n, v in theta.items()}
        m = {n: torch.zeros_like(v) for n, v in th.items()}
        v2 = {n: torch.zeros_like(v) for n, v in th.items()}
        for k, x in enumerate(inner, start=1):
            th = {n: t.requires_grad_(True) for n, t in th.items()}
            out = torch.func.functional_call(init, th, (x,))
            gs = torch.autograd.grad(F.mse_loss(out, target.expand_as(out)),
                                     [th[n] for n in names])
            new = {}
            for n, g in zip(names, gs):
                m[n] = b1 * m[n] + (1 - b1) * g
                v2[n] = b2 * v2[n] + (1 - b2) * g * g
                mh, vh = m[n] / (1 - b1 ** k), v2[n] / (1 - b2 ** k)
                new[n] = (th[n] - lr * mh / (vh.sqrt() + eps)).detach()
            th = new
        th = {n: t.requires_grad_(True) for n, t in th.items()}
        out = torch.func.functional_call(init, th, (val,))
        gs = torch.autograd.grad(F.mse_loss(out, target.expand_as(out)), [th[n] for n in names])
        for n, g in zip(names, gs):
            expected[n] += g / len(tasks)
    for g, n in zip(grads, names):
        torch.testing.assert_close(g, expected[n], atol=1e-6, rtol=1e-4, msg=n)



def test_meta_training_lowers_the_held_out_loss_after_adaptation():
    """Outer Adam steps on the first-order meta-gradient: the loss of the adapted parameters
    on the held-out batches falls (the initialisation learns)."""
    init, fast = _net(5), _net(6)
    tasks = [t[:3] for t in _quadratic_tasks(2)]
    opt = torch.optim.Adam(list(init.parameters()), lr=1e-2)
    make = (lambda ps: M.inner_optimizer(ps, 1e-3))
    first = M.meta_gradient(init, fast, tasks, make)[1]["outer"]
    for _ in range(15):
        grads, _ = M.meta_gradient(init, fast, tasks, make)
        assert M.apply_gradient(list(init.parameters()), grads, opt)
    last = M.meta_gradient(init, fast, tasks, make)[1]["outer"]
    assert last < 0.8 * first, (first, last)


def test_reptile_gradient_is_init_minus_the_mean_adapted_weights():
    init, fast = _net(7), _net(8)
    tasks = _quadratic_tasks(3)
    before = [p.detach().clone() for p in init.parameters()]
    alpha = 0.05
    sgd = (lambda ps: torch.optim.SGD(ps, lr=alpha))
    grads, log = M.meta_gradient(init, fast, [t[:3] for t in tasks], sgd, outer="reptile")
    assert all(torch.equal(a, b) for a, b in zip(init.parameters(), before))  # theta untouched
    # by hand: each task's SGD inner steps from theta, then theta - mean(theta_s)
    names = [n for n, _ in init.named_parameters()]
    adapted = []
    for _, inner, _, target in tasks:
        th = {n: p.detach().clone().requires_grad_(True) for n, p in init.named_parameters()}
        for x in inner:
            out = torch.func.functional_call(init, th, (x,))
            g = torch.autograd.grad(F.mse_loss(out, target.expand_as(out)),
                                    [th[n] for n in names])
            th = {n: (th[n] - alpha * gi).detach().requires_grad_(True)
                  for n, gi in zip(names, g)}
        adapted.append([th[n].detach() for n in names])
    for i, (g, b) in enumerate(zip(grads, before)):
        mean = (adapted[0][i] + adapted[1][i]) / 2
        torch.testing.assert_close(g, b - mean, atol=1e-6, rtol=1e-5)
    assert log["outer"] > 0 and log["inner"] > 0
    # a plain step of size 1 puts theta onto the mean adapted weights
    assert M.apply_gradient(list(init.parameters()), grads,
                            torch.optim.SGD(list(init.parameters()), lr=1.0))
    for p, b, g in zip(init.parameters(), before, grads):
        torch.testing.assert_close(p.detach(), b - g, atol=1e-7, rtol=0)
    with pytest.raises(BrushworkError, match="unknown outer update"):
        M.meta_gradient(init, fast, [t[:3] for t in tasks], sgd, outer="second-order")


def test_reptile_meta_training_lowers_the_loss_after_adaptation():
    init, fast = _net(5), _net(6)
    tasks = [t[:3] for t in _quadratic_tasks(2)]
    opt = torch.optim.SGD(list(init.parameters()), lr=1.0)
    make = (lambda ps: M.inner_optimizer(ps, 1e-2))
    first = M.meta_gradient(init, fast, tasks, make, "reptile")[1]["outer"]
    for _ in range(15):
        grads, _ = M.meta_gradient(init, fast, tasks, make, "reptile")
        assert M.apply_gradient(list(init.parameters()), grads, opt)
    last = M.meta_gradient(init, fast, tasks, make, "reptile")[1]["outer"]
    assert last < 0.92 * first, (first, last)   # 0.110 -> 0.096


def test_a_non_finite_meta_gradient_is_not_applied():
    net = _net()
    before = [p.detach().clone() for p in net.parameters()]
    grads = [torch.full_like(p, float("nan")) for p in net.parameters()]
    assert not M.apply_gradient(list(net.parameters()), grads,
                                torch.optim.Adam(list(net.parameters())))
    assert all(torch.equal(a, b) for a, b in zip(net.parameters(), before))


def test_photos_split_into_inner_and_held_out():
    inner, val = M.split_photos(list(range(10)), 0.2)
    assert val == [4, 9] and inner == [0, 1, 2, 3, 5, 6, 7, 8]
    inner, val = M.split_photos(list(range(3)), 0.2)
    assert val == [2] and inner == [0, 1]
    with pytest.raises(BrushworkError, match="at least 2 photos"):
        M.split_photos([0], 0.2)


# ------------------------------------------------------------------------------ meta-training
def _train(tmp_path, folders, name, extra=(), code=0):
    out = tmp_path / f"{name}.safetensors"
    argv = ["train", "metastyle", "--styles", str(folders / "styles"), "--content",
            str(folders / "content"), "--out", str(out), "--width", "0.125", "--n-res", "1",
            "--size", "32", "--batch", "1", "--inner-steps", "2", "--style-size", "32",
            "--steps", "2", "--checkpoint-every", "1", "--sample-every", "2", "-q", *extra]
    assert main(argv) == code
    return out


def test_meta_training_is_seeded_and_resumes_exactly(tmp_path, folders):
    a = _train(tmp_path, folders, "a")
    b = _train(tmp_path, folders, "b")
    c = _train(tmp_path, folders, "c", ["--seed", "1"])
    ta, meta = load_weights(a)
    tb, _ = load_weights(b)
    tc, _ = load_weights(c)
    assert meta["method"] == M.INIT_METHOD and meta["steps"] == "2"
    assert meta["outer_gradient"] == "first-order"
    assert all(torch.equal(ta[k], tb[k]) for k in ta)
    assert any(not torch.equal(ta[k], tc[k]) for k in ta)
    # one step, then resume to two: the same weights as two straight steps
    r = tmp_path / "r.safetensors"
    _train(tmp_path, folders, "r", ["--steps", "1"])
    one, _ = load_weights(r)
    assert any(not torch.equal(one[k], ta[k]) for k in ta)
    _train(tmp_path, folders, "r", ["--resume"])
    tr, _ = load_weights(r)
    assert all(torch.equal(ta[k], tr[k]) for k in ta)
    assert (tmp_path / "a_sample_000002.png").is_file()
    assert (tmp_path / "a.log.jsonl").read_text().count("\n") == 2
    # a checkpoint exports as the same initialisation
    res = M.export(tmp_path / "a.ckpt", tmp_path / "e.safetensors")
    te, me = load_weights(tmp_path / "e.safetensors")
    assert res["steps"] == 2 and me["method"] == M.INIT_METHOD and me["steps"] == "2"
    assert all(torch.equal(ta[k], te[k]) for k in ta)
    with pytest.raises(BrushworkError):
        M.export(tmp_path / "missing.ckpt", tmp_path / "f.safetensors")
    assert not (tmp_path / "f.safetensors").exists()


def test_reptile_training_is_seeded_resumes_and_is_recorded(tmp_path, folders):
    extra = ["--outer", "reptile", "--lr", "0.5"]
    a = _train(tmp_path, folders, "ra", extra)
    ta, meta = load_weights(a)
    assert meta["outer_gradient"] == "reptile" and meta["steps"] == "2"
    first = _train(tmp_path, folders, "first", [])
    assert any(not torch.equal(ta[k], load_weights(first)[0][k]) for k in ta)
    r = tmp_path / "rr.safetensors"
    _train(tmp_path, folders, "rr", extra + ["--steps", "1"])
    _train(tmp_path, folders, "rr", extra + ["--resume"])
    tr, _ = load_weights(r)
    assert all(torch.equal(ta[k], tr[k]) for k in ta)
    res = M.export(tmp_path / "ra.ckpt", tmp_path / "re.safetensors")
    assert res["steps"] == 2 and load_weights(tmp_path / "re.safetensors")[1][
        "outer_gradient"] == "reptile"


def test_meta_training_starts_from_an_init_file(tmp_path, folders):
    pre = _train(tmp_path, folders, "pre", ["--pretrain-steps", "2", "--steps", "0"])
    tp, _ = load_weights(pre)
    net = TransformerNet(0.125, 1, 1)
    M.start_from(net, pre, "cpu")
    assert all(torch.equal(tp[f"net.{k}"], v) for k, v in net.state_dict().items())
    moved = load_weights(_train(tmp_path, folders, "moved", ["--init", str(pre)]))[0]
    plain = load_weights(_train(tmp_path, folders, "plain", []))[0]
    # the same seeded tasks from another start: other weights, near the start's
    assert any(not torch.equal(moved[k], plain[k]) for k in tp)
    assert sum((moved[k] - tp[k]).abs().sum() for k in tp) < \
        sum((plain[k] - tp[k]).abs().sum() for k in tp)
    wide = TransformerNet(0.25, 1, 1)
    with pytest.raises(BrushworkError, match="is not the one asked for"):
        M.start_from(wide, pre, "cpu")
    _train(tmp_path, folders, "wide", ["--init", str(pre), "--width", "0.25"], code=2)
    assert not (tmp_path / "wide.safetensors").exists()


def test_pretraining_lowers_the_content_loss_and_is_recorded(tmp_path, folders, vgg):
    """--pretrain-steps trains the network on content and total variation only: its content
    loss on photos falls (20 steps of a tiny net), the style term has no weight, the run is
    seeded, and the file records the number of steps."""
    from types import SimpleNamespace
    from brushwork.train.johnson import PerceptualTargets
    photos = [load_image(p)[0].mul(255).round().byte()
              for p in sorted((folders / "content").iterdir())]
    painting = photos[0]
    args = SimpleNamespace(pretrain_steps=20, lr=1e-2, size=32, batch=2, seed=0,
                           style_size=32, content_weight=1.0, tv_weight=0.0, steps=1)
    x = photos[1][None].float()[..., :32, :32] / 255
    targets = PerceptualTargets(vgg, [painting[None].float() / 255])
    loss = M.johnson_loss(vgg, targets, SimpleNamespace(content_weight=1.0, style_weight=0.0,
                                                        tv_weight=0.0))
    net = _net(3)
    before = float(loss(net, x)[0].detach())
    log = M.pretrain(net, vgg, args, painting, photos, "cpu")
    assert float(loss(net, x)[0].detach()) < 0.7 * before  # 0.59 of it; lr 0 keeps it
    assert set(log) >= {"total"}
    again = _net(3)
    M.pretrain(again, vgg, args, painting, photos, "cpu")
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(),
                                                 again.state_dict().values()))
    out = _train(tmp_path, folders, "p", ["--pretrain-steps", "2", "--steps", "1"])
    assert load_weights(out)[1]["pretrain_steps"] == "2"
    alone = _train(tmp_path, folders, "q", ["--pretrain-steps", "2", "--steps", "0"])
    assert load_weights(alone)[1]["steps"] == "0"  # the pretrained network, no meta-step
    assert main(["train", "metastyle", "--styles", str(folders / "styles"), "--content",
                 str(folders / "content"), "--out", str(tmp_path / "z.safetensors"),
                 "--steps", "0", "-q"]) == 2
    assert main(["train", "metastyle", "--styles", str(folders / "styles"), "--content",
                 str(folders / "content"), "--out", str(tmp_path / "x.safetensors"),
                 "--pretrain-steps", "-1", "-q"]) == 2
    assert not (tmp_path / "x.safetensors").exists()


def test_meta_training_leaves_excluded_paintings_out(tmp_path, folders):
    ex = tmp_path / "exclude.txt"
    ex.write_text("# judged on these\n0.png\n1.png\n")
    out = tmp_path / "x.safetensors"
    assert main(["train", "metastyle", "--styles", str(folders / "styles"), "--content",
                 str(folders / "content"), "--out", str(out), "--exclude", str(ex),
                 "--steps", "1", "-q"]) == 2
    assert not out.exists()


# ------------------------------------------------------------------------------ adaptation
def test_adapt_writes_a_file_metastyle_runs_with_a_pinned_output(adapted, tiny_init):
    out, res, events = adapted
    state, meta = load_weights(out)
    assert meta["method"] == "metastyle" and meta["steps"] == "3" and res["steps"] == 3
    assert [e.step for e in events if e.kind == "train"] == [1, 2, 3]
    assert events[-1].kind == "done"
    init, _ = load_weights(tiny_init)
    assert any(not torch.equal(state[k], init[k]) for k in state)  # it adapted
    m = MetaStyle(weights=str(out), bf16=False)
    content = image(40, 48, 0)
    y = m.stylize(content)
    assert y.shape == content.shape and 0 <= float(y.min()) and float(y.max()) <= 1
    torch.testing.assert_close(m.stylize(content), y)
    got = y[0, :, 20, 20:24].flatten()
    expected = torch.tensor(PINNED)
    # three Adam steps carry the last-bit differences between CPU kernels (AVX2 and AVX-512
    # sum in other orders) into the weights: a few thousandths
    torch.testing.assert_close(got, expected, atol=6e-3, rtol=0)
    # the same net as johnson's: same architecture, same output as the plain network
    net = TransformerNet(0.125, 1, 1)
    net.load_state_dict({k[4:]: v for k, v in state.items()})
    torch.testing.assert_close(net.eval()(content), y, atol=1e-5, rtol=0)


PINNED = [0.4009, 0.4294, 0.3618, 0.4001, 0.7513, 0.6372, 0.461, 0.5289, 0.4957, 0.4491, 0.3534,
          0.3323]


def test_adapt_is_johnson_training_from_the_initialisation(tmp_path, folders, tiny_init, vgg):
    """`brushwork adapt` = `brushwork train johnson` (same crops, loss, optimiser) started
    from the initialisation instead of from random weights."""
    style = folders / "styles" / "1.png"
    p = argparse.ArgumentParser()
    johnson_trainer.add_arguments(p)
    args = p.parse_args(["--style", str(style), "--content", str(folders / "content"), "--out",
                         str(tmp_path / "j.safetensors"), "--size", "32", "--batch", "2",
                         "--steps", "3", "--style-size", "32", "--no-bf16", "--sample-every",
                         "0"])
    targets = johnson_trainer.PerceptualTargets(
        vgg, johnson_trainer.load_style_images([args.style], args.style_size))
    net = M.load_init(tiny_init)[0]
    johnson_trainer.train_loop("johnson", args, net, targets, vgg, list(net.parameters()), [0],
                               ["s"])
    M.adapt(load_image(style), tmp_path / "a.safetensors", init=tiny_init,
            content=folders / "content", steps=3, size=32, batch=2, style_size=32, lr=1e-3,
            schedule="constant", bf16=False)
    a, _ = load_weights(tmp_path / "a.safetensors")
    j, _ = load_weights(tmp_path / "j.safetensors")
    assert set(a) == set(j) and all(torch.equal(a[k], j[k]) for k in a)


def test_adapt_cosine_schedule(tmp_path, folders, tiny_init):
    """``schedule='cosine'``: the first step is the constant schedule's (cos 0 = 1), later steps
    take a smaller learning rate, and the file records the schedule."""
    kw = dict(init=tiny_init, content=folders / "content", size=32, batch=1, style_size=32,
              bf16=False)
    style = image(40, 48, 1)
    for name, steps, schedule in (("c1", 1, "constant"), ("k1", 1, "cosine"),
                                  ("c2", 2, "constant"), ("k2", 2, "cosine")):
        M.adapt(style, tmp_path / f"{name}.safetensors", steps=steps, schedule=schedule, **kw)
    w = {n: load_weights(tmp_path / f"{n}.safetensors") for n in ("c1", "k1", "c2", "k2")}
    assert all(torch.equal(w["c1"][0][k], w["k1"][0][k]) for k in w["c1"][0])
    assert any(not torch.equal(w["c2"][0][k], w["k2"][0][k]) for k in w["c2"][0])
    assert w["k2"][1]["schedule"] == "cosine" and w["c2"][1]["schedule"] == "constant"
    with pytest.raises(BrushworkError, match="unknown schedule"):
        M.adapt(style, tmp_path / "x.safetensors", steps=1, schedule="step", **kw)
    assert not (tmp_path / "x.safetensors").exists()


def test_adapt_is_seeded(tmp_path, folders, tiny_init, adapted):
    out = tmp_path / "again.safetensors"
    M.adapt(image(40, 48, 1), out, init=tiny_init, content=folders / "content", steps=3,
            size=32, batch=1, style_size=32, lr=1e-3, schedule="constant", bf16=False)
    a, _ = load_weights(out)
    b, _ = load_weights(adapted[0])
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_metastyle_refuses_missing_and_foreign_weights(tmp_path, tiny_init):
    with pytest.raises(BrushworkError, match="brushwork adapt"):
        MetaStyle()
    with pytest.raises(BrushworkError, match="initialisation"):
        MetaStyle(weights=str(tiny_init))
    foreign = tmp_path / "j.safetensors"
    save_weights(prefixed_state("net", _net()), foreign,
                 metadata={"method": "johnson", "config": '{"width": 0.125, "n_styles": 1, '
                                                           '"n_res": 1}'})
    with pytest.raises(BrushworkError, match="'johnson', not metastyle"):
        MetaStyle(weights=str(foreign))
    assert METHODS["metastyle"] is MetaStyle


def test_adapt_cli_end_to_end(tmp_path, tiny_init, capsys):
    style = save_png(image(40, 48, 1), tmp_path / "painting.png")
    out = tmp_path / "mine.safetensors"
    # default content: the photos scikit-image ships
    assert main(["adapt", str(style), "-o", str(out), "--init", str(tiny_init), "--steps", "2",
                 "--size", "32", "--batch", "1", "--style-size", "32", "-q"]) == 0
    assert load_weights(out)[1]["style_names"] == '["painting"]'
    photo = save_png(image(40, 48, 0), tmp_path / "photo.png")
    res = tmp_path / "res.png"
    assert main(["stylize", str(photo), "-m", "metastyle", "--weights", str(out), "-o",
                 str(res), "--size", "0", "-q"]) == 0
    assert res.is_file()
    capsys.readouterr()


def test_adapt_cli_refuses_bad_input(tmp_path, tiny_init, capsys):
    style = save_png(image(40, 48, 1), tmp_path / "painting.png")
    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    base = ["--init", str(tiny_init), "--size", "32", "--batch", "1", "--style-size", "32"]
    dest = tmp_path / "out.safetensors"
    assert_cli_refused(["adapt", str(text), *base, "--steps", "1"], dest, capsys)
    assert_cli_refused(["adapt", str(style), *base, "--steps", "0"], dest, capsys)
    assert_cli_refused(["adapt", str(style), *base, "--schedule", "step"], dest, capsys)
    assert_cli_refused(["adapt", str(tmp_path / "missing.png"), *base], dest, capsys)
    assert_cli_refused(["adapt", str(style), *base, "--content", str(tmp_path / "nope")], dest,
                       capsys)
    # an initialisation that is not one
    adapted = tmp_path / "adapted.safetensors"
    save_weights(prefixed_state("net", _net()), adapted,
                 metadata={"method": "metastyle", "config": '{"width": 0.125, "n_styles": 1, '
                                                             '"n_res": 1}'})
    assert_cli_refused(["adapt", str(style), "--init", str(adapted), "--steps", "1"], dest,
                       capsys)
    # unwritable outputs
    assert_cli_refused(["adapt", str(style), *base], tmp_path / "no" / "dir.safetensors",
                       capsys)
    assert_cli_refused(["adapt", str(style), *base], tmp_path / "out.png", capsys)
    (tmp_path / "a_dir.safetensors").mkdir()
    capsys.readouterr()
    assert main(["adapt", str(style), *base, "-o", str(tmp_path / "a_dir.safetensors")]) == 2
    assert capsys.readouterr().err.startswith("brushwork: error:")


def test_stylize_cli_refuses_foreign_or_missing_weights(tmp_path, tiny_init, capsys):
    photo = save_png(image(40, 48, 0), tmp_path / "photo.png")
    dest = tmp_path / "res.png"
    assert_cli_refused(["stylize", str(photo), "-m", "metastyle"], dest, capsys)
    assert_cli_refused(["stylize", str(photo), "-m", "metastyle", "--weights", str(tiny_init)],
                       dest, capsys)
    foreign = tmp_path / "fcs.safetensors"
    save_weights({"x": torch.zeros(1)}, foreign, metadata={"method": "fcs"})
    assert_cli_refused(["stylize", str(photo), "-m", "metastyle", "--weights", str(foreign)],
                       dest, capsys)


# ------------------------------------------------------------------------------ shipped file
def test_the_shipped_initialisation_is_pinned():
    """The shipped metastyle_init.safetensors (sha256-checked against the manifest on load):
    its network's output on a fixed image, and the settings it was meta-trained with."""
    net, meta, path = M.load_init()
    assert path.name == M.INIT_FILE and meta["method"] == M.INIT_METHOD
    assert meta["outer_gradient"] == "reptile" and meta["crop"] == "128"
    assert meta["steps"] == "940" and meta["inner_steps"] == "20, then 30"
    assert net.config() == {"width": 0.5, "n_styles": 1, "n_res": 5}
    with torch.no_grad():
        y = net.eval()(image(40, 48, 0))
    got = y[0, :, 20, 20:24].flatten()
    expected = torch.tensor([0.7104, 0.6386, 0.6812, 0.6800, 0.5834, 0.5466, 0.5423, 0.5715,
                             0.5667, 0.4700, 0.4733, 0.4455])
    torch.testing.assert_close(got, expected, atol=1e-3, rtol=0)
    assert abs(float(y.mean()) - 0.51608) < 1e-4
