"""Score one-style networks (johnson or metastyle weight files) against their painting.

    python benchmarks/bench_metastyle.py --painting PAINTING.jpg FILE [FILE ...]
        [--content-dir DATA/content] [--photos 5] [--size 512] [--threads 1]

Each file stylises the same photos (``--photos`` drawn with seed 0 from the sorted ``*.jpg``
of ``--content-dir``, long side ``--size``); the table gives the mean of
``brushwork.eval.metrics.evaluate`` over them (content distance, Gram / mean-std / Frechet
ratios, SSIM) and the median seconds per image.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_arbitrary as ba  # noqa: E402  (the data folder)
from brushwork.core.image import load_image, resize_long_side  # noqa: E402
from brushwork.core.weights import load_weights  # noqa: E402
from brushwork.eval.metrics import evaluate, metric_encoder  # noqa: E402
from brushwork.methods import get_method  # noqa: E402

KEYS = ("content", "gram", "meanstd", "frechet", "ssim")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("files", nargs="+", help="johnson or metastyle weight files")
    p.add_argument("--painting", required=True)
    p.add_argument("--content-dir", default=str(ba.DATA / "content"))
    p.add_argument("--photos", type=int, default=5)
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    contents = sorted(Path(args.content_dir).glob("*.jpg"))
    picks = np.random.default_rng(0).choice(len(contents), args.photos, replace=False)
    photos = [resize_long_side(load_image(contents[i]), args.size) for i in picks]
    style = load_image(args.painting)
    enc = metric_encoder()
    print("| file | s / image | " + " | ".join(KEYS) + " |")
    print("|---" * (len(KEYS) + 2) + "|")
    for f in args.files:
        model = get_method(load_weights(f)[1].get("method", "johnson"))(weights=f)
        times, rows = [], []
        for c in photos:
            t = time.perf_counter()
            with torch.no_grad():
                y = model.stylize(c, None)
            times.append(time.perf_counter() - t)
            rows.append(evaluate(y, c, style, enc))
        means = [float(np.mean([r[k] for r in rows])) for k in KEYS]
        print(f"| {Path(f).name} | {statistics.median(times):.2f} | "
              + " | ".join(f"{v:.3f}" for v in means) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
