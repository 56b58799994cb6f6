"""How bad input must fail: the specification of brushwork's hostile-input behaviour.

The rule, for every case below:

* CLI: exit code 2, exactly one line on stderr starting ``brushwork: error: `` (the last
  non-empty line), no ``Traceback``, and no output file, temp file or hidden file left behind.
* Python API (``brushwork.stylize``, ``brushwork.get_stylizer`` where exposed): a
  :class:`brushwork.BrushworkError` subclass, never a raw TypeError / ValueError /
  ZeroDivisionError / OSError / RuntimeError, and never a silently wrong image.

Only stable interfaces are used: ``brushwork.cli.main`` (in process, for speed), the
``python -m brushwork`` console (in a subprocess, where signals or memory limits are needed)
and ``brushwork.stylize``. Images are tiny (16-48 px) and the methods fast ones.
"""
from __future__ import annotations

import contextlib
import errno
import io
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import brushwork
from brushwork import BrushworkError
from brushwork.cli import main

from video_clip import make_clip, texture

FEED_FORWARD = ["adain", "wct", "linear", "sanet", "styleswap", "johnson", "cin", "asma"]
STYLELESS = ["johnson", "cin", "asma"]  # methods that take no style image
ERROR_PREFIX = "brushwork: error:"
NO_CUDA = not torch.cuda.is_available()


# ------------------------------------------------------------------------------------- helpers
def _env():
    """The environment of a brushwork subprocess: one thread, and the same brushwork package
    this test process imported (a worktree copy under PYTHONPATH, or the installed one)."""
    pkg_root = str(Path(brushwork.__file__).resolve().parent.parent)
    pp = os.environ.get("PYTHONPATH", "")
    return {**os.environ, "OMP_NUM_THREADS": "1",
            "PYTHONPATH": pkg_root + (os.pathsep + pp if pp else "")}


class _StillRunning(BaseException):
    """Raised by the alarm of ``run_cli(..., deadline=)``: the command was still working."""


def _alarm(signum, frame):
    raise _StillRunning()


def run_cli(args, cwd=None, deadline=None):
    """``brushwork ARGS`` in this process: (exit code, stdout, stderr). An exception that
    escapes ``main`` is what the console would show as a traceback: it is returned as exit
    code ``"traceback"`` with the formatted traceback on stderr. ``deadline`` (seconds): a
    command still running then is stopped and reported as exit code ``"still running"``."""
    out, err = io.StringIO(), io.StringIO()
    old = os.getcwd()
    old_handler = signal.signal(signal.SIGALRM, _alarm) if deadline else None
    try:
        if cwd is not None:
            os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                if deadline:
                    signal.setitimer(signal.ITIMER_REAL, deadline)
                code = main([str(a) for a in args])
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            except _StillRunning:
                err.write(f"[test] still running after {deadline} s: stopped\n")
                code = "still running"
            except Exception:  # noqa: BLE001 - a crash is exactly what we report
                err.write(traceback.format_exc())
                code = "traceback"
            finally:
                if deadline:
                    signal.setitimer(signal.ITIMER_REAL, 0)
    finally:
        if deadline:
            signal.signal(signal.SIGALRM, old_handler)
        os.chdir(old)
    return code, out.getvalue(), err.getvalue()


def run_console(args, cwd=None, timeout=120, preexec_fn=None):
    """``python -m brushwork ARGS`` in a subprocess: (exit code, stdout, stderr)."""
    r = subprocess.run([sys.executable, "-m", "brushwork", *map(str, args)], cwd=cwd,
                       capture_output=True, text=True, env=_env(), timeout=timeout,
                       preexec_fn=preexec_fn)
    return r.returncode, r.stdout, r.stderr


def _listing(folders):
    return {Path(f): set(os.listdir(f)) for f in folders if Path(f).is_dir()}


def check_error_output(code, stdout, stderr, what=""):
    """The CLI's error contract on an already finished run; returns the error message."""
    tail = stderr[-3000:]
    assert code == 2, f"{what}: exit code {code!r}, expected 2; stderr:\n{tail}"
    assert "Traceback" not in stderr, f"{what}: traceback on stderr:\n{tail}"
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith(ERROR_PREFIX)]
    assert len(errors) == 1, f"{what}: {len(errors)} '{ERROR_PREFIX}' lines:\n{tail}"
    assert lines[-1].startswith(ERROR_PREFIX), f"{what}: last stderr line is not the error:\n{tail}"
    return errors[0][len(ERROR_PREFIX):].strip()


