"""Stylise a batch in one process: the method, its weights and the styles load once; each file
is hashed, stylised, written atomically and recorded in the manifest as it finishes.

``--resume`` skips a file whose manifest record matches its input hash, the recipe and the
output file on disk; partial files a killed run left (hidden temp files beside the outputs) are
removed first. A file that fails (unreadable, too small, ...) is recorded with its reason and
the batch goes on.
"""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..core.files import discard
from ..core.image import check_output_path, load_image_info, save_image
from ..core.protocol import Progress, emit
from ..core.recipe import make_recipe, weights_sha256
from ..core.weights import sha256_file
from ..errors import BrushworkError
from . import manifest
from .plan import Item


@dataclass(frozen=True)
class Config:
    """Everything a worker needs to stylise any file of the batch (plain values, so it can be
    sent to other processes or machines)."""
    method: str
    styles: tuple[str, ...] = ()
    style_weights: tuple[float, ...] | None = None
    size: int | None = 512
    seed: int | None = 0
    device: str = "cpu"
    options: dict = field(default_factory=dict)
    controls: dict = field(default_factory=dict)
    max_pixels: int | None = None
    bit_depth: int = 8
    stylize_options: dict = field(default_factory=dict)  # further stylize_tensors arguments


@dataclass
class Summary:
    done: int = 0
    skipped: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (name, reason)
    seconds: float = 0.0


class Runner:
    """Loads the method and the styles once (errors here stop the batch before any file), then
    :meth:`process` stylises one file at a time."""

    def __init__(self, config: Config):
        from ..api import get_stylizer

        self.config = config
        self.stylizer = get_stylizer(config.method, config.device, **config.options)
        self.styles = [load_image_info(s, max_pixels=config.max_pixels)[0]
                       for s in config.styles]
        self.recipe = make_recipe(
            config.method, options=config.options, controls=config.controls, seed=config.seed,
            size=config.size, style_weights=config.style_weights,
            weights=weights_sha256(self.stylizer),
            style_sha256=[sha256_file(s) for s in config.styles])

    def recipe_for(self, input_sha256: str | None) -> dict:
        return {**self.recipe, "content_sha256": input_sha256}

    def read(self, item: Item, input_sha256: str | None = None) -> dict:
        """Stage 1: hash and decode ``item``. Returns ``{"record", "content", "info"}``;
        ``content`` is None when the file cannot be used (the record says why)."""
        rec = {"name": item.name, "input": str(item.input)}
        try:
            if input_sha256 is None:
                input_sha256 = _sha256_input(item.input)
            rec.update(input_sha256=input_sha256, recipe=self.recipe_for(input_sha256))
            content, info = load_image_info(item.input, max_pixels=self.config.max_pixels)
            item.output.parent.mkdir(parents=True, exist_ok=True)
            check_output_path(item.output, info=info, bit_depth=self.config.bit_depth)
            return {"record": rec, "content": content, "info": info}
        except BrushworkError as e:
            return {"record": {**rec, "status": "failed", "error": str(e)}, "content": None,
                    "info": None}

    def compute(self, content, callback=None):
        """Stage 2: the stylisation itself."""
        from ..api import stylize_tensors

        c = self.config
        return stylize_tensors(content, self.styles, c.method,
                               style_weights=None if c.style_weights is None
                               else list(c.style_weights),
                               size=c.size, seed=c.seed, device=c.device, method_options=c.options,
                               controls=c.controls, callback=callback, **c.stylize_options)

    def write(self, item: Item, out_dir: Path, rec: dict, out, info) -> dict:
        """Stage 3: write the output atomically; returns the finished record."""
        try:
            save_image(out, item.output, info=info, bit_depth=self.config.bit_depth)
            return {**rec, "status": "done", "output": item.output.relative_to(out_dir).as_posix(),
                    "output_sha256": sha256_file(item.output)}
        except BrushworkError as e:
            return {**rec, "status": "failed", "error": str(e)}

    def process(self, item: Item, out_dir: Path, input_sha256: str | None = None,
                callback: Callable[[Progress], None] | None = None) -> dict:
        """Read, stylise and write ``item`` in turn; returns its manifest record (done or
        failed: a problem with this one file never raises)."""
        t0 = time.perf_counter()
        loaded = self.read(item, input_sha256)
        rec = loaded["record"]
        if loaded["content"] is not None:
            try:
                t1 = time.perf_counter()
                out = self.compute(loaded["content"], callback)
                rec["stylize_seconds"] = round(time.perf_counter() - t1, 4)
                rec = self.write(item, out_dir, rec, out, loaded["info"])
            except BrushworkError as e:
                rec = {**rec, "status": "failed", "error": str(e)}
        rec["seconds"] = round(time.perf_counter() - t0, 4)
        return rec


