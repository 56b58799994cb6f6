"""The batch manifest: ``manifest.jsonl`` in the output folder, one JSON record per finished
file (done or failed), appended and synced as each file finishes.

A record: ``{"name", "input", "input_sha256", "output", "output_sha256", "recipe", "status":
"done" | "failed", "error", "seconds", "stylize_seconds"}`` (``output`` relative to the
folder; ``seconds``: the file's whole time, ``stylize_seconds``: the method's share). A process killed
while appending leaves at most one torn last line, which readers skip. The last record of a
name wins.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from ..core.weights import sha256_file

FILE = "manifest.jsonl"


def read(path) -> dict[str, dict]:
    """name -> its last complete record (torn or foreign lines skipped)."""
    records: dict[str, dict] = {}
    try:
        lines = Path(path).read_text(encoding="utf-8", errors="replace").splitlines()
    except FileNotFoundError:
        return records
    for line in lines:
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict) and isinstance(rec.get("name"), str):
            records[rec["name"]] = rec
    return records


def append(path, record: dict) -> None:
    """Append one record as a line and sync it, so a crash after this call keeps it."""
    line = json.dumps(record, sort_keys=True) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        # a torn line from a killed writer must not swallow this record: start on a new line
        if os.fstat(fd).st_size and not _ends_with_newline(path):
            line = "\n" + line
        os.write(fd, line.encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def _ends_with_newline(path) -> bool:
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"


def same_recipe(a: dict, b: dict) -> bool:
    """Whether two recipes make the same result from the same input (the content's hash is
    compared separately)."""
    def strip(r):
        return {k: v for k, v in (r or {}).items() if k != "content_sha256"}
    return strip(a) == strip(b)


def is_done(record: dict | None, *, input_sha256: str, recipe: dict, output: Path) -> bool:
    """Whether ``record`` shows this input already stylised with this recipe and its output is
    still the file the record describes."""
    if not record or record.get("status") != "done":
        return False
    if record.get("input_sha256") != input_sha256 or not same_recipe(record.get("recipe"), recipe):
        return False
    return output.is_file() and sha256_file(output) == record.get("output_sha256")
