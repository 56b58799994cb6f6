"""Batch throughput: a folder of photos stylised in one process, on a local Ray, and by running
the CLI once per file, against the per-image stylisation time inside one process.

    python benchmarks/bench_batch.py --photos 100 --size 512        # ../shared/data/content
    python benchmarks/bench_batch.py --photos 100 --ray 1,2 --cli-files 10

Rows (one run, side by side):

* ``brushwork stylize FOLDER``: the whole command (start-up, model load, decode, stylise,
  PNG encode, sha256, manifest) per image, and its overhead over the stylisation time the
  same run records per file (``stylize_seconds`` in its manifest; measured side by side, so
  other load on the machine cancels out);
* ``--engine ray`` with 1 and 2 workers (Ray start-up included);
* ``brushwork stylize`` once per file (``--cli-files`` files, per image).
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

DATA = ROOT.parent / "shared" / "data"


def photos(n: int, folder: Path) -> list[Path]:
    """``n`` photos linked (or copied) into ``folder``: ../shared/data/content, else generated
    from scikit-image's samples."""
    folder.mkdir(parents=True, exist_ok=True)
    src = sorted((DATA / "content").glob("*.jpg")) if (DATA / "content").is_dir() else []
    out = []
    if src:
        for i in range(n):
            p = src[i % len(src)]
            dst = folder / f"{i:03d}_{p.name}"
            shutil.copy(p, dst)
            out.append(dst)
    else:
        import numpy as np
        from PIL import Image
        from skimage import data
        base = [data.astronaut(), data.chelsea(), data.coffee(), data.rocket()]
        for i in range(n):
            a = np.roll(base[i % 4], i * 7, axis=1)
            dst = folder / f"{i:03d}.jpg"
            Image.fromarray(a).save(dst, quality=92)
            out.append(dst)
    return out


def style_file(folder: Path) -> Path:
    cands = sorted((DATA / "styles").glob("*/*.jpg")) if (DATA / "styles").is_dir() else []
    if cands:
        return cands[0]
    from PIL import Image
    from skimage import data
    p = folder / "style.png"
    Image.fromarray(data.coffee()).save(p)
    return p


def run(cmd, threads):
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    t0 = time.perf_counter()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, cmd))} failed:\n{r.stderr}")
    return time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--photos", type=int, default=100)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--threads", type=int, default=2, help="torch threads for one process")
    ap.add_argument("--ray", default="1,2", help="Ray worker counts to run ('' = none)")
    ap.add_argument("--cli-files", type=int, default=10)
    args = ap.parse_args()

    import torch
    from brushwork.batch import manifest
    tmp = Path(tempfile.mkdtemp(prefix="brushwork_bench_batch_"))
    files = photos(args.photos, tmp / "in")
    style = style_file(tmp)
    flags = ["-s", str(style), "-m", "adain", "--encoder", "small", "--size", str(args.size),
             "-q"]
    bw = [sys.executable, "-m", "brushwork", "stylize"]
    rows = []

    t = run(bw + [str(tmp / "in"), "-o", str(tmp / "out_local")] + flags, args.threads)
    recs = manifest.read(tmp / "out_local" / manifest.FILE).values()
    inside = sum(r["stylize_seconds"] for r in recs) / len(files)
    floor = inside
    rows.append(("stylisation alone, inside that run (`stylize_seconds` of its manifest)",
                 inside, None))
    rows.append((f"`brushwork stylize FOLDER` ({args.threads} threads), whole command",
                 t / len(files), f"batch overhead {100 * (t / len(files) / inside - 1):+.0f} % "
                 f"(start-up, model load, decode, encode, hashes, manifest)"))

    for n in [int(x) for x in args.ray.split(",") if x.strip()]:
        t = run(bw + [str(tmp / "in"), "-o", str(tmp / f"out_ray{n}"), "--engine", "ray",
                      "--num-cpus", str(n)] + flags, 1)
        rows.append((f"`--engine ray --num-cpus {n}` (1 thread per worker)", t / len(files),
                     None))

    k = min(args.cli_files, len(files))
    t0 = time.perf_counter()
    for i, f in enumerate(files[:k]):
        run(bw + [str(f), "-o", str(tmp / f"one_{i}.png")] + flags, args.threads)
    t = time.perf_counter() - t0
    rows.append((f"`brushwork stylize FILE` once per file ({k} files)", t / k, None))

    print(f"{len(files)} photos -> {args.size} px, adain --encoder small, "
          f"torch {torch.__version__}, {os.cpu_count()} CPUs\n")
    print("| how | s / image | images / s | vs stylisation alone | note |")
    print("|---|---|---|---|---|")
    for name, per, note in rows:
        print(f"| {name} | {per:.3f} | {1 / per:.2f} | {per / floor:.2f}x | {note or ''} |")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
