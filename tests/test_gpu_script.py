"""scripts/gpu_run.py, the prepared GPU script, in its tiny CPU mode: it runs end to end,
its tables have a row per benchmarked method and per trainer, a missing data folder is one
`brushwork: error:` line and exit code 2, and the commands it would give every trainer on a GPU
parse with the `brushwork train` parser."""
from __future__ import annotations

import hashlib
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu_run.py"


@pytest.fixture(scope="module")
def gpu_run():
    spec = importlib.util.spec_from_file_location("gpu_run", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _run(*argv):
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, argv)], capture_output=True,
                          text=True, timeout=300, cwd=ROOT)


def test_tiny_cpu_run_end_to_end(tmp_path):
    out = tmp_path / "out"
    methods = ["gatys", "adain", "johnson"]
    r = _run("--tiny", "--device", "cpu", "--out", out, "--methods", ",".join(methods),
             "--trainers", "adain", "--budget-s", 240)
    assert r.returncode == 0, r.stderr
    assert r.stdout == ""
    bench_text, train_text = (out / "gpu_tables.md").read_text().split("| trainer |")

    def rows(text):
        return [[c.strip() for c in l.split("|")[1:-1]] for l in text.splitlines()
                if l.startswith("| ") and not l.startswith("| method")]

    bench = rows(bench_text)
    assert [c[0] for c in bench] == ["adain", "johnson", "gatys"]  # one-pass methods first
    for cells in bench:
        assert cells[1] == "64" and cells[2] == "1"         # 64 px, one timed run
        assert float(cells[3]) > 0 and cells[6] == ""       # a time, no error
    (train,) = rows(train_text)
    assert train[0] == "adain" and train[1] == "2"          # probe step + one resumed step
    data = json.loads((out / "gpu_run.json").read_text())
    (row,) = data["training"]
    weights = out / "train" / "adain.safetensors"
    assert row["steps"] == 2 and row["note"] == "" and row["rate"] > 0
    assert row["sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert (out / "train" / "adain.ckpt").is_file()
    assert [b["method"] for b in data["benchmarks"]] == ["adain", "johnson", "gatys"]
    assert data["environment"]["total_s"] < 240


def test_missing_data_folder_is_one_error_line(tmp_path):
    out = tmp_path / "out"
    r = _run("--device", "cpu", "--out", out, "--content", tmp_path / "missing",
             "--styles", tmp_path)
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert r.returncode == 2 and len(lines) == 1, r.stderr
    assert lines[0].startswith("brushwork: error: --content") and "not a directory" in lines[0]
    assert not out.exists()


@pytest.mark.parametrize("argv,message", [
    ([], "training needs --content FOLDER"),
    (["--content", "{empty}", "--styles", "{empty}"], "no .jpg or .png images"),
    (["--trainers", "none", "--methods", "nosuch"], "unknown method 'nosuch'"),
    (["--trainers", "classifier", "--content", "x"], "unknown trainer 'classifier'"),
    (["--trainers", "none", "--bench-style", "{empty}/none.png"], "file not found"),
    (["--tiny", "--budget-s", "3"], "--budget-s must be at least 10"),
    (["--tiny", "--write-docs"], "--write-docs records a GPU run"),
])
def test_bad_arguments_write_nothing(gpu_run, tmp_path, capsys, argv, message):
    (tmp_path / "empty").mkdir()
    argv = [a.replace("{empty}", str(tmp_path / "empty")) for a in argv]
    out = tmp_path / "out"
    assert gpu_run.main(["--device", "cpu", "--out", str(out), *argv]) == 2
    err = [l for l in capsys.readouterr().err.splitlines() if l.strip()]
    assert len(err) == 1 and err[0].startswith("brushwork: error:") and message in err[0], err
    assert not out.exists()


def test_cuda_without_a_gpu_is_refused(gpu_run, capsys, monkeypatch, tmp_path):
    import torch
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_run.main(["--tiny", "--out", str(tmp_path / "o")]) == 2
    assert "CUDA is not available" in capsys.readouterr().err


@pytest.mark.parametrize("tiny", [False, True], ids=["paper", "tiny"])
def test_every_trainer_command_parses(gpu_run, tmp_path, tiny):
    """The exact flags each feed-forward trainer would get are valid `brushwork train` input."""
    import torch
    from brushwork.cli import build_parser

    content, styles = gpu_run.tiny_data(tmp_path)
    args = gpu_run.parse_args(["--device", "cpu"] + (["--tiny"] if tiny else []))
    args.dev = torch.device("cuda")
    parser = build_parser("train")
    for name in gpu_run.FEED_FORWARD:
        argv = gpu_run.trainer_argv(name, args, content, styles, tmp_path, tmp_path)
        ns = parser.parse_args(argv + ["--steps", "5", "--checkpoint-every", "1",
                                       "--sample-every", "5", "--resume"])
        assert ns.trainer == name and ns.device == "cuda" and ns.fp16 and ns.steps == 5
        if name == "cin":
            assert len(ns.style) == 4  # every painting of the tiny set (at most 8)
        if tiny:
            assert ns.size == 32 and ns.bf16 is False
        elif name == "asma":
            assert ns.preset == "paper"
        if not tiny and hasattr(ns, "data_cache"):  # shared by the trainers of one crop size
            assert ns.data_cache == str(tmp_path / f"cache_{ns.size}.pt")


def test_subset_links_an_even_spread_per_artist(gpu_run, tmp_path):
    src = tmp_path / "styles"
    for artist, n in (("a", 40), ("b", 10)):
        (src / artist).mkdir(parents=True)
        for i in range(n):
            gpu_run._blob(src / artist / f"{i:02d}.png", (8, 8), i)
    dst = gpu_run.subset(src, tmp_path / "sub", 30)
    a, b = sorted((dst / "a").iterdir()), sorted((dst / "b").iterdir())
    assert len(a) == 25 and len(b) == 10   # at least 25 per artist where there are that many
    assert all(p.is_symlink() for p in a + b)
    assert a[0].resolve().name == "00.png" and a[-1].resolve().name == "39.png"
    flat = gpu_run.subset(src / "a", tmp_path / "flat", 5)
    assert [p.resolve().name for p in sorted(flat.iterdir())] == [
        "00.png", "10.png", "20.png", "29.png", "39.png"]


def test_write_docs_replaces_only_the_marked_section(gpu_run, tmp_path, monkeypatch):
    doc = tmp_path / "b.md"
    doc.write_text(f"# top\n\n{gpu_run.START}\nold numbers\n{gpu_run.END}\n\ntail\n")
    gpu_run.replace_section(doc, "| new |\n")
    assert doc.read_text() == f"# top\n\n{gpu_run.START}\n| new |\n{gpu_run.END}\n\ntail\n"
    doc.write_text("no markers\n")
    with pytest.raises(gpu_run.UsageError, match="no <!-- gpu-run:start -->"):
        gpu_run.replace_section(doc, "x")
    # the shipped docs carry the markers, so --write-docs has a section to fill
    real = gpu_run.DOCS.read_text()
    assert 0 <= real.find(gpu_run.START) < real.find(gpu_run.END)


def test_tables_format(gpu_run):
    env = {"device": "cuda", "gpu": "Some GPU", "torch": "2.x", "budget_s": 540, "total_s": 12.3}
    bench = [gpu_run._row("adain", 512, 3, 0.0123, 812.0, 1.5, ""),
             gpu_run._row("gatys", 1024, 0, None, None, 2.0, "skipped: over the time limit")]
    train = [{"trainer": "adain", "steps": 900, "rate": 9.87, "wall_s": 100.0, "loss": 12.5,
              "sha256": "ab" * 32, "note": ""}]
    text = gpu_run.tables(env, bench, train, ["benchmarks stopped at the time limit: x not run"])
    assert "| adain | 512 | 3 | 0.012 | 812 | 1.50 |  |" in text
    assert "| gatys | 1024 | 0 | - | - | 2.00 | skipped: over the time limit |" in text
    assert "| adain | 900 | 9.87 | 100 | 12.5 | abababababababab... |  |" in text
    assert text.startswith("Device: cuda (Some GPU, torch 2.x); budget 540 s, used 12 s.")
    assert text.rstrip().endswith("- benchmarks stopped at the time limit: x not run")


def _fake_runs(gpu_run, monkeypatch, killed_second=False):
    """run_trainer replaced: the probe's checkpoints (steps 10, 20, 30) are written 5, 6 and
    7 s after it starts (10 steps/s after 4 s of start-up); the calls are recorded."""
    calls = []

    def fake(argv, steps, every, log, hard_end, resume=False):
        calls.append((steps, every, resume, hard_end))
        second = len(calls) == 2
        return {"rc": -15 if second and killed_second else 0, "killed": second and killed_second,
                "writes": [1005.0, 1006.0, 1007.0], "start": 1000.0, "wall": 8.0,
                "last_line": ""}

    monkeypatch.setattr(gpu_run, "run_trainer", fake)
    monkeypatch.setattr(gpu_run, "elapsed", lambda: 100.0)
    monkeypatch.setattr(gpu_run, "_checkpoint_step", lambda argv: 150)
    return calls


@pytest.mark.parametrize("name,total", [("adain", 489), ("avatar", 400)])
def test_probe_rate_sets_the_resumed_steps(gpu_run, monkeypatch, tmp_path, name, total):
    calls = _fake_runs(gpu_run, monkeypatch)
    args = gpu_run.parse_args(["--device", "cpu"])
    argv = ["train", name, "--out", str(tmp_path / f"{name}.safetensors")]
    row = gpu_run.train_one(name, argv, args, 30, 10, 160.0, 500.0, tmp_path)
    # 0.9 x 10 steps/s x (60 s left - 4 s start-up - 5 s to write) = 459 more steps, capped
    # by the trainer's default length (avatar: 400 steps)
    assert calls == [(30, 10, False, 165.0), (total, max(10, total // 4), True, 165.0)]
    assert row["steps"] == total and row["rate"] == pytest.approx(10.0) and row["note"] == ""
    assert row["command"].endswith(f"--steps {total}")


def test_a_resumed_run_stopped_at_the_limit_reports_its_checkpoint(gpu_run, monkeypatch,
                                                                   tmp_path):
    _fake_runs(gpu_run, monkeypatch, killed_second=True)
    args = gpu_run.parse_args(["--device", "cpu"])
    argv = ["train", "adain", "--out", str(tmp_path / "adain.safetensors")]
    row = gpu_run.train_one("adain", argv, args, 30, 10, 160.0, 500.0, tmp_path)
    assert row["steps"] == 150 and "stopped at the time limit after step 150" in row["note"]


# ------------------------------------------- tests/test_cuda.py's tables and helpers, on CPU
@pytest.fixture(scope="module")
def cuda_tests():
    spec = importlib.util.spec_from_file_location("cuda_tests", ROOT / "tests" / "test_cuda.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_cuda_tests_cover_every_method_and_device_trainer(cuda_tests, gpu_run):
    from brushwork.methods import METHODS
    from brushwork.train import TRAINERS
    assert set(cuda_tests.CASES) == set(METHODS)
    assert set(cuda_tests.TINY) == set(TRAINERS) - {"classifier", "texture-judge"}
    assert set(gpu_run.FEED_FORWARD) == set(cuda_tests.TINY)
    assert gpu_run.TINY == cuda_tests.TINY


@pytest.mark.parametrize("method", ["cin", "gatys"])
def test_cuda_tests_stylize_helper_runs_on_cpu(cuda_tests, monkeypatch, method):
    import brushwork.api
    monkeypatch.setenv("BRUSHWORK_BF16", "0")
    monkeypatch.setattr(brushwork.api, "_instances", {})
    out = cuda_tests.stylize(method, "cpu")
    assert out.shape == (1, 3, 48, 64) and 0 <= float(out.min()) and float(out.max()) <= 1


@pytest.mark.parametrize("name", ["adain", "johnson"])
def test_cuda_tests_trainer_step_runs_on_cpu(cuda_tests, tmp_path, name):
    import math
    losses, out = cuda_tests.train_step(name, cuda_tests.make_folders(tmp_path), tmp_path, "cpu")
    assert losses and all(math.isfinite(float(v)) for v in losses)
    assert out.is_file() and out.with_suffix(".ckpt").is_file()
