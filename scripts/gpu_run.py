"""One prepared run for a few minutes on a CUDA GPU: benchmarks, then training, inside a budget.

    python scripts/gpu_run.py --content PHOTOS --styles PAINTINGS [--device cuda]
        [--budget-s 540] [--out DIR] [--write-docs] [--methods a,b] [--trainers a,b]
        [--bench-content FILE] [--bench-style FILE]
    python scripts/gpu_run.py --tiny --device cpu --out DIR      (a check that it all runs)

1. Benchmarks: every registered method stylises one content at 512 and 1024 px (long side):
   one warm-up at 128 px with quick settings, then three timed runs (one for a run over 2 s),
   ``torch.cuda.synchronize()`` around each; the median and the peak CUDA memory
   (``torch.cuda.max_memory_allocated``). Content: ``--bench-content`` or scikit-image's
   astronaut; style: ``--bench-style`` or the studio's bundled "swirls" painting.
2. Training: each feed-forward trainer (``brushwork train NAME``, its own CLI in a subprocess) at
   its paper-like defaults on the ``--content`` / ``--styles`` folders (not in the repository:
   the script refuses to start without them, unless ``--tiny``). A trainer has no time limit
   of its own, so a short probe run measures its rate from the times its checkpoints are
   written, and a resumed run then gets the steps that fit its share of the time left.
   Weights (fp16), checkpoints, logs and samples go to ``OUT/train``.
3. Tables: ``OUT/gpu_tables.md`` and ``OUT/gpu_run.json``; with ``--write-docs`` the tables
   replace the "GPU run" section of docs/benchmarks.md (between its gpu-run markers).

The whole run, model loading included, stays inside ``--budget-s``: the time left is checked
before every item, and what does not fit is listed as skipped.
Methods run one-pass networks first and the iterative ones (gatys, analogy) last, so a slow
method cannot crowd out the others.
``--tiny``: 64 px images, quick settings, no warm-up, one timed run per method, synthetic
training folders, tiny networks and two training steps (a probe step and a resumed one) for
adain and johnson: about a minute on a CPU.
"""
from __future__ import annotations

import time

T0 = time.monotonic()  # the budget counts from here, imports included

import argparse  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs" / "benchmarks.md"
START, END = "<!-- gpu-run:start -->", "<!-- gpu-run:end -->"

SIZES = (512, 1024)
TINY_SIZES = (64,)
SLOW_RUN_S = 2.0       # a timed run longer than this is not repeated
BENCH_SHARE = 0.35     # of the budget, for the benchmarks
RESERVE_S = 8.0        # kept for writing the tables at the end
MAX_IMAGES = 200       # training images per folder tree (a subset keeps loading short)

# controls a method needs to run (its built-in style), as the pinned tests use them
CONTROLS = {"cin": {"style_id": "1"}, "asma": {"artist": "2"}, "styleaware": {"artist": "2"},
            "ctb": {"artist": "2"}}
# quick settings for the warm-up (and for every run with --tiny)
QUICK = {"gatys": {"steps": 3}, "analogy": {"iterations": 1, "deconv_steps": 0}}

# trainers that take --device (classifier and texture-judge fit on CPU features)
FEED_FORWARD = ("adain", "wct", "linear", "sanet", "etnet", "distill", "johnson", "cin", "asma",
                "avatar", "aams", "totalst", "efanet", "fcs", "styleaware", "metastyle", "ctb",
                "tpfr")
TINY_TRAINERS = ("adain", "johnson")
# paper-like settings beyond each trainer's defaults (its defaults are the paper's otherwise)
PAPER = {"sanet": ["--batch", "5"], "johnson": ["--width", "1.0"], "cin": ["--width", "1.0"],
         "asma": ["--preset", "paper"],
         "styleaware": ["--width", "32", "--n-down", "4", "--n-res", "9", "--d-width", "32",
                        "--d-layers", "6", "--min-images", "20"],
         "ctb": ["--preset", "paper"]}
