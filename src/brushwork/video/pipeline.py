"""Stylise a whole video: frames in, a method (with flow consistency) in between, frames out.

:func:`stylize_video` is the Python entry point; :func:`run` and :func:`run_eval` run the
``brushwork video`` and ``brushwork eval video`` commands from parsed arguments (they return a
summary and never print).
"""
from __future__ import annotations

import queue
import threading
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import torch

from ..core import validate
from ..core.image import load_image, resize
from ..core.protocol import Clock, Progress, emit
from ..errors import BrushworkError
from .io import (FrameSource, VideoError, check_output, frame_files, open_sink, output_kind,
                 probe, resolve_codec)
from .temporal import TemporalStylizer, warping_error


_END = object()


def prefetch(frames: Iterable, depth: int = 2) -> Iterator:
    """``frames`` decoded in a thread beside the model, ``depth`` frames ahead; an error in the
    decoder is raised here, in order."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce():
        try:
            for f in frames:
                while not stop.is_set():
                    try:
                        q.put((f, None), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put((_END, None))
        except BaseException as e:  # handed to the consumer
            q.put((_END, e))

    th = threading.Thread(target=produce, name="brushwork-decode", daemon=True)
    th.start()
    try:
        while True:
            f, err = q.get()
            if f is _END:
                if err is not None:
                    raise err
                return
            yield f
    finally:
        stop.set()
        th.join()


class BackgroundWriter:
    """Encodes frames into ``sink`` in a thread beside the model, at most ``depth`` frames
    behind; :meth:`close` waits for the last one and raises the encoder's error, if any."""

    def __init__(self, sink, depth: int = 2):
        self.sink = sink
        self.q: queue.Queue = queue.Queue(maxsize=depth)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="brushwork-encode", daemon=True)
        self.thread.start()

    def _run(self):
        while True:
            frame = self.q.get()
            if frame is _END:
                return
            if self.error is None:
                try:
                    self.sink.write(frame)
                except BaseException as e:
                    self.error = e

    def write(self, frame) -> None:
        if self.error is not None:
            raise self.error
        self.q.put(frame)

    def close(self) -> None:
        self.q.put(_END)
        self.thread.join()
        if self.error is not None:
            raise self.error


def stylize_video(src, dst, stylizer, styles: Sequence[torch.Tensor], *,
                  consistency: str = "flow", size: int | None = None,
                  style_weights: Sequence[float] | None = None,
                  controls: Mapping[str, Any] | None = None, seed: int | None = 0,
                  codec: str | None = None, crf: int = 18, fps=None, keep_audio: bool = True,
                  temporal_options: Mapping[str, Any] | None = None,
                  callback: Callable[[Progress], None] | None = None) -> Path:
    """Stylise every frame of ``src`` with ``stylizer`` and write ``dst`` (file or folder).

    ``consistency`` is "none" (each frame on its own) or "flow" (see
    :class:`brushwork.temporal.TemporalStylizer`). The same ``seed`` is used for every frame.
    Inputs are checked and the first frame decoded before anything is written; on any error the
    partial output is removed. ``callback`` gets one Progress event per frame (``method="video"``,
    ``kind="step"``, ``step`` = frames done, ``total`` = expected count, 0 if unknown) and a
    ``kind="done"`` event at the end.
    """
    size = validate.check_size(size)
    seed = validate.check_seed(seed)
    kind = output_kind(dst)
    check_output(dst, inputs=[src])
    if kind == "video":
        resolve_codec(dst, codec)
    source = FrameSource(src, size=size, even=(kind == "video"), fps=fps)
    try:
        h, w = source.out_hw
        validate.check_frame_size((h, w), f"{src}: the frames", "use a larger --size")
        wrapped = TemporalStylizer(stylizer, consistency, **dict(temporal_options or {}))
        clock = Clock()
        total = source.info.n_frames
        name = getattr(stylizer, "name", type(stylizer).__name__)
        # decoding and encoding run in threads beside the model
        with open_sink(dst, source, codec=codec, crf=crf, keep_audio=keep_audio) as sink:
            writer = BackgroundWriter(sink)
            try:
                for i, frame in enumerate(prefetch(source)):
                    with validate.memory_guard(lambda: f"stylising {w}x{h} video frames with "
                                                       f"{name}"):
                        out = wrapped.stylize(frame, styles, style_weights=style_weights,
                                              controls=controls, seed=seed)
                    if tuple(out.shape[-2:]) != tuple(frame.shape[-2:]):
                        out = resize(out, tuple(frame.shape[-2:]))
                    writer.write(out)
                    emit(callback, Progress("video", "step", step=i + 1,
                                            total=max(total, i + 1),
                                            size=tuple(frame.shape[-2:]), elapsed=clock(),
                                            message=f"frame {i + 1}"))
            finally:
                writer.close()
        emit(callback, Progress("video", "done", step=sink.n, total=sink.n,
                                size=source.out_hw, elapsed=clock()))
    finally:
        source.close()
    return Path(dst)


