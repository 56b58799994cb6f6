"""`brushwork eval style-accuracy` and `brushwork sheet` (`eval video` lives with `video`)."""
from __future__ import annotations

from ..core import validate
from .common import with_progress
from .video import add_eval_parser


def add_parsers(sub, Parser) -> None:
    sh = sub.add_parser("sheet", help="every built-in style/artist of cin or asma on one photo")
    _add_sheet_arguments(sh)
    sh.set_defaults(func=cmd_sheet)
    ev = sub.add_parser("eval", help="evaluations (style-accuracy, video)")
    esub = ev.add_subparsers(dest="evaluation", metavar="NAME", parser_class=Parser)
    sa = esub.add_parser("style-accuracy", help="share of results an artist judge assigns "
                         "to the target artist")
    _add_style_accuracy_arguments(sa)
    sa.add_argument("-q", "--quiet", action="store_true")
    sa.set_defaults(func=cmd_style_accuracy)
    add_eval_parser(esub)


def _add_style_accuracy_arguments(p) -> None:
    p.add_argument("--methods", type=validate.names_arg, default="asma,gatys,adain",
                   help="comma-separated methods to judge (label-driven or painting-driven)")
    p.add_argument("--styles", required=True, help="folder of artist sub-folders (the paintings "
                   "that drive painting-driven methods: those every judge held out)")
    p.add_argument("--content", required=True, help="folder of content photos")
    p.add_argument("--judge", choices=("vgg", "texture", "both"), default="both",
                   help="who judges: texture (hand-made texture features, the target "
                        "judge), vgg (VGG19-statistics classifier) or both, side by side "
                        "(default)")
    p.add_argument("--classifier", default=None,
                   help="VGG artist classifier for --judge vgg (default: shipped)")
    p.add_argument("--texture-judge", default=None,
                   help="texture judge for --judge texture (default: shipped)")
    p.add_argument("--artists", type=validate.names_arg, default=None,
                   help="comma-separated subset of the artists")
    p.add_argument("--n-content", type=validate.positive_int_arg, default=10,
                   help="content photos per artist")
    p.add_argument("--size", type=validate.size_arg, default=256,
                   help=f"content long side, {validate.MIN_SIDE}..{validate.MAX_SIDE} "
                        f"(0 = keep each photo's size)")
    p.add_argument("--style-size", type=validate.size_arg, default=256,
                   help=f"driving painting long side, {validate.MIN_SIDE}..{validate.MAX_SIDE} "
                        f"(0 = keep each painting's size)")
    p.add_argument("--weights", action="append", default=[], metavar="METHOD=PATH",
                   help="weight file for a method (repeatable)")
    p.add_argument("--set", action="append", default=[], metavar="METHOD.CONTROL=VALUE",
                   help="a control for one method, e.g. gatys.steps=100 (repeatable)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=validate.seed_arg, default=0)
    p.add_argument("--json", default=None, help="also write the results to this JSON file")


def _add_sheet_arguments(p) -> None:
    p.add_argument("content", metavar="CONTENT", help="content photo")
    p.add_argument("-m", "--method", default="cin", help="a method with built-in styles: cin, asma")
    p.add_argument("-o", "--output", required=True, help="output image (.png, .jpg)")
    p.add_argument("--size", type=validate.size_arg, default=256,
                   help=f"long side of each cell, {validate.MIN_SIDE}..{validate.MAX_SIDE} "
                        f"(0 = keep the photo's size)")
    p.add_argument("--weights", default=None, help="weight file (default: shipped)")
    p.add_argument("--device", default="cpu")


def cmd_sheet(args) -> int:
    from ..eval.style_accuracy import run_sheet

    print(f"wrote {run_sheet(args)}")
    return 0


def cmd_style_accuracy(args) -> int:
    from ..eval.style_accuracy import run_eval

    out = with_progress(args, "image", lambda bar: run_eval(args, bar))
    print(out["table"])
    return 0