def assert_cli_error(args, cwd=None, expect_no=(), watch=(), match=None, console=False,
                     preexec_fn=None, deadline=None):
    """Run the CLI and check the error contract: exit 2, one ``brushwork: error:`` line (the
    last), no traceback, none of ``expect_no`` exists afterwards, and no new file (hidden or
    not) appeared in their folders or in ``watch``. ``match``: words of which at least one
    must be in the message (case-insensitive). Returns the message."""
    expect_no = [Path(cwd or ".", p) if not Path(p).is_absolute() else Path(p) for p in expect_no]
    folders = {p.parent for p in expect_no} | {Path(w) for w in watch}
    before = _listing(folders)
    run = run_console if console else run_cli
    kw = {"preexec_fn": preexec_fn} if console else {"deadline": deadline}
    code, out, err = run(args, cwd=cwd, **kw)
    what = "brushwork " + " ".join(map(str, args))
    msg = check_error_output(code, out, err, what)
    for p in expect_no:
        assert not p.exists(), f"{what}: {p} was left behind"
    after = _listing(folders)
    for folder, names in after.items():
        new = sorted(names - before.get(folder, set()))
        assert not new, f"{what}: left {new} in {folder}"
    if match is not None:
        words = [match] if isinstance(match, str) else list(match)
        assert any(w.lower() in msg.lower() for w in words), \
            f"{what}: message {msg!r} mentions none of {words}"
    return msg


def assert_api_error(fn, what="", match=None):
    """``fn()`` must raise a BrushworkError subclass (not return, not raise something else)."""
    try:
        result = fn()
    except BrushworkError as e:
        if match is not None:
            words = [match] if isinstance(match, str) else list(match)
            assert any(w.lower() in str(e).lower() for w in words), \
                f"{what}: message {str(e)!r} mentions none of {words}"
        return e
    except Exception as e:  # noqa: BLE001
        pytest.fail(f"{what}: raised {type(e).__name__} ({e}) instead of a BrushworkError")
    pytest.fail(f"{what}: returned {type(result).__name__} "
                f"{getattr(result, 'size', '')} instead of raising a BrushworkError")


def _vmdata() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmData:"):
                return int(line.split()[1]) * 1024
    return 0


