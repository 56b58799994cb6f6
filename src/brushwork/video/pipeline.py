"""Stylise a whole video: frames in, a method (with flow consistency) in between, frames out.

:func:`stylize_video` is the Python entry point; :func:`run` and :func:`run_eval` run the
``brushwork video`` and ``brushwork eval video`` commands from parsed arguments (they return a
summary and never print).
"""
from __future__ import annotations

import contextlib
import queue
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import torch

from ..core import validate
from ..core.image import load_image, resize
from ..core.protocol import Clock, Progress, emit
from ..errors import BrushworkError
from .io import (FrameSource, VideoError, check_output, frame_files, open_sink, output_kind,
                 probe, resolve_codec)
from .temporal import StageTimes, TemporalStylizer, warping_error


_END = object()


def _timed(frames: Iterable, times: StageTimes | None, stage: str) -> Iterator:
    """``frames``, with the time each one takes to produce added to ``times[stage]``."""
    it = iter(frames)
    while True:
        w, c = time.perf_counter(), time.thread_time()
        f = next(it, _END)
        if times is not None:
            times.add(stage, time.perf_counter() - w, time.thread_time() - c)
        if f is _END:
            return
        yield f


def prefetch(frames: Iterable, depth: int = 2, times: StageTimes | None = None) -> Iterator:
    """``frames`` decoded in a thread beside the model, ``depth`` frames ahead; an error in the
    decoder is raised here, in order. ``times``: decoding time goes to its ``"decode"``."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce():
        try:
            for f in _timed(frames, times, "decode"):
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

    def __init__(self, sink, depth: int = 2, times: StageTimes | None = None):
        self.sink = sink
        self.times = times
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
                    if self.times is None:
                        self.sink.write(frame)
                    else:
                        with self.times("encode"):
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
                  callback: Callable[[Progress], None] | None = None,
                  times: StageTimes | None = None) -> Path:
    """Stylise every frame of ``src`` with ``stylizer`` and write ``dst`` (file or folder).

    ``consistency`` is "none" (each frame on its own) or "flow" (see
    :class:`brushwork.temporal.TemporalStylizer`). The same ``seed`` is used for every frame.
    Inputs are checked and the first frame decoded before anything is written; on any error the
    partial output is removed. ``callback`` gets one Progress event per frame (``method="video"``,
    ``kind="step"``, ``step`` = frames done, ``total`` = expected count, 0 if unknown) and a
    ``kind="done"`` event at the end. ``times``: a :class:`~brushwork.video.temporal.StageTimes`
    that gets the time of each stage (decode, model, flow, masks, warp_blend, encode) and the
    frame count.

    Over the clip, the style images' encoder features are computed once (see
    :func:`reuse_style_features`), and OpenCV runs single-threaded so that the flow, found in a
    thread beside the model, does not fight the model's threads for the cores.
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
        times = times if times is not None else StageTimes()
        wrapped = TemporalStylizer(stylizer, consistency, times=times,
                                   **dict(temporal_options or {}))
        clock = Clock()
        total = source.info.n_frames
        name = getattr(stylizer, "name", type(stylizer).__name__)
        # decoding and encoding run in threads beside the model
        with open_sink(dst, source, codec=codec, crf=crf, keep_audio=keep_audio) as sink, \
                reuse_style_features(stylizer), _single_threaded_opencv(consistency == "flow"):
            writer = BackgroundWriter(sink, times=times)
            try:
                for i, frame in enumerate(prefetch(source, times=times)):
                    with validate.memory_guard(lambda: f"stylising {w}x{h} video frames with "
                                                       f"{name}"):
                        out = wrapped.stylize(frame, styles, style_weights=style_weights,
                                              controls=controls, seed=seed)
                    if tuple(out.shape[-2:]) != tuple(frame.shape[-2:]):
                        out = resize(out, tuple(frame.shape[-2:]))
                    writer.write(out)
                    times.frames = i + 1
                    emit(callback, Progress("video", "step", step=i + 1,
                                            total=max(total, i + 1),
                                            size=tuple(frame.shape[-2:]), elapsed=clock(),
                                            message=f"frame {i + 1}"))
            finally:
                writer.close()
                wrapped.close()
        emit(callback, Progress("video", "done", step=sink.n, total=sink.n,
                                size=source.out_hw, elapsed=clock()))
    finally:
        source.close()
    return Path(dst)


@contextlib.contextmanager
def _single_threaded_opencv(active: bool = True):
    if not active:  # OpenCV is not even imported without the flow
        yield
        return
    try:
        import cv2
    except ImportError:  # pragma: no cover - a declared dependency
        yield
        return
    n = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        yield
    finally:
        cv2.setNumThreads(n)


@contextlib.contextmanager
def reuse_style_features(stylizer):
    """While the block runs, ``stylizer`` (a feed-forward method) encodes each style image
    once instead of once per frame.

    Applies to :class:`~brushwork.methods.feedforward.FeedForward` methods that keep the
    skeleton's own ``style_features`` (the encoder at the pass's layers, nothing else read).
    The features are kept by the exact style tensor it is given (after the method's own
    colour preservation and style scaling) and the pass's layers, so a style that changes
    from frame to frame (colour preservation that matches the style to each content frame)
    is encoded afresh: the results are those of encoding every frame. Any other stylizer is
    left as it is."""
    from ..methods.feedforward import FeedForward
    base = FeedForward.style_features
    if (not isinstance(stylizer, FeedForward)
            or getattr(type(stylizer), "style_features", None) is not base
            or "style_features" in vars(stylizer)):
        yield
        return
    kept: list = []
    lock = threading.Lock()

    def style_features(style, p, c):
        with lock:
            for s, layers, feats in kept:
                if layers == tuple(p.layers) and s.shape == style.shape \
                        and s.dtype == style.dtype and s.device == style.device \
                        and torch.equal(s, style):
                    return dict(feats)
        feats = base(stylizer, style, p, c)
        with lock:
            kept.append((style.detach().clone(), tuple(p.layers), dict(feats)))
            del kept[:-8]
        return feats

    stylizer.style_features = style_features
    try:
        yield
    finally:
        del stylizer.style_features


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
    times = StageTimes()
    out = stylize_video(args.input, args.output, stylizer, styles, consistency=args.consistency,
                        size=args.size, style_weights=weights, controls=controls, seed=args.seed,
                        codec=args.codec, crf=args.crf, fps=args.fps,
                        keep_audio=not args.no_audio, temporal_options=topts, callback=callback,
                        times=times)
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
                       f"({n / secs:.2f} frames/s)",
            "stages": times.per_frame(), "stages_table": stages_table(times)}


STAGES = ("decode", "model", "flow", "masks", "warp_blend", "encode")


def stages_table(times: StageTimes) -> str:
    """The per-stage breakdown as a small text table: milliseconds per frame, wall and CPU of
    the thread that ran the stage (decode, encode and flow/masks/warp run beside the model, so
    wall times overlap)."""
    per = times.per_frame()
    rows = [f"{'stage':<11} {'wall ms/frame':>14} {'cpu ms/frame':>13}"]
    for k in [*STAGES, *sorted(set(per) - set(STAGES))]:
        if k in per:
            rows.append(f"{k:<11} {per[k]['wall_ms']:>14.1f} {per[k]['cpu_ms']:>13.1f}")
    return "\n".join(rows)


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
