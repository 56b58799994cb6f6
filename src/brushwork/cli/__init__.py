"""The ``brushwork`` command line: one module per command, argparse only here.

Every user-fixable problem is reported as one line (``brushwork: error: ...``) with exit code 2
and no output file; the library raises, this package prints.
"""
from __future__ import annotations

import atexit
import importlib
import os
import signal
import sys
import threading

from .. import __version__
from ..core.memory import keep_freed_memory
from ..errors import BrushworkError
from .common import EXIT_USAGE, Parser

# command -> the module of this package that adds its parser, in `brushwork --help` order. A
# command line names one command: only that module is imported and only its parser is built
# (each module imports what its commands use: the trainers, video, the studio), so a stylise
# does not load the training code.
COMMANDS = {
    "stylize": "stylize", "methods": "stylize", "demo": "stylize",
    "video": "video",
    "sheet": "eval", "eval": "eval",
    "train": "train",
    "harmonize": "harmonize",
    "serve": "serve",
    "adapt": "adapt",
}


def _add(module: str, sub) -> None:
    mod = importlib.import_module(f"{__name__}.{module}")
    if module == "stylize":
        mod.add_parsers(sub)
    elif module == "eval":
        mod.add_parsers(sub, Parser)
    elif module == "train":
        mod.add_parser(sub, Parser)
    else:
        mod.add_parser(sub)


def command_of(argv) -> str | None:
    """The command a command line names (its first word that is not an option; the top-level
    options take no values), or None."""
    for a in argv:
        if a == "--":
            return None
        if not a.startswith("-"):
            return a
    return None


def build_parser(command: str | None = None, *, commands: bool = True) -> Parser:
    """The ``brushwork`` parser: with ``command`` (one of :data:`COMMANDS`) only that command's
    module adds its parser(s); otherwise every command is there (``brushwork --help``), or none
    with ``commands=False`` (``brushwork --version``)."""
    p = Parser(prog="brushwork", description="Neural style transfer: repaint photos in the "
               "style of paintings.")
    p.add_argument("--version", action="version", version=f"brushwork {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    if not commands:
        modules = []
    elif command in COMMANDS:
        modules = [COMMANDS[command]]
    else:
        modules = dict.fromkeys(COMMANDS.values())
    for module in modules:
        _add(module, sub)
    return p


class Terminated(BaseException):
    """SIGTERM or SIGHUP: unwinds like Ctrl-C, so every partial output is removed."""


def _terminate(signum, frame):
    raise Terminated(signal.Signals(signum).name)


class _Unwind:
    """SIGTERM and SIGHUP raise :class:`Terminated` in the main thread while the command runs.

    An exception raised while Python runs a ``__del__`` or a weakref callback (the import
    system's lock clean-up, for one) is printed as "Exception ignored" and dropped; a stop that
    lands there (or a Ctrl-C) is raised again 10 ms later, so no signal is ever lost."""

    def __enter__(self):
        self.old, self.hook = {}, sys.unraisablehook
        try:
            for sig in (signal.SIGTERM, signal.SIGHUP):
                self.old[sig] = signal.signal(sig, _terminate)
        except ValueError:  # not the main thread: the caller owns the signals
            return self
        self.old[signal.SIGALRM] = signal.getsignal(signal.SIGALRM)
        sys.unraisablehook = self._unraisable
        return self

    def _unraisable(self, u) -> None:
        if not isinstance(u.exc_value, (Terminated, KeyboardInterrupt)):
            return self.hook(u)
        exc = u.exc_value

        def again(signum, frame):
            raise exc
        signal.signal(signal.SIGALRM, again)
        signal.setitimer(signal.ITIMER_REAL, 0.01)

    def __exit__(self, *exc):
        if self.old:
            signal.setitimer(signal.ITIMER_REAL, 0)
            sys.unraisablehook = self.hook
        for sig, handler in self.old.items():
            signal.signal(sig, handler)
        return False


def main(argv=None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(command_of(words), commands=words != ["--version"])
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
    if getattr(args, "tile", None) is None and getattr(args, "max_memory", None) is None:
        keep_freed_memory()  # memory-planned runs keep the system's malloc (no extra peak)
    with _Unwind():
        return _run(args)


def _run(args) -> int:
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


def entry() -> None:
    """The ``brushwork`` program (console script and ``python -m brushwork``): :func:`main`,
    then the exit. A process that loaded PyTorch spends about 0.3 s tearing the interpreter
    down (freeing every module's objects) after its work is done. Once the command has
    returned (its files written and closed), the standard streams are flushed, the exit
    handlers have run (temporary folders, Ray) and no other thread is left to wait for, none of
    that teardown is needed: the process ends there with the command's exit code."""
    code = main()
    others = [t for t in threading.enumerate() if t is not threading.main_thread()]
    if "torch" not in sys.modules or any(not t.daemon for t in others):
        sys.exit(code)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed or broken pipe: nothing left to say
            pass
    atexit._run_exitfuncs()
    os._exit(code)


if __name__ == "__main__":
    entry()
