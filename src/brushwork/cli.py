"""The ``brushwork`` command line.

Every user-fixable problem is reported as one line (``brushwork: error: ...``) with exit code 2
and no output file; the library raises, this module prints.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from . import __version__
from .errors import BrushworkError, ControlError

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage dump), exit code 2."""

    def error(self, message):
        self.exit(EXIT_USAGE, f"brushwork: error: {message}\n")


# ----------------------------------------------------------------------------- progress
class ProgressBar:
    """Draws Progress events as a tqdm bar on a terminal; elsewhere (a log file, a pipe) writes
    a plain line every ``every`` seconds and at the last step, so long jobs under nohup show
    where they are."""

    def __init__(self, enabled: bool, unit: str = "step", tty: bool = True,
                 every: float = 30.0):
        self.enabled = enabled
        self.unit = unit
        self.tty = tty
        self.every = every
        self.bar = None
        self._last = None

    def __call__(self, ev):
        if not self.enabled:
            return
        if not self.tty:
            return self._line(ev)
        from tqdm import tqdm
        if self.bar is None:
            self.bar = tqdm(total=ev.total or None, unit=self.unit, dynamic_ncols=True,
                            leave=False, file=sys.stderr)
        if ev.total and self.bar.total != ev.total:
            self.bar.total = ev.total
        if ev.kind in ("step", "train", "frame"):
            self.bar.n = ev.step
            post = {k: f"{v:.3g}" for k, v in list(ev.losses.items())[:5]}
            if ev.n_scales > 1:
                post = {"scale": f"{ev.scale + 1}/{ev.n_scales}", **post}
            self.bar.set_postfix(post, refresh=False)
            self.bar.refresh()
        elif ev.kind == "scale" and ev.size:
            self.bar.set_description(f"{ev.size[1]}x{ev.size[0]}")

    def _line(self, ev):
        if ev.kind not in ("step", "train", "frame"):
            return
        now = time.monotonic()
        last = ev.total and ev.step >= ev.total
        if self._last is None:
            self._last = now
        if not last and now - self._last < self.every:
            return
        self._last = now
        text = f"{ev.method} {ev.step}/{ev.total or '?'} {self.unit}s"
        if ev.total:
            text += f" ({100 * ev.step / ev.total:.0f} %)"
        if ev.elapsed:
            text += f" elapsed {_hms(ev.elapsed)}"
            if ev.total and ev.step:
                text += f" eta {_hms(ev.elapsed / ev.step * (ev.total - ev.step))}"
        text += "".join(f" {k}={v:.4g}" for k, v in list(ev.losses.items())[:6])
        print(text, file=sys.stderr, flush=True)

    def close(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _hms(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}h{s // 60 % 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def _with_progress(args, unit: str, fn):
    """``fn(bar)`` with a progress bar (drawn on a terminal unless --quiet), closed afterwards."""
    bar = ProgressBar(enabled=not args.quiet, unit=unit, tty=sys.stderr.isatty())
    try:
        return fn(bar)
    finally:
        bar.close()


# ----------------------------------------------------------------------------- controls
def _all_controls():
    """Every control of every method: name -> Control (the same name means the same thing)."""
    from .methods import METHODS
    seen = {}
    for cls in METHODS.values():
        for name, c in cls.controls.items():
            if c.kind == "images" and name not in ("masks", "stroke_mask"):
                continue  # tensors only: Python API
            seen.setdefault(name, c)
    return seen


def _add_control_flags(p: argparse.ArgumentParser):
    g = p.add_argument_group("method controls (see `brushwork methods` for which method has which)")
    for name, c in sorted(_all_controls().items()):
        if name == "masks":
            g.add_argument("--mask", dest="ctl_masks", action="append", metavar="PATH",
                           help="mask image for the corresponding -s style (repeat per style)")
            continue
        flag = "--" + name.replace("_", "-")
        kw = dict(dest=f"ctl_{name}", default=None, help=c.help)
        if c.kind == "bool":
            kw.update(metavar="yes|no")
        elif c.choices:
            kw.update(metavar="|".join(map(str, c.choices)))
        else:
            kw.update(metavar=c.kind.replace("_list", ",...").upper())
        g.add_argument(flag, **kw)


def _collect_controls(args) -> dict:
    return {k[4:]: v for k, v in vars(args).items() if k.startswith("ctl_") and v is not None}


def _parse_weights(text: str | None, n: int):
    if text is None:
        return None
    try:
        w = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ControlError(f"--style-weights: {text!r} is not a comma-separated list of numbers") from None
    if len(w) != n:
        raise ControlError(f"--style-weights has {len(w)} value(s) for {n} style image(s)")
    return w


# ----------------------------------------------------------------------------- commands
def cmd_stylize(args) -> int:
    from .api import get_stylizer
    from .image import check_output_path, load_image, resize_long_side, save_image
    t0 = time.perf_counter()
    out_path = check_output_path(args.output)
    from .methods import get_method
    if not args.style and getattr(get_method(args.method), "needs_style", True):
        raise ControlError("give at least one style image with -s STYLE")
    args.style = args.style or []
    weights = _parse_weights(args.style_weights, len(args.style))
    content = resize_long_side(load_image(args.content, max_pixels=args.max_pixels), args.size)
    styles = [load_image(s, max_pixels=args.max_pixels) for s in args.style]
    controls = _collect_controls(args)
    options = {"weights": args.weights} if getattr(args, "weights", None) else {}
    if getattr(args, "encoder", None):
        options["encoder"] = args.encoder
    stylizer = get_stylizer(args.method, args.device, **options)
    out = _with_progress(args, "step", lambda bar: stylizer.stylize(
        content, styles, style_weights=weights, controls=controls, seed=args.seed, callback=bar))
    save_image(out, out_path)
    h, w = out.shape[-2:]
    if not args.quiet:
        print(f"wrote {out_path} ({w}x{h}, {args.method}) in {time.perf_counter() - t0:.1f} s")
    return 0


def cmd_methods(args) -> int:
    from .methods import METHODS
    for name, cls in METHODS.items():
        print(f"{name}: {cls.summary}")
        if args.verbose:
            for cname, c in cls.controls.items():
                if c.kind == "images" and cname not in ("masks", "stroke_mask"):
                    continue
                flag = "--mask" if cname == "masks" else "--" + cname.replace("_", "-")
                print(f"    {flag:24s} {c.help} [default: {c.default}]")
        else:
            flags = ["--mask" if n == "masks" else "--" + n.replace("_", "-")
                     for n, c in cls.controls.items()
                     if c.kind != "images" or n in ("masks", "stroke_mask")]
            print("    controls: " + " ".join(flags))
    return 0


def cmd_demo(args) -> int:
    from .api import get_stylizer
    from .demo import demo_content, swirl_painting
    from .image import check_output_path, resize_long_side, save_image, to_tensor
    t0 = time.perf_counter()
    out_path = check_output_path(args.output)
    content = resize_long_side(to_tensor(demo_content()), args.size)
    style = to_tensor(swirl_painting())
    out = _with_progress(args, "step", lambda bar: get_stylizer("gatys", args.device).stylize(
        content, [style], seed=0, callback=bar, controls={"steps": args.steps}))
    save_image(out, out_path)
    if args.save_inputs:
        base = out_path.with_suffix("")
        save_image(content, f"{base}_content.png")
        save_image(style, f"{base}_style.png")
    h, w = out.shape[-2:]
    print(f"wrote {out_path} ({w}x{h}, gatys: scikit-image's 'chelsea' in brushwork's generated "
          f"swirl painting) in {time.perf_counter() - t0:.1f} s")
    return 0


def cmd_sheet(args) -> int:
    from .style_accuracy import run_sheet
    print(f"wrote {run_sheet(args)}")
    return 0


def cmd_style_accuracy(args) -> int:
    from .style_accuracy import run_eval
    out = _with_progress(args, "image", lambda bar: run_eval(args, bar))
    print(out["table"])
    return 0


def cmd_video(args) -> int:
    from .video import run
    out = _with_progress(args, "frame", lambda bar: run(args, _collect_controls(args), bar))
    if not args.quiet:
        print(out["message"])
    return 0


def cmd_eval_video(args) -> int:
    from .video import run_eval
    out = _with_progress(args, "frame", lambda bar: run_eval(args, bar))
    print(out["message"])
    return 0


# ----------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="brushwork", description="Neural style transfer: repaint photos in the "
                "style of paintings.")
    p.add_argument("--version", action="version", version=f"brushwork {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    s = sub.add_parser("stylize", help="stylise an image", description="Stylise CONTENT with "
                       "one or more style images.")
    s.add_argument("content", metavar="CONTENT", help="content image")
    s.add_argument("-s", "--style", action="append", metavar="STYLE",
                   help="style image (repeat for several)")
    s.add_argument("--style-weights", metavar="W1,W2,...", help="one weight per style")
    s.add_argument("-m", "--method", default="gatys", help="method (see `brushwork methods`)")
    s.add_argument("-o", "--output", required=True, help="output image (.png, .jpg, ...)")
    s.add_argument("--size", type=int, default=512, help="output long side in pixels "
                   "(0 = keep the content's size)")
    s.add_argument("--seed", type=int, default=0, help="random seed (same seed, same output)")
    s.add_argument("--device", default="cpu", help="cpu or cuda")
    s.add_argument("--max-pixels", type=float, default=None,
                   help="refuse input images with more pixels (decompression-bomb guard)")
    s.add_argument("-q", "--quiet", action="store_true", help="no progress bar or summary")
    s.add_argument("--weights", default=None, help="weight file of a trained method "
                   "(johnson, cin, asma, adain, ...; default: the shipped one)")
    s.add_argument("--encoder", choices=["vgg", "small"], default=None,
                   help="adain/wct: VGG19 (default) or the distilled small encoder")
    _add_control_flags(s)
    s.set_defaults(func=cmd_stylize)

    m = sub.add_parser("methods", help="list methods and their controls")
    m.add_argument("-v", "--verbose", action="store_true", help="describe every control")
    m.set_defaults(func=cmd_methods)

    d = sub.add_parser("demo", help="stylise a bundled photo with a bundled painting")
    d.add_argument("-o", "--output", default="brushwork_demo.png")
    d.add_argument("--size", type=int, default=384)
    d.add_argument("--steps", type=int, default=100)
    d.add_argument("--device", default="cpu")
    d.add_argument("--save-inputs", action="store_true", help="also save the content and style")
    d.add_argument("-q", "--quiet", action="store_true")
    d.set_defaults(func=cmd_demo)

    from . import video
    v = sub.add_parser("video", help="stylise a video (or a folder of frames), audio kept",
                       description="Stylise every frame of IN; --consistency flow reduces flicker.")
    video.add_arguments(v)
    _add_control_flags(v)
    v.set_defaults(func=cmd_video)

    from . import style_accuracy
    sh = sub.add_parser("sheet", help="every built-in style/artist of cin or asma on one photo")
    style_accuracy.add_sheet_arguments(sh)
    sh.set_defaults(func=cmd_sheet)
    ev = sub.add_parser("eval", help="evaluations (style-accuracy)")
    esub = ev.add_subparsers(dest="evaluation", metavar="NAME", parser_class=_Parser)
    sa = esub.add_parser("style-accuracy", help="share of results an artist classifier assigns "
                         "to the target artist")
    style_accuracy.add_eval_arguments(sa)
    sa.add_argument("-q", "--quiet", action="store_true")
    sa.set_defaults(func=cmd_style_accuracy)
    evv = esub.add_parser("video", help="warping error (flicker) of a stylised video OUT given "
                          "its input IN")
    video.add_eval_arguments(evv)
    evv.set_defaults(func=cmd_eval_video)

    try:
        from .training import TRAINERS
    except ImportError:
        TRAINERS = {}
    if TRAINERS:
        t = sub.add_parser("train", help="train a model (see `brushwork train NAME --help`)")
        tsub = t.add_subparsers(dest="trainer", metavar="NAME", parser_class=_Parser)
        for name, mod in TRAINERS.items():
            tp = tsub.add_parser(name, help=(mod.__doc__ or "").strip().splitlines()[0]
                                 if mod.__doc__ else None)
            mod.add_arguments(tp)
            tp.add_argument("-q", "--quiet", action="store_true")
            tp.set_defaults(func=lambda a, mod=mod: _run_trainer(mod, a))
    return p


def _run_trainer(mod, args) -> int:
    _with_progress(args, "step", lambda bar: mod.run(args, bar))
    return 0


def main(argv=None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # usage errors (one line, code 2), --help and --version (code 0)
        return int(e.code or 0)
    if not getattr(args, "command", None) or not hasattr(args, "func"):
        parser.print_help()
        return EXIT_USAGE
    if getattr(args, "size", None) == 0:
        args.size = None
    if getattr(args, "max_pixels", None) is not None:
        args.max_pixels = int(args.max_pixels)
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
        return 1
    except KeyboardInterrupt:
        print("brushwork: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into e.g. `head`: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
