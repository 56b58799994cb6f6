"""Benchmark: glibc's malloc as it is vs freed memory kept for reuse (``core.memory``).

    python benchmarks/bench_memory.py [--methods avatar,adain,gatys:steps=8] [--size 512]
        [--runs 3] [--threads 2]

Each (method, malloc mode) runs in its own process, one after the other: the method
stylises scikit-image's 'astronaut' photo with the 'coffee' photo as the style at ``--size``
px, ``--runs`` times after a warm-up run (the weights load in the warm-up). The table gives
the median wall time of a run, the process's peak resident memory (``ru_maxrss``) and the
minor page faults per run. ``BRUSHWORK_MALLOC=system`` is the system's malloc;
``keep`` is what the CLI and the studio do (:func:`brushwork.core.memory.keep_freed_memory`).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys


def worker(method: str, controls: dict, size: int, runs: int, threads: int) -> dict:
    import resource
    import time

    from brushwork.core.memory import keep_freed_memory
    applied = keep_freed_memory()
    import torch
    from skimage import data

    from brushwork import api

    torch.set_num_threads(threads)
    content = torch.from_numpy(data.astronaut()).permute(2, 0, 1)[None].float() / 255
    style = torch.from_numpy(data.coffee()).permute(2, 0, 1)[None].float() / 255
    times, faults = [], []
    for i in range(runs + 1):
        f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        t0 = time.perf_counter()
        api.stylize_tensors(content, [style], method, size=size, controls=controls)
        if i:
            times.append(time.perf_counter() - t0)
            faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
    return {"applied": applied, "wall": statistics.median(times),
            "faults": statistics.median(faults),
            "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def parse_method(spec: str) -> tuple[str, dict]:
    name, _, rest = spec.partition(":")
    controls = {}
    for kv in filter(None, rest.split("+")):
        k, v = kv.split("=", 1)
        controls[k] = json.loads(v)
    return name, controls


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--methods", default="avatar,adain,gatys:steps=8",
                    help="comma-separated; controls after a colon, joined by + "
                         "(gatys:steps=8+scales=1)")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        name, controls = parse_method(args.worker)
        print(json.dumps(worker(name, controls, args.size, args.runs, args.threads)))
        return 0
    print(f"{args.size} px, {args.threads} thread(s), median of {args.runs} runs after a "
          f"warm-up, each row its own process")
    print("| method | malloc | wall s / run | peak RSS MB | page faults / run |")
    print("|---|---|---|---|---|")
    for spec in args.methods.split(","):
        for mode in ("system", "keep"):
            cmd = [sys.executable, os.path.abspath(__file__), "--worker", spec,
                   "--size", str(args.size), "--runs", str(args.runs),
                   "--threads", str(args.threads)]
            env = {**os.environ, "BRUSHWORK_MALLOC": "system" if mode == "system" else ""}
            out = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if out.returncode:
                print(f"| {spec} | {mode} | failed: {out.stderr.strip().splitlines()[-1]} | | |")
                continue
            r = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"| {spec} | {mode} | {r['wall']:.2f} | {r['peak_mb']:.0f} | "
                  f"{r['faults']:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
