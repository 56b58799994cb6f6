"""Every trainer's own loss function falls when its models take 20 Adam steps on one fixed batch.

Tiny models, 32x32 images made from seeded gradients + noise (no files), float32 (bf16 off), so
the numbers are deterministic. Each margin (final < 0.5, 0.8 or 0.9 x initial) was chosen from
the spread over 10-12 seeds (noted at each test) to hold with room to spare on a working
gradient; with the learning rate set to 0 (``LR_SCALE = 0``) every test here fails.
"""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from brushwork.core.blocks import (LEVEL_LAYERS, LinearTransform, SATransform, SmallEncoder,
                                   decoder, one_hot_styles)
from brushwork.core.losses import weighted_sum
from brushwork.core.vgg import VGG19
from brushwork.train import TRAINERS

from _arbitrary_util import seeded_images as images

CPU = torch.device("cpu")
STEPS = 20
LR_SCALE = 1.0  # 0 turns every test below into a failing one (no learning)


def descend(loss_fn, params, lr, steps=STEPS, extra_groups=()):
    """(loss before any step, loss after ``steps`` Adam steps) of ``loss_fn()`` (a tensor).
    ``extra_groups``: more Adam parameter groups (with their own ``lr``)."""
    opt = torch.optim.Adam([{"params": list(params)}, *extra_groups], lr=lr * LR_SCALE)
    first = None
    for _ in range(steps):
        loss = loss_fn()
        assert torch.isfinite(loss)
        if first is None:
            first = float(loss.detach())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    with torch.no_grad():
        last = float(loss_fn())
    return first, last


def assert_falls(first, last, ratio=0.8):
    assert last < ratio * first, f"loss {first:.6g} -> {last:.6g} after {STEPS} steps"


@pytest.fixture(scope="module")
def batch():
    return images(1), images(2)  # (content, style)


def test_every_trainer_is_covered():
    covered = {"adain", "wct", "linear", "sanet", "distill", "johnson", "cin", "asma",
               "classifier",
               "etnet",  # etnet's learning test: tests/test_etnet.py
               "texture-judge",  # tests/test_texture_judge.py
               "avatar",  # tests/test_avatar.py
               "aams",  # tests/test_aams.py
               "totalst",  # tests/test_totalst.py
               "efanet",  # tests/test_efanet.py
               "fcs",  # tests/test_fcs.py
               "styleaware",  # tests/test_styleaware.py
               "metastyle",  # tests/test_metastyle.py
               "tpfr",  # tests/test_tpfr.py
               "ctb"}  # tests/test_ctb.py
    assert set(TRAINERS) == covered


def test_adain_decoder_learns(batch):
    from brushwork.train.adain import _losses
    torch.manual_seed(0)
    content, style = batch
    enc = VGG19(last_layer="relu3_1")
    dec = decoder(3, 1 / 16)
    first, last = descend(lambda: _losses(enc, dec, content, style, False, CPU, 1.0, 10.0,
                                          level=3)[0], dec.parameters(), 2e-3)
    assert_falls(first, last)  # seeds 0-11: 0.15-0.52 of the start


def test_wct_reconstruction_decoders_learn(batch):
    from brushwork.train.wct import recon_losses
    torch.manual_seed(0)
    x = torch.cat(batch)
    enc = VGG19(last_layer="relu2_1")
    decoders = {1: decoder(1, 1 / 16), 2: decoder(2, 1 / 16)}
    params = [p for d in decoders.values() for p in d.parameters()]
    first, last = descend(lambda: recon_losses(enc, decoders, x, False, CPU, 1.0)[0],
                          params, 3e-3)
    assert_falls(first, last, 0.5)  # seeds 0-11: 0.13-0.39 of the start


def test_linear_transform_and_decoder_learn(batch):
    from brushwork.train.linear import lst_losses
    torch.manual_seed(0)
    content, style = batch
    enc = VGG19(last_layer="relu4_1")
    transform = LinearTransform(256, 4, 1 / 16)
    dec = decoder(3, 1 / 16)
    params = list(transform.parameters()) + list(dec.parameters())
    first, last = descend(lambda: lst_losses(enc, transform, dec, "relu3_1", content, style,
                                             False, CPU, 1.0, 10.0, 1.0)[0], params, 2e-3)
    assert_falls(first, last, 0.9)  # seeds 0-11: 0.28-0.84 of the start


def test_sanet_transform_and_decoder_learn(batch):
    from brushwork.train.sanet import sanet_losses
    torch.manual_seed(0)
    content, style = batch[0][:1], batch[1][:1]  # one pair: three relu5_1 passes per step
    enc = VGG19(last_layer="relu5_1")
    transform, dec = SATransform(512), decoder(4, 1 / 64)
    groups = [{"params": transform.parameters(), "lr": 1e-3 * LR_SCALE}]  # 2.4M weights: slower
    first, last = descend(lambda: sanet_losses(enc, transform, dec, content, style, False, CPU,
                                               (1.0, 3.0, 50.0, 1.0))[0], dec.parameters(),
                          5e-3, extra_groups=groups)
    # noisier than the others (seeds 0-9: 0.39-0.86 of the start), hence the wider margin
    assert_falls(first, last, 0.9)


