"""The `brushwork` command end to end on tiny images, and every bad input of the foundation."""
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from brushwork.cli import main

FAST = ["--steps", "3", "--size", "32", "--precision", "fp32", "-q"]


@pytest.fixture()
def files(tmp_path, content_img, style_img, style_img2):
    from conftest import save_png
    return {"c": str(save_png(content_img, tmp_path / "c.png")),
            "s": str(save_png(style_img, tmp_path / "s.png")),
            "s2": str(save_png(style_img2, tmp_path / "s2.png")), "dir": tmp_path}


def test_stylize_end_to_end_in_process(files, capsys):
    out = files["dir"] / "o.png"
    assert main(["stylize", files["c"], "-s", files["s"], "-o", str(out), "--steps", "3",
                 "--size", "32", "--precision", "fp32"]) == 0
    im = Image.open(out)
    assert im.size == (32, 23) and im.mode == "RGB"
    assert "wrote" in capsys.readouterr().out


def test_console_script_two_styles_weights_mask_and_jpeg(files):
    out = files["dir"] / "o.jpg"
    m = files["dir"] / "m.png"
    Image.new("L", (56, 40), 255).save(m)
    r = subprocess.run([sys.executable, "-m", "brushwork", "stylize", files["c"], "-s", files["s"],
                        "-s", files["s2"], "--style-weights", "0.7,0.3", "--blend", "loss-mix",
                        "--mask", str(m), "--mask", str(m), "--tv-weight", "10",
                        "--preserve-color", "luminance", "-o", str(out)] + FAST,
                       capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr
    assert Image.open(out).format == "JPEG"


def test_seed_determinism_through_cli(files):
    outs = []
    for i in range(2):
        o = files["dir"] / f"d{i}.png"
        assert main(["stylize", files["c"], "-s", files["s"], "-o", str(o), "--init", "noise",
                     "--seed", "7"] + FAST) == 0
        outs.append(np.asarray(Image.open(o)))
    assert np.array_equal(*outs)


def test_methods_lists_gatys_controls(capsys):
    assert main(["methods", "-v"]) == 0
    out = capsys.readouterr().out
    assert "gatys" in out and "--style-weight" in out and "--blend" in out


def _bad(files, args, capsys, match):
    out = files["dir"] / "bad.png"
    code = main(["stylize"] + args(files) + ["-o", str(out)] + FAST) if callable(args) else \
        main(["stylize"] + args + ["-o", str(out)] + FAST)
    err = capsys.readouterr().err
    assert code != 0
    assert err.startswith("brushwork: error:") and err.count("\n") == 1, err
    assert match in err
    assert not out.exists()
    assert not [p for p in os.listdir(files["dir"]) if p.startswith(".bad")]  # no temp file


def test_missing_file(files, capsys):
    _bad(files, lambda f: [str(f["dir"] / "nope.jpg"), "-s", f["s"]], capsys, "no such file")


def test_not_an_image(files, capsys):
    (files["dir"] / "t.jpg").write_text("definitely not a jpeg")
    _bad(files, lambda f: [f["c"], "-s", str(f["dir"] / "t.jpg")], capsys, "not an image")


def test_truncated_image(files, capsys):
    p = files["dir"] / "big.jpg"
    Image.fromarray((np.random.default_rng(0).random((200, 200, 3)) * 255).astype(np.uint8)).save(p)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 3])
    _bad(files, lambda f: [str(p), "-s", f["s"]], capsys, "truncated")


def test_zero_byte_file(files, capsys):
    (files["dir"] / "z.png").write_bytes(b"")
    _bad(files, lambda f: [str(f["dir"] / "z.png"), "-s", f["s"]], capsys, "empty")


def test_image_over_pixel_guard(files, capsys):
    _bad(files, lambda f: [f["c"], "-s", f["s"], "--max-pixels", "1000"], capsys, "pixel guard")


def test_unknown_method(files, capsys):
    _bad(files, lambda f: [f["c"], "-s", f["s"], "-m", "picasso9000"], capsys, "unknown method")


