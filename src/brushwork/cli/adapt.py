"""`brushwork adapt`: a fast network for one painting in minutes (MetaStyle), for
``-m metastyle --weights FILE``."""
from __future__ import annotations

import time

from ..core import validate
from .common import with_progress


def add_parser(sub) -> None:
    from ..train.metastyle import ADAPT_DEFAULTS as d, BUNDLED_PHOTOS, SCHEDULES

    p = sub.add_parser(
        "adapt", help="adapt the MetaStyle network to a painting (for -m metastyle)",
        description="Adapt the shipped MetaStyle initialisation (a style-neutral johnson "
        "network, meta-learned over many paintings) to PAINTING with a short run of "
        "johnson's training, and write the adapted one-style network to -o; stylise with "
        "`brushwork stylize PHOTO -m metastyle --weights FILE`. The file is written at the "
        "end, whole, or not at all.")
    p.add_argument("style", metavar="PAINTING", help="the painting to adapt to")
    p.add_argument("-o", "--output", required=True, metavar="FILE",
                   help="the adapted weight file (.safetensors)")
    p.add_argument("--steps", type=validate.int_arg(1, what="--steps"), default=d["steps"],
                   metavar="N", help=f"adaptation steps (default {d['steps']})")
    p.add_argument("--size", type=validate.int_arg(16, what="--size"), default=d["size"],
                   metavar="PX", help=f"content crop size in pixels (default {d['size']})")
    p.add_argument("--batch", type=validate.int_arg(1, what="--batch"), default=d["batch"],
                   metavar="N", help=f"crops per step (default {d['batch']})")
    p.add_argument("--style-size", type=validate.int_arg(16, what="--style-size"),
                   default=d["style_size"], metavar="PX",
                   help=f"long side the painting is scaled to (default {d['style_size']})")
    p.add_argument("--content", default=None, metavar="DIR",
                   help="folder of photos to adapt on (default: the photos scikit-image "
                        f"ships: {', '.join(BUNDLED_PHOTOS)})")
    p.add_argument("--lr", type=validate.non_negative_float_arg, default=d["lr"],
                   help=f"Adam learning rate (default {d['lr']:g})")
    p.add_argument("--schedule", choices=SCHEDULES, default=d["schedule"],
                   help="learning rate over the run: constant, or cosine from --lr down to 0 "
                        f"(default {d['schedule']})")
    for name, what in (("content", "the content loss (relu2_2)"),
                       ("style", "the Gram style loss"), ("tv", "total variation")):
        p.add_argument(f"--{name}-weight", type=validate.non_negative_float_arg,
                       default=d[f"{name}_weight"], metavar="W",
                       help=f"weight of {what} (default {d[f'{name}_weight']:g})")
    p.add_argument("--init", default=None, metavar="FILE",
                   help="start from this initialisation (`brushwork train metastyle`) "
                        "instead of the shipped one")
    p.add_argument("--seed", type=validate.seed_arg, default=0, metavar="N",
                   help="random seed of the crops (same seed, same weights)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--threads", type=validate.int_arg(1, what="--threads"), default=None,
                   metavar="N", help="torch CPU threads")
    p.add_argument("--fp16", action="store_true", help="store the weights as fp16")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar or summary")
    p.set_defaults(func=cmd_adapt)


def cmd_adapt(args) -> int:
    from pathlib import Path

    import torch

    from ..core.image import load_image
    from ..errors import BrushworkError
    from ..train import metastyle

    t0 = time.perf_counter()
    if not args.lr > 0:
        raise BrushworkError("--lr must be positive")
    out = metastyle.check_adapt_output(args.output)
    if Path(args.style).resolve() == out.resolve():
        raise BrushworkError(f"{out}: the output would overwrite the painting; choose another "
                             f"output path")
    style = load_image(args.style)
    if args.threads:
        torch.set_num_threads(args.threads)
    res = with_progress(args, "step", lambda bar: metastyle.adapt(
        style, out, init=args.init, content=args.content, steps=args.steps, size=args.size,
        batch=args.batch, lr=args.lr, style_size=args.style_size,
        content_weight=args.content_weight, style_weight=args.style_weight,
        tv_weight=args.tv_weight, schedule=args.schedule, seed=args.seed, device=args.device,
        style_name=Path(args.style).stem, fp16=args.fp16, callback=bar))
    if not args.quiet:
        print(f"wrote {out} ({res['steps']} steps, {time.perf_counter() - t0:.1f} s); "
              f"stylise with: brushwork stylize PHOTO -m metastyle --weights {out}")
    return 0
