"""The studio's job queue: worker threads take stored jobs in order and run each through
:func:`brushwork.api.stylize_tensors` (video jobs: :func:`brushwork.video.pipeline.stylize_video`
with a stylizer whose every frame goes through ``stylize_tensors``).

A job's live state (progress, ETA, the latest preview) is kept in memory while the server
runs; its state changes, result and recipe are written to the :class:`~.db.JobStore` and the
job's folder (results with :func:`brushwork.core.image.save_image`, atomically). Cancelling a
running job raises :class:`Cancelled` from its progress callback at the next event.

The running jobs share the queue's torch threads: each worker sets its own intra-op thread
count (per thread in PyTorch) to the budget divided by the number of running jobs when its job
starts and again at each of its progress events, so a job alone uses every core and two jobs
split them.
"""
from __future__ import annotations

import io
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

from .. import api
from ..core.files import atomic_write
from ..core.image import load_image, save_image, to_pil
from ..core.memory import give_back_freed_memory
from ..core.recipe import dumps, make_recipe, weights_sha256
from ..core.weights import sha256_file
from ..errors import BrushworkError
from .db import JobStore

log = logging.getLogger("brushwork.studio")

PREVIEW_SIDE = 768  # previews are at most this long (the result itself is full size)


class Cancelled(Exception):
    """Raised from a job's progress callback when the job is cancelled (or the server
    stops)."""


@dataclass
class Live:
    """What the running server knows about a job beyond its row: progress and the preview."""
    step: int = 0
    total: int = 0
    message: str = ""
    started: float | None = None
    preview: bytes | None = None
    previews: int = 0
    version: int = 0
    cancel: threading.Event = field(default_factory=threading.Event)
    finished: threading.Event = field(default_factory=threading.Event)

    def bump(self):
        self.version += 1


class Models:
    """Method instances for the workers (made once under a lock, then shared: the methods'
    ``stylize`` keeps its state per call) and the sha256 of their weight files (hashed once)."""

    def __init__(self, device: str = "cpu"):
        self.device = device
        self._lock = threading.Lock()
        self._sha: dict[int, dict[str, str]] = {}

    def get(self, method: str, options: dict | None = None):
        with self._lock:
            return api.get_stylizer(method, self.device, **(options or {}))

    def weights_sha256(self, stylizer) -> dict[str, str]:
        key = id(stylizer)
        with self._lock:
            if key not in self._sha:
                files = [p for p in getattr(stylizer, "weight_files", ()) if p]
                self._sha[key] = weights_sha256(SimpleNamespace(weight_files=files))
            return self._sha[key]


class CheckedStylizer:
    """A stylizer for the video pipeline whose every frame goes through
    :func:`brushwork.api.stylize_tensors` (the one checked path), with the job's progress
    callback and a hook that sees each stylised frame."""

    def __init__(self, stylizer, method: str, device: str, options: dict,
                 callback: Callable, on_frame: Callable):
        self.name, self.controls = stylizer.name, stylizer.controls
        self.capabilities = stylizer.capabilities
        self._method, self._device, self._options = method, device, options
        self._callback, self._on_frame = callback, on_frame

    def stylize(self, content, styles, *, style_weights=None, controls=None, seed=None,
                callback=None):
        out = api.stylize_tensors(content, list(styles or []), self._method,
                                  style_weights=style_weights, size=None, seed=seed,
                                  device=self._device, method_options=self._options,
                                  controls=controls, callback=self._callback)
        self._on_frame(out)
        return out


def png_bytes(x) -> bytes:
    im = to_pil(x)
    if max(im.size) > PREVIEW_SIDE:
        s = PREVIEW_SIDE / max(im.size)
        im = im.resize((max(1, round(im.width * s)), max(1, round(im.height * s))))
    buf = io.BytesIO()
    im.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


