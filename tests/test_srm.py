"""SRM (style-based recalibration) blocks in the VGG-statistics artist classifier."""
import argparse
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from brushwork.cli import main
from brushwork.errors import BrushworkError
from brushwork.core.stats import mean_std
from brushwork.core.weights import save_weights
from brushwork.eval import classifier
from brushwork.eval.classifier import SRM, ArtistClassifier, statistics_of
from brushwork.train import classifier as train_classifier


def _sigmoid(v):
    return 1 / (1 + math.exp(-v))


def test_constant_map_has_zero_std_and_the_gate_is_the_expected_sigmoid():
    srm = SRM(2).eval()
    x = torch.ones(1, 2, 4, 5)
    x[:, 1] = 3.0  # channel 0 constant 1, channel 1 constant 3
    mean, std = mean_std(x, eps=srm.eps, unbiased=srm.unbiased)
    assert torch.equal(std, torch.zeros(1, 2)) and torch.equal(mean, torch.tensor([[1., 3.]]))
    with torch.no_grad():
        srm.cfc.copy_(torch.tensor([[0.5, 2.0], [-1.0, 4.0]]))
        srm.bn.running_mean.copy_(torch.tensor([0.25, -1.0]))
        srm.bn.running_var.copy_(torch.tensor([4.0, 1.0]))
        srm.bn.weight.copy_(torch.tensor([2.0, 1.0]))
        srm.bn.bias.copy_(torch.tensor([0.1, -0.5]))
    eps = srm.bn.eps
    g0 = _sigmoid(2.0 * (0.5 * 1 - 0.25) / math.sqrt(4 + eps) + 0.1)   # std term is 0
    g1 = _sigmoid(1.0 * (-1.0 * 3 + 1.0) / math.sqrt(1 + eps) - 0.5)
    y = srm(x)
    assert torch.allclose(y[0, 0], torch.full((4, 5), 1 * g0), atol=1e-6)
    assert torch.allclose(y[0, 1], torch.full((4, 5), 3 * g1), atol=1e-6)


def test_gate_uses_the_std_and_starts_at_one_half():
    x = torch.tensor([0., 0., 2., 2.]).view(1, 1, 2, 2)  # mean 1, unbiased std sqrt(4/3)
    srm = SRM(1).eval()
    assert torch.equal(srm(x), 0.5 * x)  # zero integration weights: every gate is 0.5
    with torch.no_grad():
        srm.cfc.copy_(torch.tensor([[0.0, 1.5]]))
    g = _sigmoid(1.5 * math.sqrt(4 / 3) / math.sqrt(1 + srm.bn.eps))
    assert torch.allclose(srm(x), g * x, atol=1e-6)


def test_shape_preserved_and_gates_in_unit_interval():
    torch.manual_seed(0)
    srm = SRM(6)
    with torch.no_grad():
        srm.cfc.normal_()
    x = torch.randn(3, 6, 5, 7).relu()
    y = srm(x)  # train mode: batch statistics
    assert y.shape == x.shape
    ratio = y / x.clamp_min(1e-12)
    m = x > 0
    assert (ratio[m] > 0).all() and (ratio[m] < 1).all()
    # one gate per (sample, channel): the ratio is constant over space
    for b in range(3):
        for c in range(6):
            r = ratio[b, c][m[b, c]]
            assert torch.allclose(r, r[0].expand_as(r), atol=1e-5)


@pytest.mark.parametrize("train", [True, False])
def test_gradcheck_float64(train):
    torch.manual_seed(1)
    srm = SRM(3).double().train(train)
    with torch.no_grad():
        srm.cfc.normal_()
        srm.bn.running_mean.uniform_(-1, 1)
        srm.bn.running_var.uniform_(0.5, 2)
    x = torch.rand(4, 3, 5, 6, dtype=torch.float64, requires_grad=True)

    def f(x, cfc):  # the integration weights as an input too
        return torch.func.functional_call(srm, {"cfc": cfc}, (x,))

    cfc = srm.cfc.detach().clone().requires_grad_(True)
    assert torch.autograd.gradcheck(f, (x, cfc), eps=1e-6, atol=1e-5)


