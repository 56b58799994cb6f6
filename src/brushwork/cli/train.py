"""`brushwork train NAME ...`: one sub-command per entry of ``brushwork.train.TRAINERS``."""
from __future__ import annotations

from .common import with_progress


def add_parser(sub, Parser) -> None:
    from ..train import TRAINERS

    t = sub.add_parser("train", help="train a model (see `brushwork train NAME --help`)")
    tsub = t.add_subparsers(dest="trainer", metavar="NAME", parser_class=Parser)
    for name, mod in TRAINERS.items():
        tp = tsub.add_parser(name, help=(mod.__doc__ or "").strip().splitlines()[0])
        mod.add_arguments(tp)
        tp.add_argument("-q", "--quiet", action="store_true")
        tp.set_defaults(func=lambda a, mod=mod: _run(mod, a))


def _run(mod, args) -> int:
    with_progress(args, "step", lambda bar: mod.run(args, bar))
    return 0
