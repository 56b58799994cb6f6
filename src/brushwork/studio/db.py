"""The studio's job table: one embedded SQLite database (WAL journal) under the data folder.

A row holds a job's request (method, options, controls, seed, size, the names of its stored
files), its state, its recipe once done and its error once failed. Finished rows are never
changed by a restart; rows that were queued or running when the server stopped are marked
``interrupted`` by :meth:`JobStore.mark_interrupted` when it starts again.
"""
from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

STATES = ("queued", "running", "done", "failed", "cancelled", "interrupted")
ACTIVE = ("queued", "running")
FINISHED = ("done", "failed", "cancelled", "interrupted")
RERUNNABLE = ("interrupted", "cancelled", "failed")

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,
    id       TEXT UNIQUE NOT NULL,
    client   TEXT NOT NULL,
    kind     TEXT NOT NULL,
    state    TEXT NOT NULL,
    method   TEXT NOT NULL,
    request  TEXT NOT NULL,
    recipe   TEXT,
    error    TEXT,
    result   TEXT,
    step     INTEGER NOT NULL DEFAULT 0,
    total    INTEGER NOT NULL DEFAULT 0,
    runs     INTEGER NOT NULL DEFAULT 0,
    created  REAL NOT NULL,
    started  REAL,
    finished REAL
);
CREATE INDEX IF NOT EXISTS jobs_client_state ON jobs (client, state);
"""


class JobStore:
    """Thread-safe access to the job table (one connection, one lock; writes are few and small:
    a job's creation and each change of state)."""

    def __init__(self, path):
        self.path = Path(path)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, timeout=30,
                                   isolation_level=None)
        self._db.row_factory = sqlite3.Row
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # ------------------------------------------------------------------ reads
    def get(self, job_id: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return _row(row)

    def list(self, limit: int = 100, client: str | None = None) -> list[dict[str, Any]]:
        """The newest ``limit`` jobs first (all clients unless ``client``)."""
        q, args = "SELECT * FROM jobs", []
        if client is not None:
            q, args = q + " WHERE client = ?", [client]
        with self._lock:
            rows = self._db.execute(q + " ORDER BY seq DESC LIMIT ?", (*args, limit)).fetchall()
        return [_row(r) for r in rows]

    def count(self, states=None) -> int:
        q, args = "SELECT COUNT(*) FROM jobs", ()
        if states:
            q += f" WHERE state IN ({','.join('?' * len(states))})"
            args = tuple(states)
        with self._lock:
            return int(self._db.execute(q, args).fetchone()[0])

    def ids(self, states) -> list[str]:
        """Ids of the jobs in ``states``, oldest first."""
        with self._lock:
            rows = self._db.execute(f"SELECT id FROM jobs WHERE state IN "
                                    f"({','.join('?' * len(states))}) ORDER BY seq",
                                    tuple(states)).fetchall()
        return [r[0] for r in rows]

    # ------------------------------------------------------------------ writes
    def insert(self, job: dict[str, Any], max_active: int | None = None) -> bool:
        """Insert a new queued job; with ``max_active``, only while its client has fewer jobs
        queued or running (checked and inserted atomically). Returns whether it was inserted."""
        with self._lock:
            if max_active is not None and self.active(job["client"]) >= max_active:
                return False
            self._db.execute(
                "INSERT INTO jobs (id, client, kind, state, method, request, created) "
                "VALUES (?, ?, ?, 'queued', ?, ?, ?)",
                (job["id"], job["client"], job["kind"], job["method"],
                 json.dumps(job["request"], sort_keys=True), time.time()))
            return True

    def active(self, client: str) -> int:
        """How many of ``client``'s jobs are queued or running."""
        with self._lock:
            return int(self._db.execute(
                "SELECT COUNT(*) FROM jobs WHERE client = ? AND state IN ('queued', 'running')",
                (client,)).fetchone()[0])

    def transition(self, job_id: str, from_states, to_state: str, **fields) -> bool:
        """Set ``state = to_state`` (and ``fields``) if the job is in one of ``from_states``;
        returns whether it was. ``runs`` given as "+1" increments the run counter."""
        assert to_state in STATES
        sets, args = ["state = ?"], [to_state]
        for k, v in fields.items():
            if k == "runs" and v == "+1":
                sets.append("runs = runs + 1")
                continue
            sets.append(f"{k} = ?")
            args.append(json.dumps(v, sort_keys=True) if k == "recipe" and v is not None else v)
        with self._lock:
            cur = self._db.execute(
                f"UPDATE jobs SET {', '.join(sets)} WHERE id = ? AND state IN "
                f"({','.join('?' * len(from_states))})", (*args, job_id, *from_states))
            return cur.rowcount == 1

    def requeue(self, job_id: str, max_active: int | None = None) -> str:
        """Queue a finished (not done) job again. Returns "ok", "busy" (its client has
        ``max_active`` jobs queued or running), "state" (not rerunnable) or "missing"."""
        with self._lock:
            row = self.get(job_id)
            if row is None:
                return "missing"
            if row["state"] not in RERUNNABLE:
                return "state"
            if max_active is not None and self.active(row["client"]) >= max_active:
                return "busy"
            self.transition(job_id, RERUNNABLE, "queued", error=None, step=0, total=0,
                            started=None, finished=None, recipe=None, result=None)
            return "ok"

    def mark_interrupted(self) -> list[str]:
        """Jobs left queued or running by a server that stopped become ``interrupted``;
        returns their ids."""
        with self._lock:
            ids = self.ids(ACTIVE)
            self._db.execute("UPDATE jobs SET state = 'interrupted', finished = ? "
                             "WHERE state IN ('queued', 'running')", (time.time(),))
            return ids


def _row(row) -> dict[str, Any] | None:
    if row is None:
        return None
    d = dict(row)
    d["request"] = json.loads(d["request"])
    d["recipe"] = json.loads(d["recipe"]) if d["recipe"] else None
    return d
