"""The ``brushwork`` command line: one module per command, argparse only here.

Every user-fixable problem is reported as one line (``brushwork: error: ...``) with exit code 2
and no output file; the library raises, this package prints.
"""
from __future__ import annotations

import os
import signal
import sys

from .. import __version__
from ..errors import BrushworkError
from . import eval as eval_cmd, harmonize, stylize, train, video
from . import serve
from .common import EXIT_USAGE, Parser


def build_parser() -> Parser:
    p = Parser(prog="brushwork", description="Neural style transfer: repaint photos in the "
               "style of paintings.")
    p.add_argument("--version", action="version", version=f"brushwork {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    stylize.add_parsers(sub)
    video.add_parser(sub)
    eval_cmd.add_parsers(sub, Parser)
    train.add_parser(sub, Parser)
    harmonize.add_parser(sub)
    serve.add_parser(sub)
    return p


class Terminated(BaseException):
    """SIGTERM or SIGHUP: unwinds like Ctrl-C, so every partial output is removed."""


def _terminate(signum, frame):
    raise Terminated(signal.Signals(signum).name)


def main(argv=None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # usage errors (one line, code 2), --help and --version (code 0)
        return int(e.code or 0)
    if not getattr(args, "command", None) or not hasattr(args, "func"):
        parser.print_help()
        return EXIT_USAGE
    if hasattr(args, "argv"):  # the command's own arguments, for commands that reparse them
        full = list(sys.argv[1:] if argv is None else argv)
        args.argv = full[full.index(args.command) + 1:]
    old = {}
    try:
        for sig in (signal.SIGTERM, signal.SIGHUP):
            old[sig] = signal.signal(sig, _terminate)
    except ValueError:  # not the main thread: the caller owns the signals
        pass
    try:
        return args.func(args)
    except BrushworkError as e:
        print(f"brushwork: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except FloatingPointError as e:
        print(f"brushwork: error: {e}", file=sys.stderr)
        return 1
    except MemoryError:
        print("brushwork: error: out of memory (try a smaller --size)", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("brushwork: interrupted", file=sys.stderr)
        return 130
    except Terminated as e:
        print(f"brushwork: stopped by {e}", file=sys.stderr)
        return 143
    except BrokenPipeError:  # output piped into e.g. `head`: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


if __name__ == "__main__":
    sys.exit(main())