def test_classifier_gates_statistics_exactly_as_the_feature_maps():
    """SRM on the maps, then pooling == the classifier's gating of the pooled statistics."""
    torch.manual_seed(2)
    layers = ("relu1_1", "relu2_1")
    clf = ArtistClassifier(["a", "b"], hidden=8, layers=layers, srm=True)
    with torch.no_grad():
        for block in clf.srm.values():
            block.cfc.normal_(0, 0.3)
            block.bn.running_mean.uniform_(-0.5, 0.5)
            block.bn.running_var.uniform_(0.5, 2)
    clf.eval()
    feats = {"relu1_1": torch.rand(2, 64, 6, 5), "relu2_1": torch.rand(2, 128, 3, 4)}
    gated = {n: clf.srm[n](f) for n, f in feats.items()}
    assert torch.allclose(clf.recalibrate(statistics_of(feats, layers)),
                          statistics_of(gated, layers), atol=1e-6)
    plain = ArtistClassifier(["a", "b"], hidden=8, layers=layers)
    s = statistics_of(feats, layers)
    assert plain.recalibrate(s) is s and plain.architecture == "plain"


def _fitted(srm: bool, seed=0):
    torch.manual_seed(seed)
    layers = ("relu1_1",)
    clf = ArtistClassifier(["a", "b", "c"], hidden=8, layers=layers, srm=srm)
    feats = torch.rand(30, classifier.feature_dim(layers)) * 2
    labels = torch.arange(30) % 3
    feats[labels == 1, :64] += 1.0  # class 1: brighter means
    train_classifier.fit_head(clf, feats, labels, epochs=3, batch=8, seed=seed)
    return clf, feats, labels


@pytest.mark.parametrize("srm", [False, True])
def test_save_load_round_trip_identical_outputs(tmp_path, srm):
    clf, feats, _ = _fitted(srm)
    if srm:
        assert clf.srm["relu1_1"].bn.num_batches_tracked.item() > 0
        assert clf.srm["relu1_1"].cfc.abs().sum() > 0
    clf.save(tmp_path / "c.safetensors", {"seed": "3"})
    back = ArtistClassifier.load(tmp_path / "c.safetensors")
    assert back.architecture == ("srm" if srm else "plain") and back.split_seed == 3
    assert back.layers == ("relu1_1",) and back.classes == ["a", "b", "c"]
    with torch.no_grad():
        assert torch.equal(back(feats), clf.eval()(feats))
    # fp16 weights load into the same architecture with near-identical logits
    clf.save(tmp_path / "h.safetensors", fp16=True)
    half = ArtistClassifier.load(tmp_path / "h.safetensors")
    with torch.no_grad():
        assert torch.allclose(half(feats), clf(feats), atol=0.05)
        assert torch.equal(half(feats).argmax(1), clf(feats).argmax(1))


def test_files_without_architecture_load_plain_and_bad_ones_raise(tmp_path):
    clf, feats, _ = _fitted(False)
    meta = {"kind": "artist_classifier", "classes": json.dumps(clf.classes),
            "layers": json.dumps(list(clf.layers)), "hidden": "8", "size": "256"}
    save_weights(dict(clf.state_dict()), tmp_path / "old.safetensors", metadata=meta)
    old = ArtistClassifier.load(tmp_path / "old.safetensors")
    assert old.architecture == "plain"
    with torch.no_grad():
        assert torch.equal(old(feats), clf(feats))
    save_weights(dict(clf.state_dict()), tmp_path / "odd.safetensors",
                 metadata={**meta, "architecture": "resnet"})
    with pytest.raises(BrushworkError, match="unknown classifier architecture"):
        ArtistClassifier.load(tmp_path / "odd.safetensors")
    # plain tensors declared as srm: a clear error, not a RuntimeError
    save_weights(dict(clf.state_dict()), tmp_path / "lie.safetensors",
                 metadata={**meta, "architecture": "srm"})
    with pytest.raises(BrushworkError, match="do not match a srm"):
        ArtistClassifier.load(tmp_path / "lie.safetensors")


