"""Video benchmark: warping error with and without flow consistency, and speed.

Builds a clip from two photos of ../shared/data/content (a slow pan and zoom across one photo,
with a round cut-out of a second photo sliding across it, so there are real occlusions), then
for each method stylises it frame by frame (``--consistency none``) and with the flow layer
(``flow``), and reports

* the warping error (brushwork.temporal, flow and occlusion mask from the input frames),
* the mean style distance of every ``--style-every``-th frame
  (brushwork.metrics.style_distances, Gram ratio: 1.0 = unstylised, lower = closer to the style),
* seconds per frame and frames per second (flow included).

``--fps-size 480`` additionally times a few frames at 854x480 per method and mode.

    nice -n 19 python benchmarks/bench_video.py --methods gatys,adain --frames 24 --size 320

The clip is generated in memory; nothing from ../shared is written into the repository.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from brushwork.core.image import load_image, to_tensor  # noqa: E402
from brushwork.eval.metrics import metric_encoder, style_distances  # noqa: E402
from brushwork.methods import METHODS  # noqa: E402
from brushwork.video.temporal import TemporalStylizer, warping_error  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
DEFAULT_BG = DATA / "content" / "landmark_machu-picchu.jpg"
DEFAULT_SPRITE = DATA / "content" / "skimage_chelsea.jpg"
DEFAULT_STYLE = DATA / "classic_styles" / "starry_night_van_gogh_1889.jpg"


def make_clip(bg_path, sprite_path, n: int, out_hw: tuple[int, int]) -> list[torch.Tensor]:
    """Pan + zoom across ``bg_path`` with a round cut-out of ``sprite_path`` moving over it."""
    import cv2

    h, w = out_hw
    bg = load_image(bg_path)[0].permute(1, 2, 0).numpy()
    sp = load_image(sprite_path)[0].permute(1, 2, 0).numpy()
    bh, bw = bg.shape[:2]
    r = h / 4.0                                          # sprite radius in output pixels
    sh, sw = sp.shape[:2]
    ss = min(sh, sw)
    sp = cv2.resize(sp[(sh - ss) // 2:(sh + ss) // 2, (sw - ss) // 2:(sw + ss) // 2],
                    (int(2 * r), int(2 * r)), interpolation=cv2.INTER_AREA)
    yy, xx = np.mgrid[0:int(2 * r), 0:int(2 * r)]
    alpha = np.clip(r - np.hypot(yy - r + 0.5, xx - r + 0.5), 0, 1)[..., None]
    frames = []
    for i in range(n):
        t = i / max(1, n - 1)
        # crop window: 70 % -> 62 % of the photo's width, panning left to right
        cw = bw * (0.70 - 0.08 * t)
        ch = cw * h / w
        if ch > bh:
            ch = bh * 0.95
            cw = ch * w / h
        x0 = (bw - cw) * (0.1 + 0.8 * t)
        y0 = (bh - ch) * (0.5 - 0.2 * t)
        s = w / cw
        m = np.array([[s, 0, -x0 * s], [0, s, -y0 * s]], np.float32)
        f = cv2.warpAffine(bg, m, (w, h), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
        # sprite: moves diagonally, faster than the pan
        cx = w * (0.15 + 0.7 * t)
        cy = h * (0.65 - 0.3 * t)
        xa, ya = int(round(cx - r)), int(round(cy - r))
        x1, y1 = max(0, xa), max(0, ya)
        x2, y2 = min(w, xa + sp.shape[1]), min(h, ya + sp.shape[0])
        if x2 > x1 and y2 > y1:
            a = alpha[y1 - ya:y2 - ya, x1 - xa:x2 - xa]
            f[y1:y2, x1:x2] = a * sp[y1 - ya:y2 - ya, x1 - xa:x2 - xa] + (1 - a) * f[y1:y2, x1:x2]
        frames.append(to_tensor(np.clip(f, 0, 1)))
    return frames


def build_method(name: str, args):
    if name == "adain" and args.adain_weights == "random":
        return _random_adain()
    opts = {}
    if name == "adain" and args.adain_weights:
        opts["weights"] = args.adain_weights
    if name.endswith("-small"):  # adain-small, wct-small: the distilled encoder's shipped files
        name, opts["encoder"] = name[: -len("-small")], "small"
    return METHODS[name](**opts)


def _random_adain():
    """AdaIN with a randomly initialised decoder (plumbing/speed only, not quality)."""
    import tempfile

    from safetensors.torch import save_file
    from brushwork.core.blocks import decoder

    torch.manual_seed(0)
    dec = decoder(4, 1.0, None)
    state = {f"decoder.{k}": v.contiguous() for k, v in dec.state_dict().items()}
    path = Path(tempfile.mkdtemp()) / "adain_random.safetensors"
    save_file(state, str(path), metadata={"method": "adain", "encoder": "vgg", "width": "1.0"})
    return METHODS["adain"](weights=str(path))


def method_controls(name: str, args) -> dict:
    if name == "gatys":
        return {"steps": args.steps, "scales": 1}
    if name == "cin":
        return {"style_id": "0"}  # the shipped cin_classic's style 0 is the benchmark's painting
    return {}


def run(method, frames, style, mode, controls, args):
    ts = TemporalStylizer(method, mode, blend=args.blend, temporal_weight=args.temporal_weight,
                          post_blend=args.post_blend, resample=args.resample)
    # built-in-style models (cin, johnson, asma) take no style image
    styles = [style] if method.capabilities.takes_style_images else []
    outs, t0 = [], time.perf_counter()
    for i, f in enumerate(frames):
        outs.append(ts.stylize(f, styles, controls=controls, seed=0))
        print(f"  {method.name} {mode} frame {i + 1}/{len(frames)} "
              f"{time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
    return outs, time.perf_counter() - t0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--methods", default="gatys,adain")
    p.add_argument("--frames", type=int, default=24)
    p.add_argument("--size", type=int, default=320, help="clip width (16:9)")
    p.add_argument("--steps", type=int, default=20, help="gatys L-BFGS steps per frame")
    p.add_argument("--temporal-weight", type=float, default=None)
    p.add_argument("--blend", type=float, default=None)
    p.add_argument("--post-blend", type=float, default=None)
    p.add_argument("--resample", choices=("linear", "lanczos"), default=None,
                   help="warp of the previous result (default: the method's own, else linear)")
    p.add_argument("--style", default=str(DEFAULT_STYLE))
    p.add_argument("--background", default=str(DEFAULT_BG))
    p.add_argument("--sprite", default=str(DEFAULT_SPRITE))
    p.add_argument("--adain-weights", default=None,
                   help="weight file, or 'random' for an untrained decoder (speed only)")
    p.add_argument("--style-every", type=int, default=4,
                   help="style distance on every k-th frame (it costs ~1-10 s a frame)")
    p.add_argument("--fps-size", type=int, default=0, help="also time this height (e.g. 480)")
    p.add_argument("--fps-frames", type=int, default=4)
    p.add_argument("--save", default=None, help="folder to write the stylised clips (mp4)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    from brushwork.video.temporal import TemporalStylizer as _T
    import inspect
    defaults = {k: v.default for k, v in inspect.signature(_T.__init__).parameters.items()}
    for k in ("temporal_weight", "post_blend"):  # blend: None = the method's own default
        if getattr(args, k) is None:
            setattr(args, k, defaults[k])

    # On a shared, oversubscribed CPU two OpenMP threads can be far slower than one.
    torch.set_num_threads(args.threads)
    w = args.size
    hw = (round(w * 9 / 16 / 2) * 2, w)
    frames = make_clip(args.background, args.sprite, args.frames, hw)
    style = load_image(args.style)
    enc = metric_encoder()
    rows = []
    for name in args.methods.split(","):
        try:
            method = build_method(name, args)
        except Exception as e:  # e.g. adain without weights
            print(f"# {name}: skipped ({e})", flush=True)
            continue
        controls = method_controls(name, args)
        for mode in ("none", "flow"):
            outs, secs = run(method, frames, style, mode, controls, args)
            wr = warping_error(frames, outs)
            we = wr["warping_error"]
            sd = [style_distances(o, style, f, enc)["gram"]
                  for o, f in list(zip(outs, frames))[args.style_every - 1::args.style_every]]
            row = {"method": name, "consistency": mode, "frames": len(frames),
                   "size": f"{hw[1]}x{hw[0]}", "warping_error": we,
                   "input_warping_error": wr["input_warping_error"],
                   "style_gram": float(np.mean(sd)), "s_per_frame": secs / len(frames),
                   "fps": len(frames) / secs}
            if args.save:
                from brushwork.video.io import write_frames
                Path(args.save).mkdir(parents=True, exist_ok=True)
                write_frames(Path(args.save) / f"{name}_{mode}.mp4", outs, fps=12)
            rows.append(row)
            print(json.dumps(row), flush=True)
        if args.fps_size:
            h480 = args.fps_size
            hw480 = (h480, round(h480 * 16 / 9 / 2) * 2)
            f480 = make_clip(args.background, args.sprite, args.fps_frames, hw480)
            for mode in ("none", "flow"):
                _, secs = run(method, f480, style, mode, controls, args)
                row = {"method": name, "consistency": mode, "size": f"{hw480[1]}x{hw480[0]}",
                       "frames": len(f480), "fps": len(f480) / secs,
                       "s_per_frame": secs / len(f480), "controls": controls}
                rows.append(row)
                print(json.dumps(row), flush=True)

    print()
    print("| method | consistency | size | warping error | style distance (Gram ratio) | s/frame | fps |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        we = f"{r['warping_error']:.5f}" if "warping_error" in r else "-"
        sd = f"{r['style_gram']:.3f}" if "style_gram" in r else "-"
        print(f"| {r['method']} | {r['consistency']} | {r['size']} | {we} | {sd} | "
              f"{r['s_per_frame']:.2f} | {r['fps']:.2f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
