"""Benchmark: where one gatys L-BFGS step goes, against its floor (VGG19 forward + backward).

    python benchmarks/bench_gatys_step.py [--size 512] [--steps 6] [--threads 2]
        [--against OTHER_SRC ...] [--json out.json]

One scale at ``--size`` px (scikit-image's 'astronaut' photo, 'coffee' as the style, gatys'
default losses), ``--steps`` steps; the first step (targets, warm-up) is left out. Each row is
its own process, run one after the other:

* ``brushwork``: this checkout (``src/`` next to this script), as the CLI runs it;
* ``brushwork, BRUSHWORK_MALLOC=system``: the same with glibc's malloc as it is;
* ``--against DIR``: another checkout's ``src`` folder (e.g. a ``git worktree`` of an older
  commit), for before/after rows from one run;
* ``floor``: VGG19 (up to relu5_1, NHWC) forward and backward alone on an image of that size,
  what a step cannot go below.

Per step: median wall time, CPU time (user + system, all threads), system time (page faults
and zeroing of fresh memory) and minor page faults, and the torch profiler's split of one
step: convolutions forward, convolutions backward, Gram products (bmm/mm), the rest.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"


def worker(size: int, steps: int, threads: int, floor: bool) -> dict:
    import resource
    import time

    try:  # what the CLI does first (absent in older checkouts)
        from brushwork.core.memory import keep_freed_memory
        keep_freed_memory()
    except ImportError:
        pass
    import torch
    from skimage import data
    from torch.profiler import ProfilerActivity, profile

    torch.set_num_threads(threads)

    def image(a):
        x = torch.from_numpy(a).permute(2, 0, 1)[None].float() / 255
        return torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear",
                                               antialias=True, align_corners=False)

    content, style = image(data.astronaut()), image(data.coffee())
    marks = []

    def mark():
        r = resource.getrusage(resource.RUSAGE_SELF)
        marks.append((time.perf_counter(), r.ru_utime + r.ru_stime, r.ru_stime, r.ru_minflt))

    if floor:
        from brushwork.core.vgg import VGG19
        enc = VGG19(channels_last=True, last_layer="relu5_1")
        layers = ["relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu4_2", "relu5_1"]

        def one_step():
            x = content.clone().requires_grad_(True)
            sum(f.float().square().mean() for f in enc(x, layers, fp32=False).values()).backward()

        for _ in range(steps):
            one_step()
            mark()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            one_step()
    else:
        from brushwork import api

        def cb(p):
            if p.kind == "step":
                mark()

        def run(n, callback=None):
            api.stylize_tensors(content, [style], "gatys", size=size, callback=callback,
                                controls={"steps": n, "scales": 1})

        run(steps, cb)
        with profile(activities=[ProfilerActivity.CPU]) as short:
            run(2)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            run(4)  # minus the 2-step run: two steps without the targets' set-up
    gaps = [[b[k] - a[k] for a, b in zip(marks[1:], marks[2:])] for k in range(4)]
    split = {"conv forward": 0.0, "conv backward": 0.0, "gram": 0.0, "rest": 0.0}
    less = {} if floor else {ev.key: ev.self_cpu_time_total for ev in short.key_averages()}
    for ev in prof.key_averages():
        t = (ev.self_cpu_time_total - less.get(ev.key, 0)) / 1e6
        name = ev.key
        if name in ("aten::mkldnn_convolution", "mkldnn::_convolution_pointwise",
                    "aten::convolution"):
            split["conv forward"] += t
        elif name == "aten::convolution_backward":
            split["conv backward"] += t
        elif name in ("aten::bmm", "aten::mm"):
            split["gram"] += t
        elif not name.startswith(("autograd::", "Optimizer", "SelfGram", "aten::_", "LBFGS")):
            split["rest"] += t
    total = sum(split.values())
    return {"wall": statistics.median(gaps[0]), "cpu": statistics.median(gaps[1]),
            "sys": statistics.median(gaps[2]), "faults": statistics.median(gaps[3]),
            "split": {k: v / total for k, v in split.items()} if total else split}


def run_row(label: str, src: Path, args, env=None, floor=False) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--size", str(args.size),
           "--steps", str(args.steps), "--threads", str(args.threads)]
    if floor:
        cmd.append("--floor")
    e = {**os.environ, "PYTHONPATH": str(src), **(env or {})}
    out = subprocess.run(cmd, capture_output=True, text=True, env=e)
    if out.returncode:
        print(f"{label}: failed\n{out.stderr[-2000:]}", file=sys.stderr)
        return {"label": label, "failed": True}
    return {"label": label, **json.loads(out.stdout.strip().splitlines()[-1])}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--against", action="append", default=[], metavar="SRC",
                    help="another checkout's src folder (a row each)")
    ap.add_argument("--json", default=None)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--floor", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.size, args.steps, args.threads, args.floor)))
        return 0
    rows = [run_row(f"--against {a}", Path(a), args) for a in args.against]
    rows += [run_row("brushwork, BRUSHWORK_MALLOC=system", SRC, args,
                     {"BRUSHWORK_MALLOC": "system"}),
             run_row("brushwork", SRC, args),
             run_row("floor: VGG19 forward + backward", SRC, args, floor=True)]
    print(f"gatys step at {args.size}x{args.size} px, {args.threads} thread(s), median of "
          f"{args.steps - 2} steps")
    print("| run | wall s | CPU s | system s | page faults | conv fwd | conv bwd | Gram | rest |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if r.get("failed"):
            print(f"| {r['label']} | failed | | | | | | | |")
            continue
        s = r["split"]
        print(f"| {r['label']} | {r['wall']:.2f} | {r['cpu']:.2f} | {r['sys']:.2f} | "
              f"{r['faults']:.0f} | {s['conv forward']:.0%} | {s['conv backward']:.0%} | "
              f"{s['gram']:.0%} | {s['rest']:.0%} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
