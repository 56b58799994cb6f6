"""The texture judge (hand-made features, linear classifier), its trainer, the texture
measures and `brushwork eval style-accuracy --judge`, on small generated images."""
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from brushwork.cli import main
from brushwork.core.protocol import Capabilities
from brushwork.errors import BrushworkError
from brushwork.eval import style_accuracy
from brushwork.eval import texture_judge as tj
from brushwork.train import TRAINERS


def _palette(rng):
    """Two colours 100 apart in every channel around a random base (both 'artists' draw their
    palettes from this one distribution: only the texture tells them apart)."""
    base = rng.uniform(70, 185, 3)
    return base + 50, base - 50


def _stripes(rng, n=56):
    """Thin oriented stripes, period 5-7 px."""
    a, b = _palette(rng)
    th = rng.uniform(0, np.pi)
    y, x = np.mgrid[0:n, 0:n]
    s = (np.sin((x * np.cos(th) + y * np.sin(th)) * 2 * np.pi / rng.uniform(5, 7)) > 0)[..., None]
    img = np.where(s, a, b) + rng.normal(0, 4, (n, n, 3))
    return img.clip(0, 255).astype(np.uint8)


def _blobs(rng, n=56):
    """Large soft blobs: upsampled noise."""
    a, b = _palette(rng)
    t = torch.from_numpy(rng.normal(0, 1, (1, 1, 7, 7))).float()
    m = F.interpolate(t, size=(n, n), mode="bicubic", align_corners=False)[0, 0].numpy()
    m = ((m - m.min()) / (np.ptp(m) + 1e-6))[..., None]
    img = a * m + b * (1 - m) + rng.normal(0, 4, (n, n, 3))
    return img.clip(0, 255).astype(np.uint8)