TINY = {"adain": ["--width", "0.03125"],
        "wct": ["--levels", "1,2", "--width", "0.03125"],
        "linear": ["--dim", "4", "--width", "0.03125"],
        "sanet": ["--width", "0.03125"],
        "distill": ["--levels", "1,2", "--encoder-width", "0.0625", "--width", "0.03125"],
        "etnet": ["--width", "0.25"],
        "johnson": ["--width", "0.125", "--n-res", "1", "--style-size", "48"],
        "cin": ["--width", "0.125", "--n-res", "1", "--style-size", "48"],
        "asma": ["--preset", "tiny", "--min-images", "2", "--style-load-size", "48",
                 "--warmup", "1"],
        "avatar": ["--batch", "1"],
        "aams": ["--width", "0.03125", "--inner", "4"],
        "totalst": ["--width", "0.0625", "--init", "none"],
        "efanet": ["--width", "0.0625", "--init", "none", "--dim", "4", "--hidden", "8"],
        "tpfr": ["--width", "0.0625", "--init", "none", "--content-dim", "4", "--style-dim",
                 "4", "--att-dim", "4", "--d-width", "4"],
        "fcs": ["--blocks", "2", "--width", "4"],
        "styleaware": ["--min-images", "2", "--width", "4", "--n-down", "2", "--n-res", "1",
                       "--d-width", "4", "--d-layers", "3", "--warmup", "0"],
        "metastyle": ["--width", "0.125", "--n-res", "1", "--inner-steps", "2",
                      "--style-size", "48"],
        "ctb": ["--preset", "tiny", "--min-images", "2", "--style-load-size", "48",
                "--classes", "2", "--class-size", "32"]}
NO_DATA_CACHE = ("johnson", "cin", "asma", "styleaware", "metastyle", "ctb")  # trainers without --data-cache
CIN_STYLES = 8


class UsageError(Exception):
    """A problem with the command line: one `brushwork: error:` line, exit code 2."""


def elapsed() -> float:
    return time.monotonic() - T0


# -------------------------------------------------------------------------------- arguments
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    p.add_argument("--budget-s", type=float, default=540.0,
                   help="wall-clock limit of the whole run, imports included")
    p.add_argument("--out", default="gpu-run", help="folder for tables, weights and logs")
    p.add_argument("--content", help="folder of training photos (recursive)")
    p.add_argument("--styles", help="folder of training paintings (recursive; asma needs one "
                                    "sub-folder per artist)")
    p.add_argument("--bench-content", help="benchmark content image (default: astronaut)")
    p.add_argument("--bench-style", help="benchmark style image (default: the swirls painting)")
    p.add_argument("--methods", help="comma-separated methods to benchmark (default: all)")
    p.add_argument("--trainers", help="comma-separated trainers (default: every feed-forward "
                                      "one; adain,johnson with --tiny; 'none' for none)")
    p.add_argument("--max-images", type=int, default=MAX_IMAGES,
                   help="training images taken per folder tree (evenly spread)")
    p.add_argument("--tiny", action="store_true", help="64 px, tiny nets, synthetic data")
    p.add_argument("--write-docs", action="store_true",
                   help="put the tables into the GPU run section of docs/benchmarks.md")
    return p.parse_args(argv)


def check_args(args) -> None:
    """Refuse bad input before anything is written (UsageError)."""
    from brushwork.methods import METHODS
    from brushwork.train import TRAINERS

    if args.budget_s < 10:
        raise UsageError("--budget-s must be at least 10 seconds")
    if args.max_images < 1:
        raise UsageError("--max-images must be at least 1")
    args.methods = sorted(_names(args.methods, list(METHODS), METHODS, "method"),
                          key=lambda m: METHODS[m].capabilities.iterative)  # stable
    default = TINY_TRAINERS if args.tiny else FEED_FORWARD
    args.trainers = _names(args.trainers, list(default), FEED_FORWARD, "trainer")
    for t in args.trainers:
        if t not in TRAINERS:
            raise UsageError(f"trainer {t!r} is not registered")
    if args.trainers and not args.tiny:
        for flag in ("content", "styles"):
            folder = getattr(args, flag)
            if not folder:
                raise UsageError(f"training needs --{flag} FOLDER (the data is not in the "
                                 f"repository); give --content and --styles, or --trainers none")
            if not Path(folder).is_dir():
                raise UsageError(f"--{flag} {folder}: not a directory")
            if not _images(Path(folder)):
                raise UsageError(f"--{flag} {folder}: no .jpg or .png images in it")
    for flag in ("bench_content", "bench_style"):
        path = getattr(args, flag)
        if path and not Path(path).is_file():
            raise UsageError(f"--{flag.replace('_', '-')} {path}: file not found")
    from brushwork.core.device import pick_device
    from brushwork.errors import BrushworkError
    try:
        args.dev = pick_device(args.device)
    except BrushworkError as e:
        raise UsageError(str(e)) from None
    if args.write_docs and (args.tiny or args.dev.type != "cuda"):
        raise UsageError("--write-docs records a GPU run: give --device cuda, without --tiny")
    if args.write_docs and not (0 <= DOCS.read_text().find(START) < DOCS.read_text().find(END)):
        raise UsageError(f"{DOCS}: no {START} ... {END} section to replace")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: exists and is not a folder")
    if not out.parent.is_dir():
        raise UsageError(f"--out {out}: folder {out.parent} does not exist")


