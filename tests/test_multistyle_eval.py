"""Style accuracy (classifier as judge) and the labelled style sheet, on tiny synthetic data."""
import argparse

import numpy as np
import pytest
import torch
from PIL import Image

from brushwork.eval import classifier, style_accuracy
from brushwork.errors import BrushworkError
from brushwork.methods import asma
from brushwork.train import asma as train_asma, classifier as train_classifier
from brushwork.core.protocol import Capabilities


def _save(path, a):
    Image.fromarray(a.astype(np.uint8)).save(path)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    rng = np.random.default_rng(0)
    for a in ("red", "blue"):
        (root / "artists" / a).mkdir(parents=True)
        for i in range(4):
            img = rng.integers(0, 60, (48, 48, 3))
            img[..., 0 if a == "red" else 2] += 190
            _save(root / "artists" / a / f"{a}{i}.png", img)
    (root / "content").mkdir()
    for i in range(2):
        _save(root / "content" / f"c{i}.png", rng.integers(0, 255, (40, 40, 3)))
    p = argparse.ArgumentParser()
    train_classifier.add_arguments(p)
    train_classifier.run(p.parse_args(["--styles", str(root / "artists"), "--out",
                                 str(root / "clf.safetensors"), "--min-images", "2", "--holdout",
                                 "0.5", "--size", "48", "--epochs", "200", "--hidden", "8"]))
    return root, classifier.ArtistClassifier.load(root / "clf.safetensors")


class StyleCopy:
    """A stand-in arbitrary-style method: returns the style painting at the content's size."""
    name = "copy"
    capabilities = Capabilities()
    controls = {}

    def stylize(self, content, styles, *, style_weights=None, controls=None, seed=None,
                callback=None):
        return torch.nn.functional.interpolate(styles[0], size=content.shape[-2:])


def test_style_accuracy_with_a_painting_driven_method(setup):
    root, clf = setup
    contents = style_accuracy.content_set(root / "content", 2, 40, seed=0)
    paintings = style_accuracy.heldout_paintings(clf, root / "artists", clf.holdout, clf.split_seed)
    assert all(len(v) == 2 for v in paintings.values())
    r = style_accuracy.evaluate("copy", StyleCopy(), clf, contents, paintings=paintings)
    assert r["n"] == 4 and r["overall"] == 1.0 and r["per_artist"] == {"red": 1.0, "blue": 1.0}
    assert r["confusion"] == {"red": {"red": 2}, "blue": {"blue": 2}}
    table = style_accuracy.format_table({"copy": r})
    assert "| red | 100 % |" in table and "**100.0 %**" in table


def test_style_accuracy_with_asma_labels_and_sheet(setup, tmp_path):
    root, clf = setup
    out = tmp_path / "asma.safetensors"
    p = argparse.ArgumentParser()
    train_asma.add_arguments(p)
    train_asma.run(p.parse_args(["--styles", str(root / "artists"), "--content", str(root / "content"),
                           "--out", str(out), "--preset", "tiny", "--min-images", "2",
                           "--steps", "1", "--d-steps", "1", "--style-load-size", "48",
                           "--sample-every", "0", "--no-bf16"]))
    m = asma.Asma(weights=out)
    contents = style_accuracy.content_set(root / "content", 1, 40, seed=0)
    r = style_accuracy.evaluate("asma", m, clf, contents)
    assert r["n"] == 2 and 0.0 <= r["overall"] <= 1.0 and set(r["per_artist"]) == {"red", "blue"}
    assert {a: sum(row.values()) for a, row in r["confusion"].items()} == {"red": 1, "blue": 1}
    assert r["confusion"][("red")].get("red", 0) == r["per_artist"]["red"]
    sheet = style_accuracy.sheet_for(m, contents[0][1], size=40)
    assert sheet.size == (3 * 44 + 4, 1 * (40 + 14 + 4) + 4)  # content + 2 artists, labelled
    with pytest.raises(BrushworkError, match="no built-in styles"):
        style_accuracy.sheet_for(StyleCopy(), contents[0][1])

    # the same through the command line: sheet and eval style-accuracy
    from brushwork.cli import main
    photo = root / "content" / "c0.png"
    assert main(["sheet", str(photo), "-m", "asma", "--weights", str(out), "-o",
                 str(tmp_path / "sheet.png"), "--size", "32"]) == 0
    assert (tmp_path / "sheet.png").exists()
    assert main(["eval", "style-accuracy", "--methods", "asma", "--weights", f"asma={out}",
                 "--classifier", str(root / "clf.safetensors"), "--judge", "vgg",
                 "--styles", str(root / "artists"),
                 "--content", str(root / "content"), "--n-content", "1", "--size", "32", "-q",
                 "--json", str(tmp_path / "acc.json")]) == 0
    assert "overall" in (tmp_path / "acc.json").read_text()
    assert main(["stylize", str(photo), "-m", "asma", "--weights", str(out), "--artist", "red",
                 "--stroke", "2", "-o", str(tmp_path / "a.png"), "--size", "32", "-q"]) == 0
    assert main(["stylize", str(photo), "-m", "asma", "--weights", str(out), "--artist", "nobody",
                 "-o", str(tmp_path / "b.png"), "-q"]) == 2
