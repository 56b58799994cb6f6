"""Benchmark: brushwork's `gatys` against the `pastiche` CLI on the same content/style pairs.

For each pair and size, both tools run as command-line programs (start-up included), timed
wall-clock; then brushwork.metrics scores both outputs (content distance, Gram / mean-std /
Frechet style-distance ratios, SSIM). pastiche runs with its defaults and 500 L-BFGS steps;
brushwork with its defaults, or with the flags of ``--ours`` (such a row is labelled by its flags,
so several flag sets, e.g. the defaults and ``--steps 150 --init content``, share one results
file and one table). Results are appended to a JSON file, so an interrupted run resumes where it
stopped (``--fresh`` starts over); the table is printed from that file.

    python benchmarks/bench_gatys.py --data ../shared/data --sizes 256 512 --out runs/bench_gatys

Pin to one core for steady numbers when the machine is busy (``taskset -c 0``, OMP_NUM_THREADS=1).
The README's table was measured this way (``--pairs 2 --sizes 256 512``).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

PAIRS = [
    ("content/budgie_lake_sherburne.jpg", "classic_styles/starry_night_van_gogh_1889.jpg"),
    ("content/landmark_colloseum.jpg", "classic_styles/great_wave_hokusai_c1831.jpg"),
]


def run_timed(cmd: list[str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds = user + system of the child). CPU time is the fairer number
    when other work shares the machine; wall time is what a user waits on an idle machine."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    r = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if r.returncode != 0:
        raise SystemExit(f"failed ({r.returncode}): {' '.join(cmd)}\n{r.stderr[-2000:]}")
    return wall, cpu


def ours_name(ours: list[str]) -> str:
    """The row label of brushwork with the extra flags ``ours``: "brushwork" for its defaults."""
    return " ".join(["brushwork", *ours])


def file_stem(name: str) -> str:
    """A file name for a row label (its flags turned into a slug)."""
    return re.sub(r"[^A-Za-z0-9.=]+", "_", name.replace("--", "")).strip("_")


def tools(size: int, content: str, style: str, out: Path, pastiche_steps: int, ours: list[str]):
    bindir = Path(sys.executable).parent
    name = ours_name(ours)
    return {
        "pastiche": [str(bindir / "pastiche"), "--size", str(size), "--num-steps",
                     str(pastiche_steps), "--seed", "0", "--no-verbose", "-c", content,
                     "-s", style, "-o", str(out / "pastiche.png")],
        name: [str(bindir / "brushwork"), "stylize", content, "-s", style, "--size",
               str(size), "--seed", "0", "--quiet", "-o", str(out / f"{file_stem(name)}.png")]
              + ours,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="../shared/data", help="folder with content/ and styles")
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    ap.add_argument("--out", default="runs/bench_gatys")
    ap.add_argument("--pastiche-steps", type=int, default=500)
    ap.add_argument("--only", choices=("pastiche", "brushwork"), help="run one tool only")
    ap.add_argument("--ours", default="", help="extra flags for brushwork, e.g. '--steps 100'")
    ap.add_argument("--pairs", type=int, default=len(PAIRS), help="use the first N pairs")
    ap.add_argument("--fresh", action="store_true", help="ignore earlier results")
    args = ap.parse_args()

    out_root = Path(args.out)
    out_root.mkdir(parents=True, exist_ok=True)
    results_path = out_root / "results.json"
    results = {} if args.fresh or not results_path.exists() else json.loads(results_path.read_text())
    data = Path(args.data)
    for size in args.sizes:
        for content_rel, style_rel in PAIRS[: args.pairs]:
            content, style = str(data / content_rel), str(data / style_rel)
            key = f"{Path(content_rel).stem}+{Path(style_rel).stem}@{size}"
            out = out_root / key
            out.mkdir(exist_ok=True)
            cmds = tools(size, content, style, out, args.pastiche_steps, args.ours.split())
            for name, cmd in cmds.items():
                if args.only and name.split()[0] != args.only:
                    continue
                if f"{key}/{name}" in results:
                    continue
                wall, cpu = run_timed(cmd)
                results[f"{key}/{name}"] = {"time": wall, "cpu": cpu, "cmd": " ".join(cmd[1:]),
                                            "file": f"{key}/{file_stem(name)}.png"}
                results_path.write_text(json.dumps(results, indent=1))
                print(f"{key} {name}: wall {wall:.1f} s, cpu {cpu:.1f} s", flush=True)
    score(results, data, out_root)
    results_path.write_text(json.dumps(results, indent=1))
    print(table(results))


def score(results, data, out_root):
    from brushwork.core.image import load_image
    from brushwork.eval.metrics import evaluate, metric_encoder
    enc = metric_encoder()
    for key, r in results.items():
        file = out_root / r.get("file", f"{key}.png")
        if "content" in r or not os.path.exists(file):
            continue
        pair = key.split("/", 1)[0].split("@")[0]
        content_rel, style_rel = next((c, s) for c, s in PAIRS
                                      if f"{Path(c).stem}+{Path(s).stem}" == pair)
        r.update(evaluate(load_image(file), load_image(data / content_rel),
                          load_image(data / style_rel), enc))


def table(results) -> str:
    rows = ["| pair @ size | tool | wall (s) | CPU (s) | CPU-time ratio | content | Gram | mean/std "
            "| Frechet | SSIM |", "|---|---|---|---|---|---|---|---|---|---|"]
    for key in sorted({k.split("/", 1)[0] for k in results}):
        peer = results.get(f"{key}/pastiche", {})
        names = sorted({k.split("/", 1)[1] for k in results if k.startswith(f"{key}/")},
                       key=lambda n: (n != "pastiche", n != "brushwork", n))
        for name in names:
            r = results.get(f"{key}/{name}")
            if not r or "content" not in r:
                continue
            ratio = r["cpu"] / peer["cpu"] if "cpu" in peer else float("nan")
            rows.append(f"| {key} | {name} | {r['time']:.1f} | {r['cpu']:.1f} | {ratio:.2f} "
                        f"| {r['content']:.3f} "
                        f"| {r['gram']:.3f} | {r['meanstd']:.3f} | {r['frechet']:.3f} "
                        f"| {r['ssim']:.3f} |")
    return "\n".join(rows)


if __name__ == "__main__":
    main()