def _names(text, default, allowed, what) -> list[str]:
    if text is None:
        return list(default)
    if text.strip() == "none":
        return []
    names = [n.strip() for n in text.split(",") if n.strip()]
    for n in names:
        if n not in allowed:
            raise UsageError(f"unknown {what} {n!r} (choose from {', '.join(allowed)})")
    return names


def _images(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*")
                  if p.is_file() and p.suffix.lower() in (".jpg", ".jpeg", ".png"))


# ------------------------------------------------------------------------------ benchmarks
def bench_images(args):
    import numpy as np
    from PIL import Image

    from brushwork.cli.demo import swirl_painting
    from brushwork.core.image import load_image, to_tensor

    if args.bench_content:
        content = load_image(args.bench_content)
    else:
        from skimage import data
        content = to_tensor(Image.fromarray(np.asarray(data.astronaut())))
    style = load_image(args.bench_style) if args.bench_style else to_tensor(swirl_painting(384))
    return content.float(), [style.float()]


def _sync(dev) -> None:
    import torch
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def run_benchmarks(args, deadline: float) -> tuple[list[dict], list[str]]:
    """Rows (method, size, runs, median_s, peak_mb, load_s, note) and notes on what was skipped."""
    import torch

    from brushwork import api
    from brushwork.core.image import resize_long_side
    from brushwork.methods import METHODS

    content, style = bench_images(args)
    sizes = TINY_SIZES if args.tiny else SIZES
    rows, notes = [], []
    cuda = args.dev.type == "cuda"
    for i, name in enumerate(args.methods):
        if elapsed() > deadline:
            notes.append(f"benchmarks stopped at the time limit: {', '.join(args.methods[i:])} "
                         f"not run")
            break
        styles = style if METHODS[name].capabilities.styles == "images" else []
        base = dict(CONTROLS.get(name, {}))
        quick = {**base, **QUICK.get(name, {})}
        controls = quick if args.tiny else base
        try:
            t = time.perf_counter()
            api.get_stylizer(name, str(args.dev))
            if not args.tiny:  # tiny runs are their own warm-up
                api.stylize_tensors(resize_long_side(content, 128), styles, name, size=None,
                                    seed=0, device=str(args.dev), controls=quick)
            _sync(args.dev)
            load_s = time.perf_counter() - t
        except Exception as e:  # noqa: BLE001 - a failing method is a row, not the end
            rows.append(_row(name, "-", 0, None, None, None, _short(e)))
            continue
        last = None
        for size in sizes:
            guess = (last or 0.0) * (size / (sizes[0])) ** 2
            if last is not None and elapsed() + guess > deadline:
                rows.append(_row(name, size, 0, None, None, load_s, "skipped: over the time limit"))
                continue
            c = resize_long_side(content, size)
            if cuda:
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(args.dev)
            times, note = [], ""
            try:
                for _ in range(1 if args.tiny else 3):
                    _sync(args.dev)
                    t = time.perf_counter()
                    out = api.stylize_tensors(c, styles, name, size=None, seed=0,
                                              device=str(args.dev), controls=controls)
                    _sync(args.dev)
                    times.append(time.perf_counter() - t)
                    if times[-1] > SLOW_RUN_S or elapsed() + times[-1] > deadline:
                        break
                del out
            except Exception as e:  # noqa: BLE001 - out of memory and the like
                note = _short(e)
            peak = torch.cuda.max_memory_allocated(args.dev) / 2 ** 20 if cuda else None
            med = statistics.median(times) if times else None
            last = med if med is not None else last
            rows.append(_row(name, size, len(times), med, peak, load_s, note))
        api._instances.clear()  # one method's weights at a time on the device
        if cuda:
            torch.cuda.empty_cache()
    return rows, notes