def test_distill_student_decoders_and_embeddings_learn(batch):
    from brushwork.train.distill import distill_losses
    torch.manual_seed(0)
    x = torch.cat(batch)
    teacher = VGG19(last_layer="relu2_1")
    student = SmallEncoder(2, 1 / 16)
    decoders = {l: decoder(l, 1 / 16, student.channels[LEVEL_LAYERS[l]]) for l in (1, 2)}
    embeds = nn.ModuleDict({str(l): nn.Conv2d(student.channels[LEVEL_LAYERS[l]],
                                              (64, 128)[l - 1], 1) for l in (1, 2)})
    params = [p for m in [student, embeds, *decoders.values()] for p in m.parameters()]
    first, last = descend(lambda: distill_losses(teacher, student, decoders, embeds, x, False,
                                                 CPU, 1.0, 1.0)[0], params, 1e-2)
    assert_falls(first, last)  # seeds 0-9: 0.13-0.67 of the start


def _perceptual(n_styles, seed):
    """(first, last) of johnson's perceptual_loss for a TransformerNet with ``n_styles``."""
    from brushwork.methods.johnson import TransformerNet
    from brushwork.train.johnson import PerceptualTargets, perceptual_loss
    torch.manual_seed(seed)
    vgg = VGG19(last_layer="relu4_3")
    styles = [images(10 + i, 1) for i in range(n_styles)]
    targets = PerceptualTargets(vgg, styles)
    net = TransformerNet(1 / 16, n_styles, 1)
    x = images(3)
    ids = torch.arange(2) % n_styles
    style = one_hot_styles(ids, n_styles)
    args = SimpleNamespace(content_weight=1.0, style_weight=1.5, tv_weight=1e3)
    return descend(lambda: perceptual_loss(vgg, net(x, style), x, ids, targets, args)[0],
                   net.parameters(), 3e-3)


def test_johnson_net_learns():
    assert_falls(*_perceptual(1, 0), 0.5)  # seeds 0-11: 0.05-0.11 of the start


def test_cin_net_learns_two_styles():
    assert_falls(*_perceptual(2, 0), 0.5)  # seeds 0-11: 0.06-0.10 of the start


def test_asma_generator_objective_learns(batch):
    """The generator's terms as ``train.asma.run`` computes them after the warm-up: feature
    (style-aware content loss on G's own encoder), transform and the VGG style term against
    the batch's paintings, combined by ``weighted_sum``. The adversarial term is left out: it
    needs a discriminator that moves too, and its value is not expected to fall."""
    from brushwork.methods.asma import Generator, transform_loss
    from brushwork.train.asma import STYLE_LAYERS, style_term
    import torch.nn.functional as F
    torch.manual_seed(0)
    content, real = batch
    x = content * 2 - 1
    n = 2
    G = Generator(n, chn=4, n_plain=1)
    vgg = VGG19(last_layer="relu4_1")
    ids = torch.tensor([0, 1])
    y = one_hot_styles(ids, n)

    def g_objective():
        out = G(x, y)
        e_out, e_x = G.encode(out)[1], G.encode(x)[1]
        fo = vgg((out.float() + 1) / 2, list(STYLE_LAYERS))
        terms = {"feature": (50.0, F.l1_loss(e_out.float(), e_x.float())),
                 "transform": (50.0, transform_loss(x, out.float())),
                 "style": (1e-3, style_term(vgg, out, real, ids, None, fo))}
        return weighted_sum(terms)[0]

    first, last = descend(g_objective, G.parameters(), 2e-3)
    assert_falls(first, last, 0.5)  # seeds 0-9: 0.07-0.24 of the start


def test_classifier_head_learns_separable_features():
    """``fit_head`` with one full batch per epoch: ``epochs`` = optimisation steps. Its return
    value is the loss of its last step's batch (before that step's update): 1 epoch gives the
    initial loss, 21 epochs the loss after 20 steps, from the same seeded start."""
    from brushwork.eval.classifier import ArtistClassifier
    from brushwork.train.classifier import fit_head
    g = torch.Generator().manual_seed(0)
    n, dim_layers = 64, ("relu1_1",)  # 2 x 64 statistics
    labels = torch.arange(n) % 2
    feats = torch.rand(n, 128, generator=g) * 2
    feats[:, :16] += 3.0 * labels[:, None]  # class 1 is brighter on 16 channels

    def fitted(epochs):
        torch.manual_seed(0)
        model = ArtistClassifier(["a", "b"], hidden=8, layers=dim_layers)
        return fit_head(model, feats, labels, epochs=epochs, lr=1e-2 * LR_SCALE, batch=n,
                        seed=0), model

    first, _ = fitted(1)
    last, model = fitted(STEPS + 1)
    assert_falls(first, last, 0.5)  # init seeds 0-9: 0.22-0.31 of the start
    with torch.no_grad():
        assert (model(feats).argmax(1) == labels).float().mean() > 0.9