@contextlib.contextmanager
def memory_cap(extra_bytes=2 * 2 ** 30):
    """Cap this process's data segment at its current size + ``extra_bytes`` for the block, so
    code that tries to allocate many GiB fails at once instead of swapping the machine."""
    old = resource.getrlimit(resource.RLIMIT_DATA)
    cap = _vmdata() + extra_bytes
    if old[1] != resource.RLIM_INFINITY:
        cap = min(cap, old[1])
    resource.setrlimit(resource.RLIMIT_DATA, (cap, old[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_DATA, old)


def truncated_jpeg(path, size=(48, 32), seed=0):
    """The first half of a real JPEG's bytes."""
    buf = io.BytesIO()
    Image.fromarray(texture(size[1], size[0], seed)).save(buf, format="JPEG", quality=95)
    data = buf.getvalue()
    Path(path).write_bytes(data[: len(data) // 2])
    return Path(path)


# ------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    """Read-only inputs shared by the module (tests write only into their own tmp_path)."""
    d = tmp_path_factory.mktemp("assets")
    c = texture(32, 48, 3)
    Image.fromarray(c).save(d / "c.png")                      # 48x32 content
    Image.fromarray(texture(32, 32, 4)).save(d / "s.png")     # 32x32 style
    Image.fromarray(texture(1, 1, 5) + 1).save(d / "one.png")  # 1x1
    Image.fromarray(texture(2, 2, 6)).save(d / "two.png")     # 2x2
    truncated_jpeg(d / "trunc.jpg")
    (d / "corrupt.png").write_bytes(np.random.default_rng(0).bytes(2000))
    make_clip(d / "clip.mp4", n=4, w=32, h=24, audio=None)
    return {"dir": d, "c": d / "c.png", "s": d / "s.png", "one": d / "one.png",
            "two": d / "two.png", "trunc": d / "trunc.jpg", "corrupt": d / "corrupt.png",
            "clip": d / "clip.mp4", "c_arr": c}


@pytest.fixture()
def out(tmp_path):
    """An empty output folder of the test's own."""
    o = tmp_path / "out"
    o.mkdir()
    return o


def _style_args(method, assets):
    return [] if method in STYLELESS else ["-s", assets["s"]]


# --------------------------------------------------------------------- 1. tiny images / sizes
@pytest.mark.parametrize("image,size", [("one", "0"), ("c", "2")], ids=["1x1-at-own-size",
                                                                           "size-2"])
@pytest.mark.parametrize("method", FEED_FORWARD)
def test_01_tiny_image_refused_with_a_minimum(assets, out, method, image, size):
    o = out / "o.png"
    assert_cli_error(["stylize", assets[image], *_style_args(method, assets), "-m", method,
                      "--size", size, "-q", "-o", o], expect_no=[o],
                     match=["minimum", "at least", "too small", "smaller than"])


@pytest.mark.parametrize("image,size", [("two", "0"), ("c", "1")], ids=["2x2-at-own-size",
                                                                           "size-1"])
def test_01_tiny_image_refused_adain_more(assets, out, image, size):
    o = out / "o.png"
    assert_cli_error(["stylize", assets[image], "-s", assets["s"], "-m", "adain", "--size", size,
                      "-q", "-o", o], expect_no=[o],
                     match=["minimum", "at least", "too small", "smaller than"])


# -------------------------------------------------------------------------- 2. --size 0 / -5
def _documents_keep_size(command):
    """Whether ``brushwork COMMAND --help`` documents ``--size 0`` as 'keep the size'."""
    _, text, _ = run_cli([*command, "--help"])
    text = " ".join(text.split())
    m = re.search(r"--size SIZE (.*?)(?= --?[a-zA-Z]|$)", text[text.find("options:"):])
    return bool(m and re.search(r"\b0 = keep", m.group(1)))


@pytest.mark.parametrize("args", [
    ["stylize", "{c}", "-s", "{s}", "-m", "adain", "-q", "--size=-5", "-o", "{o}"],
    ["demo", "--steps", "1", "-q", "--size=-5", "-o", "{o}"],
], ids=["stylize", "demo"])
def test_02_negative_size_refused(assets, out, args):
    o = out / "o.png"
    args = [a.format(c=assets["c"], s=assets["s"], o=o) for a in args]
    assert_cli_error(args, expect_no=[o], match="size")


def test_02_negative_size_refused_video(assets, out):
    o = out / "o.mp4"
    assert_cli_error(["video", assets["clip"], "-s", assets["s"], "-m", "adain", "-q",
                      "--size=-5", "-o", o], expect_no=[o], match="size")


def test_02_size_zero_stylize_keeps_size_or_is_refused(assets, out):
    o = out / "o.png"
    args = ["stylize", assets["c"], "-s", assets["s"], "-m", "adain", "-q", "--size", "0",
            "-o", o]
    if _documents_keep_size(["stylize"]):
        code, _, err = run_cli(args)
        assert code == 0, err
        assert Image.open(o).size == (48, 32), "--size 0 is documented as keeping the size"
    else:
        assert_cli_error(args, expect_no=[o], match="size")


def test_02_size_zero_demo_keeps_size_or_is_refused(out):
    o = out / "o.png"
    args = ["demo", "--steps", "1", "-q", "--size", "0", "-o", o]
    if _documents_keep_size(["demo"]):
        code, _, err = run_cli(args)
        assert code == 0, err
        assert max(Image.open(o).size) > 16, "--size 0 is documented as keeping the size"
    else:
        assert_cli_error(args, expect_no=[o], match="size")


def test_02_api_negative_size_refused(assets):
    assert_api_error(lambda: brushwork.stylize(assets["c"], assets["s"], method="adain",
                                               size=-5), "size=-5")


def test_02_api_size_zero_not_16x16(assets):
    """size=0: refused, or the content's own size (as None) -- never a silent 16x16."""
    try:
        im = brushwork.stylize(assets["c"], assets["s"], method="adain", size=0)
    except BrushworkError:
        return
    except Exception as e:  # noqa: BLE001
        pytest.fail(f"size=0 raised {type(e).__name__} ({e}) instead of a BrushworkError")
    assert im.size == (48, 32), f"size=0 wrote {im.size[0]}x{im.size[1]}"


# ------------------------------------------------------------------------ 3. no upper bound
def test_03_huge_size_refused_before_allocating(assets, out):
    o = out / "o.png"
    with memory_cap():
        assert_cli_error(["stylize", assets["c"], "-s", assets["s"], "-m", "adain", "-q",
                          "--size", "30000", "-o", o], expect_no=[o],
                         match=["maximum", "at most", "too large", "pixel guard", "max-pixels",
                                "exceeds"])


def test_03_api_huge_size_refused_before_allocating(assets):
    with memory_cap():
        assert_api_error(lambda: brushwork.stylize(assets["c"], assets["s"], method="adain",
                                                   size=30000), "size=30000")


# ------------------------------------------------------------------------------ 4. devices
@pytest.mark.parametrize("method,device", [
    pytest.param("adain", "cuda", marks=pytest.mark.skipif(not NO_CUDA, reason="has CUDA")),
    pytest.param("gatys", "cuda", marks=pytest.mark.skipif(not NO_CUDA, reason="has CUDA")),
    ("adain", "tpu"),
], ids=["adain-cuda", "gatys-cuda", "adain-tpu"])
def test_04_missing_device_stylize(assets, out, method, device):
    o = out / "o.png"
    steps = ["--steps", "1"] if method == "gatys" else []
    assert_cli_error(["stylize", assets["c"], "-s", assets["s"], "-m", method, *steps, "-q",
                      "--size", "32", "--device", device, "-o", o], expect_no=[o], match=device)


@pytest.mark.skipif(not NO_CUDA, reason="has CUDA")
def test_04_missing_device_video(assets, out):
    o = out / "o.mp4"
    assert_cli_error(["video", assets["clip"], "-s", assets["s"], "-m", "adain", "-q",
                      "--size", "32", "--consistency", "none", "--device", "cuda", "-o", o],
                     expect_no=[o], match="cuda")


@pytest.mark.skipif(not NO_CUDA, reason="has CUDA")
def test_04_missing_device_api(assets):
    assert_api_error(lambda: brushwork.stylize(assets["c"], assets["s"], method="adain",
                                               size=32, device="cuda"), 'device="cuda"')


# ------------------------------------------------------------- 5. options a method lacks
@pytest.mark.parametrize("method,extra", [
    ("gatys", ["--encoder", "small"]),
    ("gatys", ["--weights", "X.safetensors"]),
    ("sanet", ["--encoder", "small"]),
], ids=["gatys-encoder", "gatys-weights", "sanet-encoder"])
def test_05_option_the_method_lacks(assets, out, method, extra):
    o = out / "o.png"
    steps = ["--steps", "1"] if method == "gatys" else []
    assert_cli_error(["stylize", assets["c"], "-s", assets["s"], "-m", method, *steps, "-q",
                      "--size", "32", *extra, "-o", o], expect_no=[o])


# -------------------------------------------------------------------- 6. --max-pixels nan
@pytest.mark.parametrize("value", ["nan", "inf"])
def test_06_max_pixels_not_finite(assets, out, value):
    o = out / "o.png"
    assert_cli_error(["stylize", assets["c"], "-s", assets["s"], "-m", "adain", "-q",
                      "--size", "32", "--max-pixels", value, "-o", o], expect_no=[o],
                     match=["max-pixels", "max_pixels"])


def test_06_api_max_pixels_nan_does_not_disable_the_guard(assets):
    assert_api_error(lambda: brushwork.stylize(assets["c"], assets["s"], method="adain",
                                               size=32, max_pixels=float("nan")),
                     "max_pixels=nan")


# ------------------------------------------------------------------- 7. gatys --init 1x1
def test_07_gatys_init_1x1_image(assets, out):
    o = out / "o.png"
    assert_cli_error(["stylize", assets["c"], "-s", assets["s"], "-m", "gatys", "--steps", "1",
                      "-q", "--size", "32", "--init", assets["one"], "-o", o], expect_no=[o],
                     match="init")


# ------------------------------------------------------------------------- 8. full disk
@pytest.fixture()
def full_disk(monkeypatch):
    """Pillow's writer writes half of the encoded bytes, then the disk is full."""
    orig = Image.Image.save

    def save(self, fp, format=None, **params):
        if format is None:
            name = fp if isinstance(fp, (str, os.PathLike)) else getattr(fp, "name", "x.png")
            format = Image.registered_extensions().get(Path(str(name)).suffix.lower(), "PNG")
        buf = io.BytesIO()
        orig(self, buf, format=format, **params)
        data = buf.getvalue()
        if isinstance(fp, (str, os.PathLike)):
            with open(fp, "wb") as f:
                f.write(data[: len(data) // 2])
        else:
            fp.write(data[: len(data) // 2])
            fp.flush()
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", save)


@pytest.mark.parametrize("ext", [".jpg", ".tif", ".bmp", ".png"])
def test_08_full_disk_while_saving(assets, out, full_disk, ext):
    o = out / f"o{ext}"
    assert_cli_error(["stylize", assets["c"], "-s", assets["s"], "-m", "adain", "-q",
                      "--size", "32", "-o", o], expect_no=[o],
                     match=["space", "cannot write", "write"])


def test_08_full_disk_keeps_an_existing_output(assets, out, full_disk):
    o = out / "o.jpg"
    o.write_bytes(b"previous result")
    assert_cli_error(["stylize", assets["c"], "-s", assets["s"], "-m", "adain", "-q",
                      "--size", "32", "-o", o], watch=[out])
    assert o.read_bytes() == b"previous result", "a failed save damaged the existing file"


# ---------------------------------------------------------------- 9. signals during video
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_09_signal_during_video_leaves_nothing(assets, tmp_path, sig):
    src = tmp_path / "in"
    src.mkdir()
    clip = make_clip(src / "clip.mp4", n=8, w=48, h=32, audio=None)
    style = shutil.copy(assets["s"], src / "s.png")
    out = tmp_path / "out"
    out.mkdir()
    o = out / "o.mp4"
    p = subprocess.Popen([sys.executable, "-m", "brushwork", "video", str(clip), "-s", str(style),
                          "-m", "gatys", "--steps", "400", "--tol", "0", "--size", "24",
                          "--consistency", "none", "--precision", "fp32", "-o", str(o)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    try:
        t0 = time.monotonic()
        # until it writes (its temp file appears) or has surely started (imports, VGG loaded)
        while time.monotonic() - t0 < 30 and p.poll() is None:
            if os.listdir(out) and time.monotonic() - t0 > 1:
                time.sleep(0.5)
                break
            time.sleep(0.1)
        else:
            if p.poll() is None:
                time.sleep(1)
        assert p.poll() is None, f"finished before the signal:\n{p.stderr.read()[-2000:]}"
        seen = sorted(os.listdir(out))
        p.send_signal(sig)
        try:
            _, err = p.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            _, err = p.communicate()
            pytest.fail(f"still running 30 s after {sig.name}")
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate()
    assert p.returncode != 0, f"exit code 0 after {sig.name}"
    left = sorted(os.listdir(out))
    assert not left, f"after {sig.name} (files seen while running: {seen}) left {left} in the " \
                     f"output folder; exit {p.returncode}; stderr:\n{err[-2000:]}"
    assert sorted(os.listdir(src)) == ["clip.mp4", "s.png"]


class _StopInFinaliser:
    """Sends SIGHUP to its own process from ``__del__`` and runs on: the handler's exception is
    raised inside the finaliser, where Python prints "Exception ignored" and drops it (as when
    the signal lands in the import system's lock clean-up)."""

    def __del__(self):
        os.kill(os.getpid(), signal.SIGHUP)
        for _ in range(20000):
            pass


def _spin(seconds):
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        pass


def test_09_a_stop_dropped_by_a_finaliser_is_raised_again(monkeypatch):
    from brushwork.cli import Terminated, _terminate, _Unwind
    dropped = []
    monkeypatch.setattr(sys, "unraisablehook", lambda u: dropped.append(u.exc_value))
    old = signal.signal(signal.SIGHUP, _terminate)
    try:  # the plain handler: the stop is dropped and the program runs on
        _StopInFinaliser()
        _spin(0.3)
    finally:
        signal.signal(signal.SIGHUP, old)
    assert [type(e) for e in dropped] == [Terminated]
    t0 = time.monotonic()
    with pytest.raises(Terminated, match="SIGHUP"):
        with _Unwind():
            _StopInFinaliser()
            _spin(5)
    assert time.monotonic() - t0 < 1 and len(dropped) == 1
    assert signal.getsignal(signal.SIGHUP) is old and signal.getitimer(signal.ITIMER_REAL) == (0, 0)
    sys.unraisablehook(type("U", (), {"exc_value": ValueError()}))  # the hook is ours again
    assert type(dropped[-1]) is ValueError


# ------------------------------------------------------------- 10-11. eval style-accuracy
# Judging one image runs the artist classifier's VGG at 256 px (a minute on a slow CPU), so a
# check that must come first is given EVAL_DEADLINE seconds: a command still working then has
# gone on to evaluate and is stopped.
EVAL_DEADLINE = 5


@pytest.fixture()
def eval_dirs(assets, tmp_path):
    """A content folder of one photo and an (unused by asma) styles folder."""
    content = tmp_path / "content"
    content.mkdir()
    shutil.copy(assets["c"], content / "c.png")
    styles = tmp_path / "styles"
    styles.mkdir()
    return {"content": content, "styles": styles, "dir": tmp_path}


def _eval_args(d, *extra):
    return ["eval", "style-accuracy", "--methods", "asma", "--styles", d["styles"],
            "--content", d["content"], "--n-content", "1", "--size", "32", *extra]


@pytest.mark.parametrize("kind", ["parent-is-a-file", "parent-missing", "is-a-directory"])
def test_10_eval_json_unwritable_fails_at_once(eval_dirs, kind):
    d = eval_dirs
    target = {"parent-is-a-file": d["content"] / "c.png" / "r.json",
              "parent-missing": d["dir"] / "missing" / "r.json",
              "is-a-directory": d["styles"]}[kind]
    code, stdout, stderr = run_cli(_eval_args(d, "--json", target), deadline=EVAL_DEADLINE)
    msg = check_error_output(code, stdout, stderr, f"--json {kind}")
    assert "json" in msg.lower() or str(target) in msg, msg
    # before the evaluation: no progress line, no result table
    assert " images" not in stderr and "| artist |" not in stdout, \
        f"it evaluated before refusing --json:\n{stderr}\n{stdout}"
    assert not (d["dir"] / "missing").exists() and d["styles"].is_dir()
    assert sorted(os.listdir(d["styles"])) == []
    assert sorted(os.listdir(d["content"])) == ["c.png"]


@pytest.mark.parametrize("extra", [
    ["--n-content", "0"], ["--n-content=-1"], ["--size=-5"], ["--methods", ","],
], ids=["n-content-0", "n-content--1", "size--5", "methods-comma"])
def test_11_eval_bad_numbers_and_empty_methods(eval_dirs, extra):
    assert_cli_error(_eval_args(eval_dirs, *extra), watch=[eval_dirs["dir"]],
                     deadline=EVAL_DEADLINE)


# ------------------------------------------------------------------------ 12. bad controls
def test_12_negative_style_layer_weights(assets, out):
    o = out / "o.png"
    assert_cli_error(["stylize", assets["c"], "-s", assets["s"], "-m", "gatys", "--steps", "1",
                      "-q", "--size", "32", "--style-layer-weights", "1,-1,1,1,1", "-o", o],
                     expect_no=[o], match="style")


def test_12_temporal_weight_nan(assets, out):
    o = out / "o.mp4"
    assert_cli_error(["video", assets["clip"], "-s", assets["s"], "-m", "gatys", "--steps", "1",
                      "-q", "--size", "24", "--temporal-weight", "nan", "-o", o],
                     expect_no=[o], match="temporal")


def test_12_wct_levels_empty(assets, out):
    o = out / "o.png"
    assert_cli_error(["stylize", assets["c"], "-s", assets["s"], "-m", "wct", "-q",
                      "--size", "32", "--levels", ",", "-o", o], expect_no=[o], match="level")


def test_12_truncated_jpeg_rejected_by_stylize(assets, out):
    """The reference: stylize rejects the truncated JPEG (as content and as style)."""
    o = out / "o.png"
    assert_cli_error(["stylize", assets["trunc"], "-s", assets["s"], "-m", "adain", "-q",
                      "--size", "32", "-o", o], expect_no=[o], match="truncated")
    assert_cli_error(["stylize", assets["c"], "-s", assets["trunc"], "-m", "adain", "-q",
                      "--size", "32", "-o", o], expect_no=[o], match="truncated")


def test_12_video_refuses_truncated_style(assets, out):
    o = out / "o.mp4"
    assert_cli_error(["video", assets["clip"], "-s", assets["trunc"], "-m", "adain", "-q",
                      "--size", "24", "--consistency", "none", "-o", o], expect_no=[o],
                     match="truncated")


@pytest.mark.parametrize("where", ["first", "later"])
@pytest.mark.parametrize("sink", [".mp4", "folder"])
def test_12_video_refuses_truncated_frame(assets, tmp_path, out, where, sink):
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(3):
        Image.fromarray(texture(24, 32, 10 + i)).save(frames / f"f{i:03d}.jpg", quality=95)
    truncated_jpeg(frames / ("f000.jpg" if where == "first" else "f002.jpg"), (32, 24))
    o = out / "o.mp4" if sink == ".mp4" else out / "frames_out"
    assert_cli_error(["video", frames, "-s", assets["s"], "-m", "adain", "-q", "--size", "24",
                      "--consistency", "none", "-o", o], expect_no=[o], match="truncated")


# --------------------------------------------------------------------------- 13. Python API
def _api_cases():
    def st(**kw):
        return lambda a: brushwork.stylize(a["c"], a["s"], **{"method": "adain", "size": 32, **kw})

    def trunc_pil(a):
        return brushwork.stylize(Image.open(a["trunc"]), a["s"], method="adain", size=32)

    return [
        ("size-str", st(size="big")),
        ("size-float", st(size=1.5)),
        ("size-negative", st(size=-1)),
        ("seed-str", st(seed="x")),
        ("seed-2**70", st(seed=2 ** 70)),
        ("style_weights-two-for-one", st(style_weights=[1, 2])),
        ("style_weights-str", st(style_weights=["a"])),
        ("style_weights-nan", st(style_weights=[float("nan")])),
        ("style_weights-negative", st(style_weights=[-1])),
        ("style_weights-not-a-list", st(style_weights=1.0)),
        ("device-nonsense", st(device="nonsense")),
        ("device-int", st(device=5)),
        ("method_options-unknown", st(method_options={"bogus": 1})),
        ("method_options-not-a-dict", st(method_options="notadict")),
        ("content-0x0-array", lambda a: brushwork.stylize(np.zeros((0, 0, 3), np.uint8), a["s"],
                                                          method="adain", size=32)),
        ("style-0x0-array", lambda a: brushwork.stylize(a["c"], np.zeros((0, 0, 3), np.uint8),
                                                        method="adain", size=32)),
        ("lazy-truncated-PIL", trunc_pil),
        ("unknown-method", st(method="picasso9000")),
        ("missing-file", lambda a: brushwork.stylize(a["dir"] / "nope.png", a["s"],
                                                     method="adain", size=32)),
        ("corrupt-file", lambda a: brushwork.stylize(a["corrupt"], a["s"], method="adain",
                                                     size=32)),
        ("unknown-control", st(bogus=1)),
    ]


@pytest.mark.parametrize("case", _api_cases(), ids=[c[0] for c in _api_cases()])
def test_13_api_bad_arguments(assets, case):
    name, fn = case
    assert_api_error(lambda: fn(assets), name)


def test_13_get_stylizer_bad_arguments():
    get_stylizer = getattr(brushwork, "get_stylizer", None)
    if get_stylizer is None:
        pytest.skip("brushwork.get_stylizer is not exposed")
    assert_api_error(lambda: get_stylizer("picasso9000"), "get_stylizer unknown method")
    assert_api_error(lambda: get_stylizer("adain", "nonsense"), "get_stylizer bad device")
    assert_api_error(lambda: get_stylizer("adain", bogus=1), "get_stylizer unknown option")
    assert_api_error(lambda: get_stylizer("gatys", encoder="small"),
                     "get_stylizer gatys encoder")


# ------------------------------------------------------- 14. dtypes are not clipped to white
def _reference(assets):
    return np.asarray(brushwork.stylize(assets["c_arr"], assets["s"], method="adain", size=32),
                      dtype=np.int16)


@pytest.mark.parametrize("kind", ["uint16-array", "int64-tensor", "uint8-tensor"])
def test_14_integer_images_converted_by_dtype_or_refused(assets, kind):
    c = assets["c_arr"]
    x = {"uint16-array": lambda: c.astype(np.uint16) * 257,
         "int64-tensor": lambda: torch.from_numpy(c.astype(np.int64)).permute(2, 0, 1),
         "uint8-tensor": lambda: torch.from_numpy(c.copy()).permute(2, 0, 1)}[kind]()
    try:
        im = brushwork.stylize(x, assets["s"], method="adain", size=32)
    except BrushworkError:
        return  # refusing is acceptable
    except Exception as e:  # noqa: BLE001
        pytest.fail(f"{kind}: raised {type(e).__name__} ({e}) instead of a BrushworkError")
    a = np.asarray(im, dtype=np.int16)
    ref = _reference(assets)
    assert (a >= 250).mean() < 0.5, f"{kind}: the result is saturated (content clipped to white)"
    assert a.shape == ref.shape and np.abs(a - ref).max() <= 3, \
        f"{kind}: differs from the uint8 result by up to {np.abs(a - ref).max()} levels"


@pytest.mark.parametrize("kind", ["float-array-0-255", "float-tensor-0-255"])
def test_14_float_images_above_1_refused(assets, kind):
    c = assets["c_arr"].astype(np.float32)
    x = c if kind == "float-array-0-255" else torch.from_numpy(c).permute(2, 0, 1)
    assert_api_error(lambda: brushwork.stylize(x, assets["s"], method="adain", size=32), kind)


# ----------------------------------------------------------- 15. video paths are not URLs
def test_15_video_url_like_input_is_a_missing_file(assets, tmp_path, out):
    make_clip(tmp_path / "a.ts", n=3, w=32, h=24, audio=None)
    make_clip(tmp_path / "b.ts", n=3, w=32, h=24, audio=None)
    shutil.copy(assets["s"], tmp_path / "s.png")
    assert_cli_error(["video", "concat:a.ts|b.ts", "-s", "s.png", "-m", "adain", "-q",
                      "--size", "24", "--consistency", "none", "-o", "out/o.mp4"],
                     cwd=tmp_path, expect_no=["out/o.mp4"], watch=[tmp_path],
                     match=["no such file", "not found", "does not exist"])


@pytest.mark.parametrize("which", ["input", "output"])
def test_15_video_local_file_with_colon_is_a_file(assets, tmp_path, which):
    shutil.copy(assets["clip"], tmp_path / ("my:clip.mp4" if which == "input" else "clip.mp4"))
    shutil.copy(assets["s"], tmp_path / "s.png")
    src = "my:clip.mp4" if which == "input" else "clip.mp4"
    dst = "my:out.mp4" if which == "output" else "out.mp4"
    code, _, err = run_cli(["video", src, "-s", "s.png", "-m", "adain", "-q", "--size", "24",
                            "--consistency", "none", "-o", dst], cwd=tmp_path)
    assert code == 0, f"exit {code}:\n{err[-2000:]}"
    assert (tmp_path / dst).is_file()
    import av
    with av.open("file:" + str(tmp_path / dst)) as c:  # "file:": FFmpeg reads no protocol
        assert sum(1 for _ in c.decode(video=0)) == 4
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".")]


# --------------------------------------------------------------------------------- extras
@pytest.mark.parametrize("which", ["content", "style"])
def test_extra_output_is_an_input(assets, tmp_path, which):
    c = shutil.copy(assets["c"], tmp_path / "c.png")
    s = shutil.copy(assets["s"], tmp_path / "s.png")
    before = {p: Path(p).read_bytes() for p in (c, s)}
    target = c if which == "content" else s
    assert_cli_error(["stylize", c, "-s", s, "-m", "adain", "-q", "--size", "32",
                      "-o", target], watch=[tmp_path])
    assert {p: Path(p).read_bytes() for p in (c, s)} == before, "an input was overwritten"


def test_extra_output_is_an_input_relative_spelling(assets, tmp_path):
    c = shutil.copy(assets["c"], tmp_path / "c.png")
    shutil.copy(assets["s"], tmp_path / "s.png")
    before = Path(c).read_bytes()
    (tmp_path / "sub").mkdir()
    assert_cli_error(["stylize", "c.png", "-s", "s.png", "-m", "adain", "-q", "--size", "32",
                      "-o", "sub/../c.png"], cwd=tmp_path, watch=[tmp_path, tmp_path / "sub"])
    assert Path(c).read_bytes() == before


def test_extra_video_output_is_the_input(assets, tmp_path):
    clip = shutil.copy(assets["clip"], tmp_path / "clip.mp4")
    before = Path(clip).read_bytes()
    assert_cli_error(["video", clip, "-s", assets["s"], "-m", "adain", "-q", "--size", "24",
                      "--consistency", "none", "-o", clip], watch=[tmp_path])
    assert Path(clip).read_bytes() == before


@pytest.mark.parametrize("method", STYLELESS)
def test_extra_style_given_to_a_styleless_method(assets, out, method):
    o = out / "o.png"
    assert_cli_error(["stylize", assets["c"], "-s", assets["s"], "-m", method, "-q",
                      "--size", "32", "-o", o], expect_no=[o], match="style")


@pytest.mark.parametrize("method", STYLELESS)
def test_extra_api_style_given_to_a_styleless_method(assets, method):
    assert_api_error(lambda: brushwork.stylize(assets["c"], assets["s"], method=method,
                                               size=32), f"{method} with a style")


def test_extra_api_unknown_control_none(assets):
    assert_api_error(lambda: brushwork.stylize(assets["c"], assets["s"], method="adain",
                                               size=32, bogus=None), "bogus=None", "bogus")


@pytest.mark.parametrize("case", ["unknown-method", "missing-file", "corrupt-file",
                                  "output-parent-is-a-file", "missing-style"])
def test_extra_plain_bad_inputs(assets, out, case):
    o = out / "o.png"
    c, s, m = assets["c"], assets["s"], "adain"
    if case == "unknown-method":
        m = "picasso9000"
    elif case == "missing-file":
        c = assets["dir"] / "nope.png"
    elif case == "corrupt-file":
        c = assets["corrupt"]
    elif case == "missing-style":
        s = assets["dir"] / "nope.png"
    elif case == "output-parent-is-a-file":
        o = assets["c"] / "o.png"
    assert_cli_error(["stylize", c, "-s", s, "-m", m, "-q", "--size", "32", "-o", o],
                     expect_no=[o], watch=[out, assets["dir"]])


def test_extra_console_error_is_one_line(assets, out):
    """The real console (``python -m brushwork``) obeys the same contract."""
    o = out / "o.png"
    assert_cli_error(["stylize", assets["c"], "-s", assets["s"], "-m", "gatys",
                      "--encoder", "small", "-q", "--size", "32", "-o", o], expect_no=[o],
                     console=True)