def _row(method, size, runs, median, peak, load_s, note):
    return {"method": method, "size": size, "runs": runs, "median_s": median, "peak_mb": peak,
            "load_s": load_s, "note": note}


def _short(e: BaseException) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"error: {type(e).__name__}: {text}"[:160]


# ---------------------------------------------------------------------------------- training
def tiny_data(root: Path) -> tuple[Path, Path]:
    """Seeded synthetic folders: 3 photos, two 'artists' of 2 paintings each."""
    content, styles = root / "content", root / "styles"
    content.mkdir(parents=True)
    for i in range(3):
        _blob(content / f"c{i}.png", (48, 40), i)
    for a, artist in enumerate(("alpha", "beta")):
        (styles / artist).mkdir(parents=True, exist_ok=True)
        for i in range(2):
            _blob(styles / artist / f"{artist}{i}.png", (48, 48), 10 + 5 * a + i)
    return content, styles


def _blob(path, size, seed):
    import numpy as np
    from PIL import Image
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 256, (size[1] // 4, size[0] // 4, 3), dtype=np.uint8)
    Image.fromarray(a).resize(size, Image.BILINEAR).save(path)


def subset(src: Path, dst: Path, n: int) -> Path:
    """A tree of symbolic links to at most ``n`` images of ``src`` (evenly spread; with
    sub-folders, an equal share of each, at least 25, so asma keeps its artists)."""
    subs = sorted(d for d in src.iterdir() if d.is_dir() and _images(d))
    groups = [(d, dst / d.name) for d in subs] or [(src, dst)]
    per = max(25, math.ceil(n / len(groups))) if subs else n
    loose = [p for p in src.iterdir() if p.is_file() and p.suffix.lower() in
             (".jpg", ".jpeg", ".png")] if subs else []
    for folder, target in groups:
        files = _images(folder)
        pick = files if len(files) <= per else [files[round(i * (len(files) - 1) / (per - 1))]
                                                 for i in range(per)] if per > 1 else files[:1]
        target.mkdir(parents=True, exist_ok=True)
        for i, f in enumerate(pick):
            (target / f"{i:04d}_{f.name}").symlink_to(f.resolve())
    for i, f in enumerate(sorted(loose)[:n]):
        (dst / f"top{i:04d}_{f.name}").symlink_to(f.resolve())
    return dst


def trainer_argv(name, args, content, styles, out_dir: Path, cache_dir: Path | None) -> list[str]:
    """The `brushwork train NAME ...` flags of one run, without --steps and the schedule."""
    argv = ["train", name, "--content", str(content), "--out", str(out_dir / f"{name}.safetensors"),
            "--device", str(args.dev), "--seed", "0", "--fp16", "-q"]
    files = _images(Path(styles))
    if name == "johnson":
        argv += ["--style", str(files[0])]
    elif name == "cin":
        k = min(CIN_STYLES, len(files))
        for i in range(k):
            argv += ["--style", str(files[round(i * (len(files) - 1) / max(k - 1, 1))])]
    else:
        argv += ["--styles", str(styles)]
    if args.tiny:
        argv += ["--size", "32", "--batch", "2", "--no-bf16", "--threads", "1", *TINY[name]]
    else:
        argv += PAPER.get(name, [])
        if cache_dir is not None and name not in NO_DATA_CACHE:
            # one cache per crop size: trainers with the same size share the decoded images
            size = _default(name, "size")
            if "--size" in argv:
                size = argv[argv.index("--size") + 1]
            argv += ["--data-cache", str(cache_dir / f"cache_{size}.pt")]
    return argv


def _default(name, flag):
    """A trainer's default for ``flag`` (an argparse dest)."""
    from brushwork.train import TRAINERS
    p = argparse.ArgumentParser()
    TRAINERS[name].add_arguments(p)
    return p.get_default(flag)


def run_trainer(argv: list[str], steps: int, every: int, log: Path, hard_end: float,
                resume: bool = False) -> dict:
    """Run one `brushwork train` to ``steps`` (checkpoint every ``every``) in a subprocess,
    noting when each checkpoint is written; killed at ``hard_end`` (elapsed() seconds)."""
    ckpt = Path(argv[argv.index("--out") + 1]).with_suffix(".ckpt")
    cmd = [sys.executable, "-m", "brushwork", *argv, "--steps", str(steps),
           "--checkpoint-every", str(every), "--sample-every", str(steps)]
    if resume:
        cmd.append("--resume")
    seen = ckpt.stat().st_mtime_ns if ckpt.exists() else None
    writes, start = [], time.time()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        filter(None, [str(REPO / "src"), os.environ.get("PYTHONPATH")])))
    with open(log, "a") as f:
        f.write("$ " + " ".join(cmd[2:]) + "\n")
        f.flush()
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env)
        killed = False
        while proc.poll() is None:
            if elapsed() > hard_end and not killed:
                proc.terminate()
                killed = True
                try:
                    proc.wait(3)  # SIGTERM unwinds like Ctrl-C; then no more waiting
                except subprocess.TimeoutExpired:
                    proc.kill()
            m = ckpt.stat().st_mtime_ns if ckpt.exists() else None
            if m is not None and m != seen:
                seen = m
                writes.append(m / 1e9)
            time.sleep(0.05)
        m = ckpt.stat().st_mtime_ns if ckpt.exists() else None
        if m is not None and m != seen:
            writes.append(m / 1e9)
    wall = time.time() - start
    last = ""
    for line in log.read_text().splitlines():
        if line.strip() and not line.startswith("$ "):
            last = line.strip()
    return {"rc": proc.returncode, "killed": killed, "writes": writes, "start": start,
            "wall": wall, "last_line": last}