def test_unknown_control_value(files, capsys):
    _bad(files, lambda f: [f["c"], "-s", f["s"], "--blend", "smoosh"], capsys, "blend")


def test_unknown_flag(files, capsys):
    _bad(files, lambda f: [f["c"], "-s", f["s"], "--no-such-flag", "1"], capsys, "unrecognized")


def test_unsupported_control_for_method(files, capsys):
    _bad(files, lambda f: [f["c"], "-s", f["s"], "--strength", "0.5"], capsys, "does not support")


def test_mask_of_wrong_size(files, capsys):
    m = files["dir"] / "m.png"
    Image.new("L", (10, 40), 255).save(m)
    _bad(files, lambda f: [f["c"], "-s", f["s"], "--mask", str(m)], capsys, "mask")


def test_weights_not_matching_styles(files, capsys):
    _bad(files, lambda f: [f["c"], "-s", f["s"], "--style-weights", "0.5,0.5"], capsys,
         "for 1 style image")


def test_nan_weight(files, capsys):
    _bad(files, lambda f: [f["c"], "-s", f["s"], "--style-weight", "nan"], capsys, "finite")


def test_output_directory_missing(files, capsys):
    out = files["dir"] / "missing" / "o.png"
    code = main(["stylize", files["c"], "-s", files["s"], "-o", str(out)] + FAST)
    assert code == 2 and "does not exist" in capsys.readouterr().err


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_output_directory_not_writable(files, capsys):
    ro = files["dir"] / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        code = main(["stylize", files["c"], "-s", files["s"], "-o", str(ro / "o.png")] + FAST)
        assert code == 2 and "not writable" in capsys.readouterr().err
    finally:
        ro.chmod(0o700)


def test_output_parent_is_a_file(files, capsys):
    code = main(["stylize", files["c"], "-s", files["s"], "-o", files["c"] + "/o.png"] + FAST)
    assert code == 2 and "not a directory" in capsys.readouterr().err


def test_no_style(files, capsys):
    code = main(["stylize", files["c"], "-o", str(files["dir"] / "o.png")] + FAST)
    assert code == 2 and "style" in capsys.readouterr().err


def test_progress_lines_when_not_a_terminal(capsys):
    """Off a terminal the bar becomes plain lines: at most one per interval, always the last."""
    from brushwork.cli.common import ProgressBar
    from brushwork.core.protocol import Progress
    bar = ProgressBar(enabled=True, unit="step", tty=False, every=3600)
    for i in range(1, 11):
        bar(Progress("adain", "train", step=i, total=10, losses={"total": 1.0 / i},
                     elapsed=float(i)))
    bar.close()
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == ["adain 10/10 steps (100 %) elapsed 0m10s eta 0m00s total=0.1"]
    quiet = ProgressBar(enabled=False, tty=False, every=0)
    quiet(Progress("adain", "train", step=1, total=1))
    assert capsys.readouterr().err == ""


_ENTRY = """
import atexit, sys, threading, time
import torch  # the quick exit applies to processes that loaded PyTorch
import brushwork.cli as cli
path, mode = sys.argv[1], sys.argv[2]
def fake_main():
    if mode == "atexit":
        atexit.register(lambda: open(path, "w").write("exit handler ran"))
    else:  # a worker thread still writing when the command returns
        def late():
            time.sleep(0.5)
            open(path, "w").write("thread finished")
        threading.Thread(target=late).start()
    print("said before the exit", flush=False)
    return 3
cli.main = fake_main
cli.entry()
raise SystemExit("entry() returned")
"""


@pytest.mark.parametrize("mode,written", [("atexit", "exit handler ran"),
                                          ("thread", "thread finished")])
def test_entry_keeps_the_exit_code_output_exit_handlers_and_threads(tmp_path, mode, written):
    """The program's quick exit (no interpreter teardown) still flushes what the command
    printed, runs the exit handlers, waits for a thread still at work and exits with the
    command's code."""
    path = tmp_path / "mark.txt"
    r = subprocess.run([sys.executable, "-c", _ENTRY, str(path), mode], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 3, r.stderr
    assert r.stdout == "said before the exit\n"
    assert path.read_text() == written
