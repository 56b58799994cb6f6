"""tpfr: the neighbour search, the two-stage peer-regularisation layer, the metric loss, the
method, the trainer, the CLI."""

import pytest
import torch
from PIL import Image

from brushwork.cli import main
from brushwork.core import blocks
from brushwork.core.weights import load_weights, prefixed_state, save_weights
from brushwork.errors import BrushworkError, ControlError
from brushwork.methods.tpfr import TPFR, PeerRecombination, Projection, gather_rows, knn, split
from brushwork.train import tpfr as trainer

from _arbitrary_util import (check_shipped_on_a_photo, check_resume_and_export, cli_pair, trainer_args,
                             assert_cli_refused, assert_pinned_tiny,
                             assert_strength_zero_is_reconstruction, check_weights_and_masks,
                             image, lively, save_tiny, training_folders)

ENC_W = 1 / 16  # small encoder and decoder: 4/8/16/32 channels at relu1_1..relu4_1
DC, DS = 4, 4   # latent content / style channels of the tiny model


def _randomise(module, seed=0, gain=0.5):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * gain / max(1, p.shape[-1] if p.dim() else 1) ** 0.5)
    return module


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A seeded tpfr weight file: small encoder (width 1/16, relu4_1: 32 channels), a
    projection to 4 + 4 latent channels, a peer layer with 4-d attention features (random
    attention vectors) and a 1/16-width decoder."""
    path = tmp_path_factory.mktemp("tpfr") / "tpfr_tiny.safetensors"
    torch.manual_seed(0)
    enc = lively(blocks.SmallEncoder(4, ENC_W))
    proj = Projection(enc.channels["relu4_1"], DC, DS)
    torch.nn.init.normal_(proj.conv.weight, 0.0, 0.5)
    peer = _randomise(PeerRecombination(DC, DS, 4), seed=1)
    dec = lively(blocks.decoder(4, ENC_W, DC + DS))
    convs = [m for m in dec if isinstance(m, torch.nn.Conv2d)]
    convs[0].weight.data *= 300  # the small random encoder's features are weak
    convs[-1].weight.data *= 0.2  # outputs around mid-grey, few saturated
    convs[-1].bias.data += 0.5
    state = {**prefixed_state("encoder", enc), **prefixed_state("projection", proj),
             **prefixed_state("peer", peer), **prefixed_state("decoder", dec)}
    save_weights(state, path, metadata={"method": "tpfr", "level": "4", "width": str(ENC_W),
                                        "content_dim": str(DC), "style_dim": str(DS),
                                        "att_dim": "4", "encoder": "small",
                                        "encoder_level": "4", "encoder_width": str(ENC_W)})
    return path


@pytest.fixture(scope="module")
def model(tiny):
    return TPFR(weights=str(tiny), bf16=False)


def _latent(c=8, h=6, w=7, seed=0, b=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, c, h, w, generator=g)


# ----------------------------------------------------------------------- neighbour search
def test_knn_matches_brute_force_and_chunking_changes_nothing():
    g = torch.Generator().manual_seed(0)
    q, p = torch.randn(2, 50, 6, generator=g), torch.randn(2, 37, 6, generator=g)
    dist, idx = knn(q, p, 4)
    full = torch.cdist(q, p) ** 2
    ref_d, ref_i = full.sort(-1)
    torch.testing.assert_close(idx, ref_i[..., :4])
    torch.testing.assert_close(dist, ref_d[..., :4], atol=1e-4, rtol=1e-4)
    for chunk in (1, 37, 100, 37 * 7):  # one row, one row, two rows, seven rows at a time
        d2, i2 = knn(q, p, 4, chunk_elements=chunk)
        torch.testing.assert_close(i2, idx)
        torch.testing.assert_close(d2, dist, atol=1e-5, rtol=1e-5)
    assert knn(q, p, 100)[1].shape == (2, 50, 37)  # k is capped at the number of peers
    with pytest.raises(BrushworkError, match="at least 1"):
        knn(q, p, 0)


def test_the_distance_blocks_stay_under_the_chunk_size(model, monkeypatch):
    """A large image's search runs in bounded blocks: every (rows x peers) distance block of a
    stylisation is at most CHUNK_ELEMENTS numbers (here lowered so a small image needs many)."""
    from brushwork.methods import tpfr
    sizes = []
    inner = tpfr._block_knn

    def spy(q, peers, p2, k):
        sizes.append(q.shape[1] * peers.shape[1])
        return inner(q, peers, p2, k)
    monkeypatch.setattr(tpfr, "_block_knn", spy)
    content, style = image(64, 80, 0), image(48, 40, 1)
    whole = model.stylize(content, [style])
    n_whole = len(sizes)
    monkeypatch.setattr(model, "chunk_elements", 500)
    sizes.clear()
    chunked = model.stylize(content, [style])
    assert len(sizes) > 4 * n_whole and max(sizes) <= 500
    torch.testing.assert_close(chunked, whole, atol=1e-5, rtol=0)


def test_gather_rows_picks_the_indexed_rows():
    v = torch.arange(12.0).view(1, 4, 3)
    idx = torch.tensor([[[3, 0], [1, 1]]])
    out = gather_rows(v, idx)
    assert out.shape == (1, 2, 2, 3)
    torch.testing.assert_close(out[0, 0, 0], v[0, 3])
    torch.testing.assert_close(out[0, 1, 1], v[0, 1])


# ---------------------------------------------------------------- peer-regularisation layer
def test_the_style_being_the_content_with_k1_gives_back_the_contents_own_style_parts():
    layer = _randomise(PeerRecombination(4, 4, 8), seed=2)
    z = _latent(seed=3)
    out, stage1 = layer(z, z, k=1, return_parts=True)
    torch.testing.assert_close(out, z)  # [own content part, own style part]
    cc, _ = split(z, 4)
    torch.testing.assert_close(stage1, cc.flatten(2).transpose(1, 2))


def test_the_output_keeps_the_content_part_and_recombines_style_parts():
    layer = _randomise(PeerRecombination(4, 4, 8), seed=2)
    zc, zs = _latent(seed=4), _latent(h=5, w=9, seed=5)
    out = layer(zc, zs, k=3)
    assert out.shape == zc.shape
    torch.testing.assert_close(out[:, :4], zc[:, :4])
    # every recombined style vector is a convex combination of the style image's style parts
    ss = zs[:, 4:].flatten(2)[0]  # (4, 45)
    rs = out[:, 4:].flatten(2)[0]  # (4, 42)
    lo, hi = ss.min(1).values[:, None], ss.max(1).values[:, None]
    assert bool(((rs >= lo - 1e-5) & (rs <= hi + 1e-5)).all())
    # k = 1 takes exactly one of them per position
    one = layer(zc, zs, k=1)[:, 4:].flatten(2)[0]
    assert all(bool((ss - one[:, i:i + 1]).abs().amax(0).min() < 1e-6) for i in range(42))
    assert not torch.allclose(layer(zc, zs, k=1), out)


def test_chunked_and_whole_recombination_are_equal_and_a_batch_takes_one_style():
    layer = _randomise(PeerRecombination(4, 4, 8), seed=6)
    zc, zs = _latent(seed=7, b=2), _latent(h=8, w=5, seed=8)
    whole = layer(zc, zs, k=5)
    for chunk in (40, 97, 400):
        torch.testing.assert_close(layer(zc, zs, k=5, chunk_elements=chunk), whole,
                                   atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(whole[1:], layer(zc[1:], zs, k=5), atol=1e-5, rtol=1e-5)


def test_a_fresh_projection_is_the_identity():
    f = _latent(c=8, seed=9)
    torch.testing.assert_close(Projection(8, 3, 5)(f), f)
    assert Projection(8, 2, 2)(f).shape == (1, 4, 6, 7)


# --------------------------------------------------------------------------- metric loss
def test_metric_loss_known_values():
    a = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), dim=1)
    far = -a  # squared distance 4 from each anchor
    # identical anchor and positive, negatives beyond the margin: the minimum, 0
    assert float(trainer.metric_loss(a, a.clone(), [far], margin=1.0)) == 0.0
    # everything identical: only the margin is left
    assert float(trainer.metric_loss(a, a, [a], margin=0.5)) == pytest.approx(0.5)
    # positive at squared distance 2 (orthogonal), negative at 4 with margin 5: 2 + 1
    assert float(trainer.metric_loss(a, a.flip(1), [far], margin=5.0)) == pytest.approx(3.0)
    # two negatives are averaged
    assert float(trainer.metric_loss(a, a, [a, far], margin=1.0)) == pytest.approx(0.5)


# ------------------------------------------------------------------------------ the method
def test_pinned_tiny_output(model):
    assert_pinned_tiny(model, PINNED_TINY, PINNED_TINY_MEAN)


PINNED_TINY = [0.34284, 0.33163, 0.31574, 0.30594, 0.38727, 0.38504, 0.37482, 0.37082, 0.55321,
               0.55002, 0.54568, 0.5472]
PINNED_TINY_MEAN = 0.419548


def test_strength_zero_is_the_reconstruction(model):
    assert_strength_zero_is_reconstruction(model)


def test_neighbours_change_the_output_and_zero_is_refused(model):
    content, style = image(40, 48, 0), image(32, 40, 1)
    five = model.stylize(content, [style])
    one = model.stylize(content, [style], controls={"neighbours": 1})
    assert not torch.allclose(one, five, atol=1e-3)
    torch.testing.assert_close(model.stylize(content, [style], controls={"neighbours": 5}),
                               five)
    with pytest.raises(ControlError, match="neighbours"):
        model.stylize(content, [style], controls={"neighbours": 0})
    with pytest.raises(ControlError):
        model.stylize(content, [style], controls={"patch_size": 3})


def test_two_styles_by_weights_and_by_masks(model):
    content = image(40, 48, 0)
    s1, s2 = image(32, 40, 1), image(40, 32, 5)
    check_weights_and_masks(model, content, s1, s2, full_mask=True)


def test_tile_by_tile_runs(model):
    content, style = image(64, 80, 0), image(32, 40, 1)
    out = model.stylize(content, [style], tile=32)
    assert out.shape == content.shape
    assert float((out - model.stylize(content, [style])).abs().mean()) < 0.1


def test_weight_file_for_another_method_is_refused(tmp_path):
    path = tmp_path / "adain.safetensors"
    save_tiny(path, "adain", {"decoder": blocks.decoder(4, 1 / 32)}, {"width": str(1 / 32)})
    with pytest.raises(BrushworkError, match="not 'tpfr'"):
        TPFR(weights=str(path))


def test_bad_metadata_is_refused(tmp_path):
    path = tmp_path / "lvl.safetensors"
    save_weights(prefixed_state("projection", Projection(128, 4, 4)), path,
                 metadata={"method": "tpfr", "level": "2"})
    with pytest.raises(BrushworkError, match="level must be 3 or 4"):
        TPFR(weights=str(path))
    save_weights(prefixed_state("projection", Projection(256, 4, 4)), path,
                 metadata={"method": "tpfr", "level": "3", "content_dim": "0"})
    with pytest.raises(BrushworkError, match="content_dim"):
        TPFR(weights=str(path))


def test_shipped_weights_run_on_a_photo():
    check_shipped_on_a_photo(lambda: TPFR(bf16=False), "tpfr_vgg.safetensors")


# ----------------------------------------------------------------------------- the trainer
@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    return training_folders(tmp_path_factory.mktemp("tpfr_data"))


def _args(folders, out, **kw):
    return trainer_args(trainer, [
        "--content", str(folders / "content"), "--styles", str(folders / "styles"),
        "--out", str(out), "--size", "32", "--batch", "2", "--steps", "2",
        "--checkpoint-every", "1", "--sample-every", "0", "--no-bf16", "--init", "none",
        "--width", str(ENC_W), "--content-dim", "4", "--style-dim", "4", "--att-dim", "4",
        "--d-width", "4"], **kw)


@pytest.fixture(scope="module")
def vgg():
    from brushwork.core.vgg import VGG19
    return VGG19(last_layer="relu3_1")


def test_a_few_steps_lower_the_loss(vgg):
    torch.manual_seed(0)
    nets = trainer.Nets(3, 4, 4, 4, ENC_W)
    disc = trainer.Discriminator(4)
    c = torch.cat([image(32, 32, 0), image(32, 32, 5)])
    s = torch.cat([image(32, 32, 1), image(32, 32, 2)])
    w = {"reconstruction": 10.0, "cycle": 10.0, "content": 1.0, "metric": 1.0,
         "adversarial": 0.1, "style": 1.0, "margin": 0.5}
    opt = torch.optim.Adam(nets.parameters(), lr=3e-3)
    seen = []
    for _ in range(5):
        total, parts, out = trainer.losses(vgg, nets, disc, c, s, 3, 3, False,
                                           torch.device("cpu"), w)
        assert set(parts) == {"reconstruction", "cycle", "content", "metric", "adversarial",
                              "style", "total"}
        expect = sum(w[k] * parts[k] for k in w if k != "margin")
        assert total.item() == pytest.approx(expect, rel=1e-5)
        assert out.shape == c.shape
        seen.append(total.item())
        opt.zero_grad()
        total.backward()
        opt.step()
    assert seen[-1] < 0.8 * seen[0]


def test_training_resumes_where_it_stopped_and_exports(folders, tmp_path):
    a, meta, exported = check_resume_and_export(
        trainer, lambda out, **kw: _args(folders, out, **kw), tmp_path)
    assert meta["method"] == "tpfr" and meta["level"] == "3"
    assert {k.split(".")[0] for k in a} == {"projection", "peer", "decoder"}
    assert load_weights(exported)[1]["content_dim"] == "4"
    m = TPFR(weights=str(exported), bf16=False)
    out = m.stylize(image(32, 32, 0), [image(32, 32, 1)])
    assert out.shape == (1, 3, 32, 32)
    half = tmp_path / "half.safetensors"  # the shipped form: fp16 tensors
    trainer.export(tmp_path / "part.ckpt", half)
    assert half.stat().st_size < 0.6 * exported.stat().st_size
    out16 = TPFR(weights=str(half), bf16=False).stylize(image(32, 32, 0), [image(32, 32, 1)])
    assert float((out16 - out).abs().max()) < 2e-2


def test_init_needs_the_encoders_channels(folders, tmp_path):
    out = tmp_path / "x.safetensors"
    with pytest.raises(BrushworkError, match="--init needs"):
        trainer.run(_args(folders, out, init="auto"))
    assert not out.exists()


@pytest.mark.parametrize("kw,needle", [
    (dict(cycle_weight=-1), "--cycle-weight"),
    (dict(reconstruction_weight=0, cycle_weight=0), "learn nothing"),
    (dict(neighbours=0), "--neighbours"),
    (dict(content_dim=0), "--content-dim")])
def test_bad_training_options_are_refused(folders, tmp_path, kw, needle):
    out = tmp_path / "x.safetensors"
    with pytest.raises(BrushworkError, match=needle):
        trainer.run(_args(folders, out, **kw))
    assert not out.exists()


# ----------------------------------------------------------------------------- the CLI
def test_cli_end_to_end_and_bad_input(tiny, tmp_path, capsys):
    c, s = cli_pair(tmp_path)
    base = ["stylize", str(c), "-s", str(s), "-m", "tpfr", "--size", "0", "-q"]
    out = tmp_path / "out.png"
    assert main(base + ["--weights", str(tiny), "-o", str(out), "--strength", "0.8",
                        "--neighbours", "3"]) == 0
    assert Image.open(out).size == (48, 40)
    other = tmp_path / "adain.safetensors"
    save_tiny(other, "adain", {"decoder": blocks.decoder(4, 1 / 32)}, {"width": str(1 / 32)})
    assert_cli_refused(base + ["--weights", str(other)], tmp_path / "a.png", capsys)
    assert_cli_refused(base + ["--weights", str(tiny), "--neighbours", "0"], tmp_path / "b.png",
                       capsys)
    assert_cli_refused(base + ["--weights", str(tiny), "--patch-size", "3"], tmp_path / "d.png",
                       capsys)