class JobQueue:
    """``workers`` threads running the queued jobs of ``store`` whose files are in
    ``jobs_dir / id``."""

    def __init__(self, store: JobStore, jobs_dir: Path, *, workers: int = 1,
                 threads: int | None = None, device: str = "cpu",
                 max_pixels: int | None = None):
        from .server import cpu_cores
        self.store = store
        self.jobs_dir = Path(jobs_dir)
        self.workers = workers
        self.threads = max(1, threads or cpu_cores())
        self.running = 0
        self.max_pixels = max_pixels
        self.models = Models(device)
        self._q: queue.Queue = queue.Queue()
        self._live: dict[str, Live] = {}
        self._live_lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self.stopping = False

    # ------------------------------------------------------------------ control
    def start(self) -> None:
        for i in range(self.workers):
            t = threading.Thread(target=self._work, name=f"studio-worker-{i + 1}", daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop taking jobs, cancel the running ones (they become ``interrupted``), wait for
        the workers (at most ``timeout`` s) and mark what is left ``interrupted``."""
        self.stopping = True
        with self._live_lock:
            for live in self._live.values():
                live.cancel.set()
        for _ in self._threads:
            self._q.put(None)
        end = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, end - time.monotonic()))
        self.store.mark_interrupted()

    def put(self, job_id: str) -> None:
        with self._live_lock:
            self._live[job_id] = Live()
        self._q.put(job_id)

    def live(self, job_id: str) -> Live | None:
        with self._live_lock:
            return self._live.get(job_id)

    def cancel(self, job_id: str, wait: float = 10.0) -> str | None:
        """Cancel a queued or running job; returns its state afterwards (None: no such job).
        A running job stops at its next progress event; this waits up to ``wait`` s for it."""
        row = self.store.get(job_id)
        if row is None:
            return None
        live = self.live(job_id)
        if row["state"] == "queued":
            if self.store.transition(job_id, ("queued",), "cancelled", finished=time.time()):
                if live is not None:
                    live.bump()
                return "cancelled"
            row = self.store.get(job_id)
        if row["state"] == "running" and live is not None:
            live.cancel.set()
            live.finished.wait(wait)
        return self.store.get(job_id)["state"]

    # ------------------------------------------------------------------ workers
    def _work(self) -> None:
        while True:
            job_id = self._q.get()
            if job_id is None or self.stopping:
                return
            if not self.store.transition(job_id, ("queued",), "running", started=time.time(),
                                         runs="+1"):
                continue  # cancelled while queued
            live = self.live(job_id) or Live()
            with self._live_lock:
                self._live[job_id] = live
            live.started = time.time()
            live.bump()
            with self._live_lock:
                self.running += 1
            try:
                self.share_threads()
                self._run(job_id, live)
            finally:
                with self._live_lock:
                    self.running -= 1
                    idle = self.running == 0
                if idle:  # what the jobs kept for reuse goes back to the system
                    give_back_freed_memory()
                row = self.store.get(job_id)
                if row and row["state"] == "done" and row["kind"] == "image":
                    live.preview = None  # the result file is its preview from now on
                live.bump()
                live.finished.set()

    def share_threads(self) -> int:
        """Set the calling worker's torch threads to its share of the budget; returns it."""
        import torch
        n = max(1, self.threads // max(1, self.running))
        if torch.get_num_threads() != n:
            torch.set_num_threads(n)
        return n

    def _run(self, job_id: str, live: Live) -> None:
        row = self.store.get(job_id)
        try:
            result, recipe = self._execute(row, live)
        except Cancelled:
            state = "interrupted" if self.stopping else "cancelled"
            self.store.transition(job_id, ("running",), state, finished=time.time(),
                                  step=live.step, total=live.total)
        except BrushworkError as e:
            self.store.transition(job_id, ("running",), "failed", finished=time.time(),
                                  error=str(e), step=live.step, total=live.total)
        except Exception as e:  # a bug: the job fails with the reason, the server goes on
            log.exception("job %s failed", job_id)
            self.store.transition(job_id, ("running",), "failed", finished=time.time(),
                                  error=f"internal error: {type(e).__name__}: {e}",
                                  step=live.step, total=live.total)
        else:
            self.store.transition(job_id, ("running",), "done", finished=time.time(),
                                  result=result, recipe=recipe, error=None,
                                  step=max(live.step, live.total), total=live.total)

    def _execute(self, row: dict[str, Any], live: Live) -> tuple[str, dict]:
        req = row["request"]
        folder = self.jobs_dir / row["id"]
        method, options = row["method"], dict(req["options"])
        controls = dict(req["controls"])
        if req["masks"]:
            controls["masks"] = [str(folder / m) for m in req["masks"]]
        for name, f in req["images"].items():
            controls[name] = str(folder / f)
        video = row["kind"] == "video"

        def progress(ev):
            if live.cancel.is_set():
                raise Cancelled()
            self.share_threads()
            if video and ev.method != "video":
                return  # a frame's own events: only a chance to stop
            if ev.kind in ("step", "scale", "done", "frame"):
                live.step, live.total = ev.step, ev.total
            if ev.kind == "scale" and ev.n_scales > 1:
                live.message = f"scale {ev.scale + 1}/{ev.n_scales} ({ev.size[1]}x{ev.size[0]})"
            elif ev.message:
                live.message = ev.message
            if ev.image is not None:
                self._preview(live, ev.image)
            live.bump()

        stylizer = self.models.get(method, options)
        content_path = folder / req["content"]
        style_paths = [folder / s for s in req["styles"]]
        styles = [load_image(p, max_pixels=self.max_pixels) for p in style_paths]
        if video:
            from ..video.pipeline import stylize_video
            result = "result.mp4"
            shim = CheckedStylizer(stylizer, method, self.models.device, options, progress,
                                   lambda out: self._preview(live, out))
            # the video sink writes a temporary file and renames it when the clip is whole
            stylize_video(content_path, folder / result, shim, styles,
                          consistency=req["consistency"], size=req["size"],
                          style_weights=req["style_weights"], controls=controls,
                          seed=req["seed"], callback=progress)
        else:
            result = "result.png"
            content = load_image(content_path, max_pixels=self.max_pixels)
            out = api.stylize_tensors(content, styles, method,
                                      style_weights=req["style_weights"], size=req["size"],
                                      seed=req["seed"], device=self.models.device,
                                      method_options=options, controls=controls,
                                      callback=progress)
            if live.cancel.is_set():
                raise Cancelled()
            save_image(out, folder / result)
            self._preview(live, out)
        # image-valued controls are recorded as the names of their files, which lie beside
        # the recipe in the job's folder
        recorded = dict(req["controls"])
        if req["masks"]:
            recorded["masks"] = list(req["masks"])
        recorded.update(req["images"])
        recipe = make_recipe(method, options=options, controls=recorded, seed=req["seed"],
                             size=req["size"], style_weights=req["style_weights"],
                             weights=self.models.weights_sha256(stylizer),
                             content_sha256=sha256_file(content_path),
                             style_sha256=[sha256_file(p) for p in style_paths])
        with atomic_write(folder / "recipe.json") as f:
            f.write(dumps(recipe).encode("utf-8"))
        return result, recipe

    def _preview(self, live: Live, image) -> None:
        live.preview = png_bytes(image)
        live.previews += 1
        live.bump()