def _tensor(a):
    return torch.from_numpy(np.asarray(a, np.float32) / 255).permute(2, 0, 1)[None]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Folders of two synthetic artists (10 images each), a trained judge, 2 content photos."""
    root = tmp_path_factory.mktemp("judge")
    rng = np.random.default_rng(0)
    for name, make in (("blobs", _blobs), ("stripes", _stripes)):
        (root / "styles" / name).mkdir(parents=True)
        for i in range(10):
            Image.fromarray(make(rng)).save(root / "styles" / name / f"{name}{i}.png")
    (root / "content").mkdir()
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (40, 48, 3)).astype(np.uint8)).save(
            root / "content" / f"c{i}.png")
    out = root / "judge.safetensors"
    assert "texture-judge" in TRAINERS
    assert main(["train", "texture-judge", "--styles", str(root / "styles"), "--out", str(out),
                 "--min-images", "2", "--holdout", "0.3", "--size", "48", "--crops", "1",
                 "--cache", str(root / "feats.pt"), "--json", str(root / "report.json"),
                 "-q"]) == 0
    return root, out, json.loads((root / "report.json").read_text())


def test_judge_separates_held_out_paintings_and_new_samples(data):
    root, out, report = data
    assert report["n_heldout"] == 6 and report["n_train"] == 14
    assert report["accuracy"]["blobs"] == 1.0 and report["accuracy"]["stripes"] == 1.0
    judge = tj.TextureJudge.load(out)
    assert judge.classes == ["blobs", "stripes"] and judge.holdout == 0.3
    rng = np.random.default_rng(123)  # samples no split ever saw
    fresh = [_tensor(_blobs(rng)) for _ in range(3)] + [_tensor(_stripes(rng)) for _ in range(3)]
    assert judge.predict(fresh) == ["blobs"] * 3 + ["stripes"] * 3
    p = judge.predict_proba(torch.cat(fresh))
    assert p.shape == (6, 2) and torch.allclose(p.sum(1), torch.ones(6))


def test_feature_sets(data, tmp_path):
    root, out, _ = data
    n = len(tj.feature_index("texture"))
    assert n + len(tj.feature_index("colour")) == tj.FEATURE_DIM == len(tj.feature_index("all"))
    default = tj.TextureJudge.load(out)  # the trainer's default: luminance texture only
    assert default.feature_set == "texture" and default.weight.shape == (2, n)
    both = tmp_path / "all.safetensors"
    assert main(["train", "texture-judge", "--styles", str(root / "styles"), "--out", str(both),
                 "--min-images", "2", "--holdout", "0.3", "--size", "48", "--crops", "1",
                 "--cache", str(root / "feats.pt"), "--feature-set", "all", "--l2", "1e-3",
                 "-q"]) == 0
    judge = tj.TextureJudge.load(both)
    assert judge.feature_set == "all" and judge.weight.shape == (2, tj.FEATURE_DIM)
    rng = np.random.default_rng(7)
    assert judge.predict([_tensor(_blobs(rng)), _tensor(_stripes(rng))]) == ["blobs", "stripes"]
    with pytest.raises(BrushworkError, match="unknown feature set"):
        tj.feature_index("shape")


def test_weights_round_trip_and_bad_files(data, tmp_path):
    root, out, _ = data
    judge = tj.TextureJudge.load(out)
    again = tmp_path / "again.safetensors"
    judge.save(again)
    other = tj.TextureJudge.load(again)
    x = [_tensor(_stripes(np.random.default_rng(5)))]
    assert other.classes == judge.classes
    assert torch.equal(other.predict_proba(x), judge.predict_proba(x))
    from brushwork.core.weights import save_weights
    save_weights({"w": torch.zeros(2)}, tmp_path / "not.safetensors", metadata={"kind": "x"})
    with pytest.raises(BrushworkError, match="not a texture judge"):
        tj.TextureJudge.load(tmp_path / "not.safetensors")
    with pytest.raises(BrushworkError, match="not found"):
        tj.TextureJudge.load(tmp_path / "missing.safetensors")


def test_features_are_deterministic_and_finite():
    rng = np.random.default_rng(1)
    x = _tensor(_blobs(rng, 64))
    a, b = tj.texture_features(x), tj.texture_features(x.clone())
    assert a.shape == (tj.FEATURE_DIM,) == (len(tj.feature_names()),)
    assert torch.equal(a, b) and torch.isfinite(a).all()
    assert not torch.equal(a, tj.texture_features(_tensor(_stripes(rng, 64))))
    with pytest.raises(BrushworkError, match="too small"):
        tj.texture_features(torch.rand(1, 3, 20, 20), None)


def test_lab_and_lbp_known_values():
    white = torch.ones(1, 3, 4, 4)
    assert torch.allclose(tj.rgb_to_lab(white)[0, :, 0, 0], torch.tensor([100.0, 0, 0]),
                          atol=1e-2)
    flat = torch.full((1, 1, 12, 12), 0.5)  # every neighbour equals the centre: all bits set
    assert torch.equal(tj.lbp_histogram(flat, 1), F.one_hot(torch.tensor(8), 10).float())
    peak = torch.zeros(1, 1, 12, 12)
    peak[..., 6, 6] = 1.0  # the peak itself has no neighbour >= it: code 0
    assert int(tj.lbp_codes(peak, 1)[4, 4]) == 0


def test_highpass_correlation():
    rng = np.random.default_rng(2)
    x = _tensor(rng.integers(0, 255, (64, 64, 3)))
    assert tj.highpass_correlation([x, x.clone()]) == pytest.approx(1.0, abs=1e-6)
    noise = [_tensor(rng.integers(0, 255, (64, 64, 3))) for _ in range(3)]
    assert abs(tj.highpass_correlation(noise)) < 0.1
    # the same texture added to unrelated images: the outputs correlate, the inputs do not
    stamp = torch.from_numpy(rng.normal(0, 0.15, (1, 1, 64, 64))).float()
    outs = [(n * 0.5 + 0.25 + stamp).clamp(0, 1) for n in noise]
    r = tj.texture_correlation(outs, noise)
    assert r["outputs"] > 0.5 and abs(r["photos"]) < 0.1
    with pytest.raises(BrushworkError, match="one size"):
        tj.highpass_correlation([x, noise[0][..., :32]])


def test_spectrum_correlation_finds_the_same_texture_anywhere():
    rng = np.random.default_rng(4)
    noise = [_tensor(rng.integers(0, 255, (96, 96, 3))) for _ in range(3)]
    y, x = np.mgrid[0:96, 0:96]
    hatch = torch.from_numpy(np.sin((0.8 * x + 0.6 * y) * 2 * np.pi / 5) * 0.25).float()
    moved = [(n * 0.5 + 0.25 + torch.roll(hatch, (int(rng.integers(0, 20)),
                                                  int(rng.integers(0, 20))), (0, 1)))
             .clamp(0, 1) for n in noise]
    assert tj.spectrum_correlation([noise[0], noise[0].clone()]) == pytest.approx(1.0)
    r = tj.texture_correlation(moved, noise)
    assert r["spectrum_outputs"] > r["spectrum_photos"] + 0.3
    assert r["spectrum_photos"] < 0.3


def test_stroke_scale_moves_coarser_when_upsampled():
    rng = np.random.default_rng(3)
    x = _tensor(rng.integers(0, 255, (64, 64, 3)))
    s1 = tj.stroke_scale(x, levels=5)
    s2 = tj.stroke_scale(F.interpolate(x, scale_factor=2, mode="bicubic").clamp(0, 1), levels=5)
    s4 = tj.stroke_scale(F.interpolate(x, scale_factor=4, mode="bicubic").clamp(0, 1), levels=5)
    assert s1["mean_level"] + 0.3 < s2["mean_level"] < s4["mean_level"] - 0.3
    assert s1["peak_level"] == 0 < s4["peak_level"]
    assert sum(s1["shares"]) == pytest.approx(1.0)


class Copy:
    """A stand-in painting-driven method that returns the driving painting (a perfect forger)."""
    name = "copy"
    capabilities = Capabilities()
    controls = {}

    def stylize(self, content, styles, **kw):
        return F.interpolate(styles[0], size=content.shape[-2:], mode="bilinear")


def test_style_accuracy_with_the_texture_judge(data):
    root, out, _ = data
    judge = tj.TextureJudge.load(out)
    contents = style_accuracy.content_set(root / "content", 2, 48, seed=0)

    paintings = style_accuracy.heldout_for_judges({"texture": judge}, root / "styles")
    assert {a: len(v) for a, v in paintings.items()} == {"blobs": 3, "stripes": 3}
    r = style_accuracy.evaluate("copy", Copy(), {"texture": judge, "again": judge}, contents,
                                paintings=paintings)
    assert r["overall"] == 1.0 and r["n"] == 4 and set(r["judges"]) == {"texture", "again"}
    cols = style_accuracy.judge_columns({"copy": r})
    assert list(cols) == ["copy (texture)", "copy (again)"]
    assert "| stripes | 100 % | 100 % |" in style_accuracy.format_table(cols)
    with pytest.raises(BrushworkError, match="no artist"):
        style_accuracy.evaluate("copy", Copy(), judge, contents, artists=["nobody"],
                                paintings=paintings)
    with pytest.raises(BrushworkError, match="unknown judge"):
        style_accuracy.load_judges("nope")


def test_cli_judge_texture_runs_and_bad_judge_exits_2(data, tmp_path, capsys):
    root, out, _ = data
    base = ["eval", "style-accuracy", "--methods", "adain", "--styles", str(root / "styles"),
            "--content", str(root / "content"), "--n-content", "1", "--size", "48",
            "--style-size", "48", "-q", "--texture-judge", str(out)]
    capsys.readouterr()
    assert main(base + ["--judge", "texture", "--json", str(tmp_path / "a.json")]) == 0
    printed = capsys.readouterr().out
    assert "| blobs |" in printed and "adain (texture)" in printed
    result = json.loads((tmp_path / "a.json").read_text())
    assert result["judges"] == ["texture"] and result["results"]["adain"]["n"] == 2
    assert main(base + ["--judge", "nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("brushwork: error:") and "--judge" in err and "\n" not in err


def test_shipped_judge_loads_and_knows_the_eight_artists():
    judge = tj.TextureJudge.load()  # the shipped file, sha256 checked against MANIFEST.json
    assert len(judge.classes) == 8 and "ukiyo_e" in judge.classes
    assert judge.holdout == 0.2 and judge.split_seed == 0
    p = judge.predict_proba([torch.rand(1, 3, 48, 64, generator=torch.Generator().manual_seed(0))])
    assert p.shape == (1, 8) and torch.allclose(p.sum(), torch.tensor(1.0))
