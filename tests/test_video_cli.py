"""`brushwork video` and `brushwork eval video` through the CLI, with a toy method."""
from __future__ import annotations

from fractions import Fraction

import pytest
import torch

from brushwork import cli
from brushwork.core.image import save_image
from brushwork.methods import METHODS
from brushwork.core.protocol import Capabilities

from video_clip import make_clip, stream_facts


class Toy:
    """Deterministic but flickering: content mixed with noise drawn per call."""
    name = "toy"
    summary = "test method"
    controls = {}
    capabilities = Capabilities()

    def __init__(self, device="cpu"):
        self.calls = 0

    def stylize(self, content, styles, *, style_weights=None, controls=None, seed=None,
                callback=None):
        g = torch.Generator().manual_seed(self.calls)
        self.calls += 1
        return (0.5 * content + 0.5 * torch.rand(content.shape, generator=g)).clamp(0, 1)


@pytest.fixture
def setup(tmp_path, monkeypatch):
    monkeypatch.setitem(METHODS, "toy", Toy)
    clip = make_clip(tmp_path / "in.mp4")
    style = save_image(torch.rand(1, 3, 16, 16), tmp_path / "style.png")
    return tmp_path, clip, style


def test_cli_video_and_eval(setup, capsys):
    tmp, clip, style = setup
    errs = {}
    for mode in ("none", "flow"):
        out = tmp / f"{mode}.mp4"
        rc = cli.main(["video", str(clip), "-s", str(style), "-m", "toy", "-o", str(out),
                       "--size", "0", "--consistency", mode])
        assert rc == 0
        assert "10 frames" in capsys.readouterr().out
        f = stream_facts(out)
        assert f["frames"] == 10 and f["fps"] == Fraction(12) and f["audio_codec"] == "aac"
        assert cli.main(["eval", "video", str(clip), str(out)]) == 0
        line = capsys.readouterr().out
        errs[mode] = float(line.split()[2])
    assert errs["flow"] < 0.5 * errs["none"]


@pytest.mark.parametrize("make_bad, message", [
    (lambda p: p.write_text("not a video\n" * 50), "not a video file"),
    (lambda p: make_clip(p, frames=[], audio="aac"), "no video stream"),
])
def test_cli_bad_input_one_line_no_output(setup, capsys, make_bad, message):
    tmp, clip, style = setup
    bad = tmp / "bad.mp4"
    make_bad(bad)
    out = tmp / "out.mp4"
    rc = cli.main(["video", str(bad), "-s", str(style), "-m", "toy", "-o", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and message in err
    assert not out.exists()
    assert sorted(p.name for p in tmp.iterdir()) == ["bad.mp4", "in.mp4", "style.png"]


def test_cli_unsupported_codec(setup, capsys):
    tmp, clip, style = setup
    rc = cli.main(["video", str(clip), "-s", str(style), "-m", "toy", "-o", str(tmp / "o.webm"),
                   "--codec", "h264"])
    err = capsys.readouterr().err
    assert rc == 2 and "cannot be stored in a .webm file" in err and err.count("\n") == 1
    assert not (tmp / "o.webm").exists()


def test_cli_flow_blend_and_resample(setup, capsys):
    tmp, clip, style = setup
    out = tmp / "sticky.mp4"
    assert cli.main(["video", str(clip), "-s", str(style), "-m", "toy", "-o", str(out),
                     "--size", "0", "--flow-blend", "0.95", "--flow-resample", "lanczos"]) == 0
    assert stream_facts(out)["frames"] == 10
    assert cli.main(["eval", "video", str(clip), str(out)]) == 0
    sticky = float(capsys.readouterr().out.strip().splitlines()[-1].split()[2])
    plain = tmp / "plain.mp4"
    assert cli.main(["video", str(clip), "-s", str(style), "-m", "toy", "-o", str(plain),
                     "--size", "0", "--consistency", "none"]) == 0
    capsys.readouterr()
    assert cli.main(["eval", "video", str(clip), str(plain)]) == 0
    assert sticky < 0.3 * float(capsys.readouterr().out.strip().splitlines()[-1].split()[2])


def test_cli_size_zero_keeps_the_input_size_and_negative_is_refused(setup, capsys):
    tmp, clip, style = setup
    out = tmp / "keep.mp4"
    assert cli.main(["video", str(clip), "-s", str(style), "-m", "toy", "-o", str(out),
                     "--size", "0"]) == 0
    assert stream_facts(out)["size"] == (64, 48)
    capsys.readouterr()
    bad = tmp / "neg.mp4"
    assert cli.main(["video", str(clip), "-s", str(style), "-m", "toy", "-o", str(bad),
                     "--size", "-5"]) == 2
    err = capsys.readouterr().err
    assert "--size" in err and err.count("\n") == 1 and not bad.exists()