def test_two_training_steps_lower_the_loss_and_move_the_srm():
    torch.manual_seed(4)
    layers = ("relu1_1",)
    clf = ArtistClassifier(["a", "b"], hidden=8, dropout=0.0, layers=layers, srm=True)
    labels = torch.arange(16) % 2
    feats = torch.rand(16, classifier.feature_dim(layers))
    feats[labels == 1] *= 3
    train_classifier.fit_head(clf, feats, labels, epochs=0)  # the standardisation only
    with torch.no_grad():
        before = F.cross_entropy(clf.eval()(feats), labels).item()
    start = {k: v.clone() for k, v in clf.srm.state_dict().items()}
    train_classifier.fit_head(clf, feats, labels, epochs=1, batch=8, lr=1e-2)  # two steps
    with torch.no_grad():
        after = F.cross_entropy(clf.eval()(feats), labels).item()
    assert after < before
    assert not torch.equal(clf.srm["relu1_1"].cfc, start["relu1_1.cfc"])
    assert clf.srm["relu1_1"].bn.num_batches_tracked.item() == 2


def test_fit_head_skips_a_one_sample_batch_with_srm():
    layers = ("relu1_1",)
    clf = ArtistClassifier(["a", "b"], hidden=8, layers=layers, srm=True)
    feats = torch.rand(5, classifier.feature_dim(layers))
    train_classifier.fit_head(clf, feats, torch.tensor([0, 1, 0, 1, 0]), epochs=1, batch=4)
    assert clf.srm["relu1_1"].bn.num_batches_tracked.item() == 1


def _artists(root):
    rng = np.random.default_rng(0)
    for a in ("red", "blue"):
        (root / "art" / a).mkdir(parents=True)
        for i in range(4):
            img = rng.integers(0, 60, (32, 32, 3))
            img[..., 0 if a == "red" else 2] += 190
            Image.fromarray(img.astype(np.uint8)).save(root / "art" / a / f"{i}.png")
    return root / "art"


def test_train_cli_srm_end_to_end(tmp_path):
    _artists(tmp_path)
    p = argparse.ArgumentParser()
    train_classifier.add_arguments(p)
    common = ["--styles", str(tmp_path / "art"), "--min-images", "2", "--holdout", "0.5",
              "--size", "32", "--epochs", "30", "--hidden", "8", "--layers", "relu1_1,relu2_1",
              "--cache", str(tmp_path / "cache.pt")]
    plain = train_classifier.run(p.parse_args(common + ["--out", str(tmp_path / "p.st")]))
    srm = train_classifier.run(p.parse_args(common + ["--out", str(tmp_path / "s.st"), "--srm",
                                                      "--fp16", "--fit-seed", "5"]))
    assert plain["architecture"] == "plain" and srm["architecture"] == "srm"
    assert srm["n_heldout"] == 4 and set(srm["accuracy"]) == {"red", "blue", "overall"}
    clf = ArtistClassifier.load(tmp_path / "s.st")
    assert clf.architecture == "srm" and clf.split_seed == 0
    assert set(clf.srm) == {"relu1_1", "relu2_1"}
    few = train_classifier.run(p.parse_args(common + ["--out", str(tmp_path / "f.st"), "--srm",
                                                      "--train-per-artist", "1"]))
    assert few["n_train"] == 2 and few["n_heldout"] == 4  # the same held-out paintings
    with pytest.raises(BrushworkError, match="--train-per-artist"):
        train_classifier.run(p.parse_args(common + ["--out", str(tmp_path / "x.st"),
                                                    "--train-per-artist", "0"]))
    assert not (tmp_path / "x.st").exists()
    img = torch.zeros(1, 3, 32, 32)
    img[:, 0] = 0.9
    probs = clf.predict_proba(img)
    assert probs.shape == (1, 2) and torch.allclose(probs.sum(1), torch.ones(1))


def test_brushwork_train_classifier_srm_command(tmp_path, capsys):
    art = _artists(tmp_path)
    args = ["train", "classifier", "--styles", str(art), "--min-images", "2", "--holdout", "0.5",
            "--size", "32", "--epochs", "5", "--hidden", "8", "--layers", "relu1_1"]
    out = tmp_path / "srm.safetensors"
    assert main(args + ["--srm", "--out", str(out)]) == 0
    assert ArtistClassifier.load(out).architecture == "srm"
    capsys.readouterr()
    bad = tmp_path / "bad.safetensors"
    assert main(args + ["--srm", "--train-per-artist", "-1", "--out", str(bad)]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("brushwork: error:") and not bad.exists()


def test_shipped_judge_still_loads():
    clf = ArtistClassifier.load()
    assert clf.architecture in classifier.ARCHITECTURES
    assert len(clf.classes) == 8 and clf.layers == classifier.FEATURE_LAYERS
    assert clf.feat_mean.shape == (classifier.FEATURE_DIM,)