def _sha256_input(path: Path) -> str:
    try:
        return sha256_file(path)
    except FileNotFoundError:
        raise BrushworkError(f"{path}: no such file") from None
    except OSError as e:
        raise BrushworkError(f"{path}: cannot read ({e.strerror or e})") from None


def remove_partials(items: list[Item]) -> int:
    """Delete the hidden temp files a killed run left beside the outputs; returns how many."""
    n = 0
    for folder in {it.output.parent for it in items}:
        if folder.is_dir():
            for tmp in folder.glob(".*.tmp"):
                discard(tmp)
                n += 1
    return n


def pending(items: list[Item], out_dir: Path, recipe_for, *, resume: bool):
    """(items to run with their input hashes, number skipped): with ``resume``, items whose
    manifest record is complete and still matches are skipped."""
    records = manifest.read(out_dir / manifest.FILE) if resume else {}
    todo, skipped = [], 0
    for it in items:
        sha = None
        if resume and it.name in records:
            try:
                sha = _sha256_input(it.input)
            except BrushworkError:
                sha = None
            if sha and manifest.is_done(records[it.name], input_sha256=sha,
                                        recipe=recipe_for(sha), output=it.output):
                skipped += 1
                continue
        todo.append((it, sha))
    return todo, skipped


def run(items: list[Item], out_dir, config: Config, *, resume: bool = False,
        callback: Callable[[Progress], None] | None = None, runner: Runner | None = None
        ) -> Summary:
    """Stylise ``items`` into ``out_dir`` in this process. ``callback`` receives a
    ``Progress(kind="file")`` event per file (``message``: "NAME: done|skipped|failed: reason")
    and the method's own events while a file runs."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    runner = runner or Runner(config)
    remove_partials(items)
    todo, skipped = pending(items, out_dir, runner.recipe_for, resume=resume)
    summary = Summary(skipped=skipped)
    total = len(items)
    emit(callback, Progress(config.method, "file", skipped, total,
                            message=f"{skipped} already done" if skipped else ""))

    def finish(item, rec, out, info, started):
        """Writer thread: the output, the manifest line and the event, in file order."""
        if out is not None:
            rec = runner.write(item, out_dir, rec, out, info)
        rec["seconds"] = round(time.perf_counter() - started, 4)
        manifest.append(out_dir / manifest.FILE, rec)
        if rec["status"] == "done":
            summary.done += 1
            msg = f"{item.name}: done"
        else:
            summary.failed.append((item.name, rec["error"]))
            msg = f"{item.name}: failed: {rec['error']}"
        n = summary.done + len(summary.failed)
        emit(callback, Progress(config.method, "file", skipped + n, total, message=msg,
                                elapsed=time.perf_counter() - t0))

    # decoding the next file and encoding the last one run in threads beside the model
    with ThreadPoolExecutor(1) as reader, ThreadPoolExecutor(1) as writer:
        nxt = reader.submit(runner.read, *todo[0]) if todo else None
        prev = None  # at most one output waits for the writer, so memory stays bounded
        for i, (item, _) in enumerate(todo):
            started = time.perf_counter()
            loaded = nxt.result()
            if i + 1 < len(todo):
                nxt = reader.submit(runner.read, *todo[i + 1])
            rec, out = loaded["record"], None
            if loaded["content"] is not None:
                try:
                    t1 = time.perf_counter()
                    out = runner.compute(loaded["content"], callback)
                    rec = {**rec, "stylize_seconds": round(time.perf_counter() - t1, 4)}
                except BrushworkError as e:
                    rec = {**rec, "status": "failed", "error": str(e)}
            if prev is not None:
                prev.result()  # a write that raised (not a BrushworkError) surfaces here
            prev = writer.submit(finish, item, rec, out, loaded["info"], started)
            loaded = out = None
        if prev is not None:
            prev.result()
    summary.seconds = time.perf_counter() - t0
    return summary