def train_all(args, deadline: float) -> tuple[list[dict], list[str]]:
    """Every chosen trainer in turn, each with an equal share of the time left."""
    if not args.trainers:
        return [], []
    out_dir = Path(args.out) / "train"
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="brushwork-gpu-run-"))
    try:
        return _train_in(args, deadline, out_dir, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # links and data caches only


def _train_in(args, deadline, out_dir, tmp):
    rows, notes = [], []
    if args.tiny:
        content, styles = tiny_data(tmp / "data")
    else:
        content = subset(Path(args.content), tmp / "content", args.max_images)
        styles = subset(Path(args.styles), tmp / "styles", args.max_images)
    probe, every = (1, 1) if args.tiny else (30, 10)
    for i, name in enumerate(args.trainers):
        left = len(args.trainers) - i
        share_end = elapsed() + (deadline - elapsed()) / left
        if share_end - elapsed() < (5 if args.tiny else 20):
            notes.append(f"training stopped at the time limit: {', '.join(args.trainers[i:])} "
                         f"not run")
            break
        argv = trainer_argv(name, args, content, styles, out_dir, tmp)
        rows.append(train_one(name, argv, args, probe, every, share_end, deadline, out_dir))
    return rows, notes


def train_one(name, argv, args, probe, every, share_end, deadline, out_dir) -> dict:
    """A probe run of ``probe`` steps measures the rate, a resumed run fills the share."""
    log = out_dir / f"{name}.log"
    log.write_text("")
    row = {"trainer": name, "command": f"brushwork {' '.join(argv)} --steps {probe}",
           "steps": 0, "rate": None, "wall_s": None, "loss": None, "sha256": None, "note": ""}
    t = elapsed()
    hard_end = min(share_end + 5, deadline)
    r = run_trainer(argv, probe, every, log, hard_end)
    if r["rc"] != 0:
        note = ("stopped at the time limit during the rate probe" if r["killed"] else
                _failed(r))
        row.update(steps=_checkpoint_step(argv), wall_s=elapsed() - t, note=note)
        return row
    w = r["writes"]
    steps_s = (every * (len(w) - 1) / (w[-1] - w[0])) if len(w) > 1 and w[-1] > w[0] else \
        probe / max(r["wall"], 1e-3)
    overhead = max(0.0, (w[0] - r["start"]) - every / steps_s) if w else r["wall"]
    done = probe
    more = 1 if args.tiny else int(0.9 * steps_s * (share_end - elapsed() - overhead - 5))
    more = min(more, max(0, int(_default(name, "steps") or 2000) - probe))
    if more >= 1:
        total = probe + more
        every2 = 1 if args.tiny else max(every, total // 4)
        r = run_trainer(argv, total, every2, log, hard_end, resume=True)
        row["command"] = f"brushwork {' '.join(argv)} --steps {total}"
        if r["rc"] == 0:
            done = total
        else:
            done = _checkpoint_step(argv)
            row["note"] = (f"stopped at the time limit after step {done} (its checkpoint; the "
                           f"weights file holds step {probe})" if r["killed"] else _failed(r))
    else:
        row["note"] = "no time left for more than the probe"
    out = Path(argv[argv.index("--out") + 1])
    row.update(steps=done, rate=steps_s, wall_s=elapsed() - t, loss=_last_loss(out),
               sha256=_sha256(out) if out.is_file() else None)
    return row


def _checkpoint_step(argv) -> int:
    from brushwork.errors import BrushworkError
    from brushwork.train.common import load_checkpoint_step
    try:
        return load_checkpoint_step(Path(argv[argv.index("--out") + 1]).with_suffix(".ckpt"))
    except BrushworkError:
        return 0


def _failed(r) -> str:
    return ("killed at the time limit" if r["killed"] else
            f"failed (exit {r['rc']}): {r['last_line'][:140]}")


def _last_loss(out: Path):
    log = out.with_suffix(".log.jsonl")
    if not log.is_file():
        return None
    lines = [l for l in log.read_text().splitlines() if l.strip()]
    if not lines:
        return None
    rec = json.loads(lines[-1])
    for key in ("total", "loss", "g_total"):
        if key in rec:
            return float(rec[key])
    return None


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ------------------------------------------------------------------------------------- tables
def environment(args) -> dict:
    import torch
    env = {"device": str(args.dev), "torch": torch.__version__, "python": platform.python_version(),
           "cpu_threads": torch.get_num_threads(), "tiny": args.tiny, "budget_s": args.budget_s}
    if args.dev.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(args.dev)
    return env


def _fmt(x, spec):
    return "-" if x is None else format(x, spec)


def tables(env: dict, bench: list[dict], train: list[dict], notes: list[str]) -> str:
    hw = env.get("gpu", "CPU") + f", torch {env['torch']}"
    lines = [f"Device: {env['device']} ({hw}); budget {env['budget_s']:g} s, used "
             f"{env['total_s']:.0f} s.", "",
             "| method | size px | runs | median s | peak CUDA MB | load + warm-up s | note |",
             "|---|---|---|---|---|---|---|"]
    for r in bench:
        lines.append(f"| {r['method']} | {r['size']} | {r['runs']} | {_fmt(r['median_s'], '.3f')} "
                     f"| {_fmt(r['peak_mb'], '.0f')} | {_fmt(r['load_s'], '.2f')} | {r['note']} |")
    lines += ["",
              "| trainer | steps | steps/s | wall s | last logged loss | weights sha256 | note |",
              "|---|---|---|---|---|---|---|"]
    for r in train:
        sha = r["sha256"][:16] + "..." if r["sha256"] else "-"
        lines.append(f"| {r['trainer']} | {r['steps']} | {_fmt(r['rate'], '.2f')} "
                     f"| {_fmt(r['wall_s'], '.0f')} | {_fmt(r['loss'], '.4g')} | {sha} "
                     f"| {r['note']} |")
    if not train:
        lines.append("| (none) | | | | | | |")
    if notes:
        lines += [""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def replace_section(path: Path, text: str) -> None:
    """Put ``text`` between the gpu-run markers of ``path`` (both must be there, in order)."""
    doc = path.read_text()
    a, b = doc.find(START), doc.find(END)
    if a < 0 or b < a:
        raise UsageError(f"{path}: no {START} ... {END} section to replace")
    path.write_text(doc[:a + len(START)] + "\n" + text + doc[b:])


# ---------------------------------------------------------------------------------------- main
def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        check_args(args)
    except UsageError as e:
        print(f"brushwork: error: {e}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(exist_ok=True)
    env = environment(args)
    end = args.budget_s - RESERVE_S
    bench, notes = run_benchmarks(args, min(end, args.budget_s * BENCH_SHARE)
                                  if args.trainers else end)
    train, more = train_all(args, end)
    notes += more
    env["total_s"] = elapsed()
    text = tables(env, bench, train, notes)
    (out / "gpu_tables.md").write_text(text)
    (out / "gpu_run.json").write_text(json.dumps({"environment": env, "benchmarks": bench,
                                                  "training": train, "notes": notes}, indent=1))
    if args.write_docs:
        try:
            replace_section(DOCS, text)
        except UsageError as e:
            print(f"brushwork: error: {e}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