CONSISTENCY_CHOICES = ("none", "flow")


def run(args, controls: Mapping[str, Any], callback=None) -> dict:
    """Run ``brushwork video`` from parsed arguments; returns a summary for the CLI to print."""
    from ..api import get_stylizer
    from ..methods import get_method

    clock = Clock()
    if not args.style and get_method(args.method).capabilities.takes_style_images:
        raise BrushworkError("give at least one style image with -s STYLE")
    styles = [load_image(s) for s in (args.style or [])]
    weights = None
    if args.style_weights:
        try:
            weights = [float(x) for x in args.style_weights.split(",") if x.strip()]
        except ValueError:
            raise BrushworkError(f"--style-weights: {args.style_weights!r} is not a "
                                 f"comma-separated list of numbers") from None
    validate.check_size(args.size)  # before any model loads
    check_output(args.output, inputs=[args.input, *(args.style or [])])
    if args.crf < 0 or args.crf > 51:
        raise VideoError(f"--crf must be in 0..51, got {args.crf}")
    if args.fps is not None and not (0 < args.fps <= 1000):
        raise VideoError(f"--fps must be in (0, 1000], got {args.fps}")
    # Check input and output before loading a model.
    if output_kind(args.output) == "video":
        resolve_codec(args.output, args.codec)
    info = probe(args.input)
    options = {"weights": args.weights} if args.weights else {}
    if args.encoder:
        options["encoder"] = args.encoder
    stylizer = get_stylizer(args.method, args.device, **options)
    topts = {"flow": args.flow}
    if args.flow_blend is not None:
        topts["blend"] = args.flow_blend
    if args.flow_resample is not None:
        topts["resample"] = args.flow_resample
    if args.flow_detail is not None:
        topts["detail_sigma"] = args.flow_detail or None
    if args.temporal_weight is not None:
        topts["temporal_weight"] = args.temporal_weight
    out = stylize_video(args.input, args.output, stylizer, styles, consistency=args.consistency,
                        size=args.size, style_weights=weights, controls=controls, seed=args.seed,
                        codec=args.codec, crf=args.crf, fps=args.fps,
                        keep_audio=not args.no_audio, temporal_options=topts, callback=callback)
    n = 0
    if Path(out).is_dir():
        n = len(frame_files(Path(out)))
    else:
        with FrameSource(out) as o:
            n = o.info.n_frames
    secs = clock()
    audio = "no audio" if args.no_audio or not info.has_audio or Path(out).is_dir() \
        else f"audio {info.audio_codec} kept"
    return {"output": out, "frames": n, "seconds": secs, "fps": float(info.fps),
            "message": f"wrote {out} ({n} frames at {float(info.fps):.3g} fps, {audio}, "
                       f"{args.method}, consistency {args.consistency}) in {secs:.1f} s "
                       f"({n / secs:.2f} frames/s)"}


def run_eval(args, callback=None) -> dict:
    """Warping error of OUT given IN (see brushwork.temporal); returns a summary dict."""
    src, dst = FrameSource(args.input), FrameSource(args.output)
    try:
        r = warping_error(src, dst, flow=args.flow, callback=callback,
                          total=max(src.info.n_frames, dst.info.n_frames))
    finally:
        src.close()
        dst.close()
    r["message"] = (f"warping error {r['warping_error']:.6f} over {r['pairs']} frame pairs "
                    f"({args.output} given {args.input}; mean squared RGB difference in [0, 1] "
                    f"units, non-occluded pixels; the input's own: "
                    f"{r['input_warping_error']:.6f})")
    return r
