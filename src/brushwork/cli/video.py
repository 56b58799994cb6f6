"""`brushwork video` and `brushwork eval video`."""
from __future__ import annotations

from ..core import validate
from ..video.io import CODECS
from ..video.temporal import CONSISTENCY_MODES, FLOW_METHODS, RESAMPLING
from .common import add_method_flags, collect_controls, with_progress


def add_parser(sub) -> None:
    v = sub.add_parser("video", help="stylise a video (or a folder of frames), audio kept",
                       description="Stylise every frame of IN; --consistency flow reduces flicker.")
    _add_video_arguments(v)
    add_method_flags(v, "input")
    v.set_defaults(func=cmd_video)


def _add_video_arguments(p) -> None:
    p.add_argument("input", metavar="IN", help="input video (.mp4, .mov, .mkv, .webm, .avi) "
                   "or a folder of frame images")
    p.add_argument("-o", "--output", required=True,
                   help="output video (.mp4, .mov, .mkv, .webm, .avi) or a new folder of PNGs")
    p.add_argument("--consistency", choices=CONSISTENCY_MODES, default="flow",
                   help="none: stylise frames independently; flow: carry the previous result "
                        "along the optical flow (less flicker)")
    p.add_argument("--flow-blend", type=validate.unit_float_arg, default=None,
                   help="flow mode, feed-forward methods: weight of the warped previous frame "
                        "(0-1; default 0.4, wct 0.95)")
    p.add_argument("--flow-resample", choices=RESAMPLING, default=None,
                   help="flow mode: how the previous result is warped (default bilinear; wct "
                        "lanczos, which stays sharp when a result is carried for many frames)")
    p.add_argument("--flow-detail", type=validate.non_negative_float_arg, default=None,
                   metavar="SIGMA",
                   help="flow mode, feed-forward methods: after blending, restore the fresh "
                        "frame's fine-detail energy above a blur of SIGMA px (default 1.5, "
                        "0 = off)")
    p.add_argument("--temporal-weight", type=validate.non_negative_float_arg, default=None,
                   help="flow mode, gatys: weight of the temporal loss (Ruder et al.)")
    p.add_argument("--flow", choices=FLOW_METHODS, default="dis",
                   help="optical flow algorithm (OpenCV)")
    p.add_argument("--codec", choices=tuple(CODECS), default=None,
                   help="video codec (default: h264; vp9 for .webm, mpeg4 for .avi)")
    p.add_argument("--crf", type=validate.int_arg(0, 51), default=18,
                   help="quality for h264/hevc/vp9, 0..51 (lower = better)")
    p.add_argument("--fps", type=validate.float_arg(0.0, 1000.0, low_open=True), default=None,
                   help="frame rate when IN is a folder of frames (default 25)")
    p.add_argument("--no-audio", action="store_true", help="drop the audio track")
    p.add_argument("--timings", action="store_true",
                   help="print the time per frame of each stage (decode, model, flow, masks, "
                        "warp/blend, encode) at the end")
    p.add_argument("--threads", type=validate.int_arg(1, 256, "--threads"), default=None,
                   help="threads for the model (default: one per core); frames are decoded "
                        "and encoded in two more threads beside it")


def add_eval_parser(esub) -> None:
    p = esub.add_parser("video", help="warping error (flicker) of a stylised video OUT given "
                        "its input IN")
    p.add_argument("input", metavar="IN", help="the input video (or frame folder)")
    p.add_argument("output", metavar="OUT", help="its stylised version (same frame count)")
    p.add_argument("--flow", choices=FLOW_METHODS, default="dis")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=cmd_eval_video)


def cmd_video(args) -> int:
    from ..video.pipeline import run

    if getattr(args, "threads", None):
        import torch
        torch.set_num_threads(args.threads)

    out = with_progress(args, "frame", lambda bar: run(args, collect_controls(args), bar))
    if not args.quiet:
        print(out["message"])
    if args.timings:
        print(out["stages_table"])
    return 0


def cmd_eval_video(args) -> int:
    from ..video.pipeline import run_eval

    out = with_progress(args, "frame", lambda bar: run_eval(args, bar))
    print(out["message"])
    return 0
