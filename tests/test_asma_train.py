"""`brushwork train asma --balance-artists`: artist-uniform painting batches."""
import argparse

import numpy as np
import pytest
import torch
from PIL import Image

from brushwork.train import asma as train_asma

COLOURS = {"alpha": (250, 10, 10), "beta": (10, 250, 10), "gamma": (10, 10, 250)}
COUNTS = {"alpha": 2, "beta": 6, "gamma": 12}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("asma_balance")
    rng = np.random.default_rng(0)
    for artist, n in COUNTS.items():
        (root / "artists" / artist).mkdir(parents=True)
        for i in range(n):  # each artist one flat colour: a crop tells whose painting it is
            a = np.empty((48, 48, 3), np.uint8)
            a[:] = COLOURS[artist]
            Image.fromarray(a).save(root / "artists" / artist / f"{artist}{i}.png")
    (root / "content").mkdir()
    for i in range(2):
        Image.fromarray((rng.random((48, 48, 3)) * 255).astype(np.uint8)).save(
            root / "content" / f"c{i}.png")
    return root


def _shares(paintings, balanced, draws=100, batch=20):
    g = torch.Generator().manual_seed(0)
    counts = torch.zeros(len(paintings.artists))
    for _ in range(draws):
        crops, labels = paintings.sample(32, batch, g, balanced)
        # every crop is a crop of a painting of its label's artist
        for crop, label in zip(crops, labels):
            want = torch.tensor(COLOURS[paintings.artists[int(label)]]) / 255
            assert torch.allclose(crop.mean((1, 2)), want, atol=0.01)
        counts += torch.bincount(labels, minlength=len(paintings.artists))
    return (counts / counts.sum()).tolist()


def test_balanced_batches_draw_every_artist_equally_often(data):
    paintings = train_asma.Paintings(data / "artists", 48, 2)
    assert paintings.artists == ["alpha", "beta", "gamma"]
    # default: each painting equally likely, so artists by their number of paintings (2:6:12)
    plain = _shares(paintings, False)
    assert plain == pytest.approx([0.1, 0.3, 0.6], abs=0.04)
    balanced = _shares(paintings, True)
    assert balanced == pytest.approx([1 / 3] * 3, abs=0.04)
    # seeded: the same generator state gives the same batch
    a = paintings.sample(32, 8, torch.Generator().manual_seed(5), True)
    b = paintings.sample(32, 8, torch.Generator().manual_seed(5), True)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def _parse(argv):
    p = argparse.ArgumentParser()
    train_asma.add_arguments(p)
    return p.parse_args([str(a) for a in argv])


def test_balance_artists_flag_trains_and_defaults_off(data, tmp_path):
    base = ["--styles", data / "artists", "--content", data / "content", "--preset", "tiny",
            "--min-images", 2, "--style-load-size", 48, "--checkpoint-every", 1,
            "--sample-every", 0, "--no-bf16", "--steps", 2]
    assert _parse(base + ["--out", tmp_path / "a.safetensors"]).balance_artists is False
    r = train_asma.run(_parse(base + ["--out", tmp_path / "b.safetensors",
                                      "--balance-artists"]))
    assert r["artists"] == ["alpha", "beta", "gamma"] and r["steps"] == 2
    assert all(np.isfinite(v) for v in r["losses"].values())
    assert {"adv", "feature", "transform", "d_hinge"} <= set(r["losses"])


def test_texture_term_is_zero_on_the_painting_itself_and_trains(data, tmp_path):
    from brushwork.core.vgg import VGG19
    torch.manual_seed(0)
    vgg = VGG19(last_layer="relu3_1", autocast=False)
    real = torch.rand(2, 3, 32, 32)
    own = vgg(real, list(train_asma.TEXTURE_LAYERS))
    assert float(train_asma.texture_term(vgg, own, real)) == pytest.approx(0.0, abs=1e-10)
    # a flat grey image has none of the painting's texture; its gradient points somewhere
    grey = torch.full_like(real, 0.5).requires_grad_(True)
    t = train_asma.texture_term(vgg, vgg(grey, list(train_asma.TEXTURE_LAYERS)), real)
    t.backward()
    assert float(t.detach()) > 0.1 and float(grey.grad.abs().sum()) > 0
    base = ["--styles", data / "artists", "--content", data / "content", "--preset", "tiny",
            "--min-images", 2, "--style-load-size", 48, "--checkpoint-every", 1,
            "--sample-every", 0, "--no-bf16", "--steps", 2]
    assert _parse(base + ["--out", tmp_path / "a.safetensors"]).texture_weight == 0.0
    r = train_asma.run(_parse(base + ["--out", tmp_path / "t.safetensors",
                                      "--texture-weight", 1]))
    assert np.isfinite(r["losses"]["texture"]) and r["losses"]["texture"] > 0
    with pytest.raises(Exception, match="texture-weight"):
        train_asma.run(_parse(base + ["--out", tmp_path / "n.safetensors",
                                      "--texture-weight", -1]))
