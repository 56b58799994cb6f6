"""What the commands share: one-line argparse errors, the progress bar, the flags of the
stylising commands (stylize, video) and of the method controls."""
from __future__ import annotations

import argparse
import sys
import time

from ..core import validate
from ..errors import ControlError

EXIT_USAGE = 2


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage dump), exit code 2."""

    def error(self, message):
        self.exit(EXIT_USAGE, f"brushwork: error: {message}\n")


# ----------------------------------------------------------------------------- progress
class ProgressBar:
    """Draws Progress events as a tqdm bar on a terminal; elsewhere (a log file, a pipe) writes
    a plain line every ``every`` seconds and at the last step, so long jobs under nohup show
    where they are."""

    def __init__(self, enabled: bool, unit: str = "step", tty: bool = True,
                 every: float = 30.0, position: int = 0):
        self.enabled = enabled
        self.unit = unit
        self.tty = tty
        self.every = every
        self.position = position
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
                            leave=False, file=sys.stderr, position=self.position)
        if ev.total and self.bar.total != ev.total:
            self.bar.total = ev.total
        if ev.kind in ("step", "train", "frame", "file"):
            self.bar.n = ev.step
            post = {k: f"{v:.3g}" for k, v in list(ev.losses.items())[:5]}
            if ev.n_scales > 1:
                post = {"scale": f"{ev.scale + 1}/{ev.n_scales}", **post}
            self.bar.set_postfix(post, refresh=False)
            self.bar.refresh()
        elif ev.kind == "scale" and ev.size:
            self.bar.set_description(f"{ev.size[1]}x{ev.size[0]}")

    def _line(self, ev):
        if ev.kind not in ("step", "train", "frame", "file"):
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


def with_progress(args, unit: str, fn):
    """``fn(bar)`` with a progress bar (drawn on a terminal unless --quiet), closed afterwards."""
    bar = ProgressBar(enabled=not args.quiet, unit=unit, tty=sys.stderr.isatty())
    try:
        return fn(bar)
    finally:
        bar.close()


class FileProgress:
    """A batch's progress: a bar over files and, for iterative methods, one over the steps of
    the file being stylised."""

    def __init__(self, enabled: bool, tty: bool):
        self.files = ProgressBar(enabled, "file", tty)
        self.steps = ProgressBar(enabled and tty, "step", tty, position=1)

    def __call__(self, ev):
        if ev.kind == "file":
            self.steps.close()
            self.files(ev)
        elif ev.kind == "step":
            self.steps(ev)

    def close(self):
        self.steps.close()
        self.files.close()


def with_file_progress(args, total: int, fn):
    """``fn(callback)`` with a :class:`FileProgress` (unless --quiet), closed afterwards."""
    bar = FileProgress(enabled=not args.quiet and total > 0, tty=sys.stderr.isatty())
    try:
        return fn(bar)
    finally:
        bar.close()


# ----------------------------------------------------------------------------- flags
def add_method_flags(p: argparse.ArgumentParser, what: str) -> None:
    """The flags of a command that stylises with a method (``stylize``, ``video``): styles,
    method, options, size, seed, device, quiet, and every method control."""
    p.add_argument("-s", "--style", action="append", metavar="STYLE",
                   help="style image (repeat for several)")
    p.add_argument("--style-weights", metavar="W1,W2,...", help="one weight per style")
    p.add_argument("-m", "--method", default="gatys", help="method (see `brushwork methods`)")
    p.add_argument("--size", type=validate.size_arg, default=512,
                   help=f"output long side in pixels, {validate.MIN_SIDE}..{validate.MAX_SIDE} "
                        f"(0 = keep the {what}'s size)")
    p.add_argument("--seed", type=validate.seed_arg, default=0,
                   help="random seed (same seed, same output)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--weights", default=None, help="weight file of a trained method "
                   "(johnson, cin, asma, adain, ...; default: the shipped one)")
    p.add_argument("--encoder", choices=["vgg", "small"], default=None,
                   help="adain/wct: VGG19 (default) or the distilled small encoder")
    p.add_argument("--skip-weights", default=None, metavar="FILE",
                   help="mst --decoder skip: the avatar weight file whose decoder renders "
                        "(default: the shipped one)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar or summary")
    add_control_flags(p)


METHOD_OPTIONS = ("weights", "encoder", "skip_weights")


def method_options(args) -> dict:
    """The constructor options (``--weights``, ``--encoder``, ``--skip-weights``) the user
    gave."""
    return {k: v for k in METHOD_OPTIONS if (v := getattr(args, k, None)) is not None}


# ----------------------------------------------------------------------------- controls
def visible_controls(cls) -> dict:
    """A method's controls that have a CLI flag (image-valued ones other than masks are for the
    Python API only)."""
    return {n: c for n, c in cls.controls.items()
            if c.kind != "images" or n in ("masks", "stroke_mask", "content_map", "style_map")}


def control_flag(name: str) -> str:
    return "--mask" if name == "masks" else "--" + name.replace("_", "-")


def all_controls():
    """Every control of every method: name -> Control (the same name means the same thing)."""
    from ..methods import METHODS
    seen = {}
    for cls in METHODS.values():
        for name, c in visible_controls(cls).items():
            seen.setdefault(name, c)
    return seen


def add_control_flags(p: argparse.ArgumentParser):
    g = p.add_argument_group("method controls (see `brushwork methods` for which method has which)")
    for name, c in sorted(all_controls().items()):
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


def collect_controls(args) -> dict:
    return {k[4:]: v for k, v in vars(args).items() if k.startswith("ctl_") and v is not None}


def parse_style_weights(text: str | None, n: int):
    if text is None:
        return None
    try:
        w = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ControlError(f"--style-weights: {text!r} is not a comma-separated list of numbers") from None
    if len(w) != n:
        raise ControlError(f"--style-weights has {len(w)} value(s) for {n} style image(s)")
    return w


