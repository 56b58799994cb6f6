"""The studio's HTTP side: one page (``static/``) and a JSON API (FastAPI).

:func:`create_app` builds the application for a :class:`StudioConfig`; starting it (its
lifespan) opens the job database under ``config.data``, marks the jobs an earlier server left
queued or running as ``interrupted`` and starts the workers; stopping it cancels the running
jobs (they become ``interrupted`` too). Every API response is JSON (or an image, a video, an
event stream); every refusal is ``{"error": "one line"}`` with its status.
"""
from __future__ import annotations

import asyncio
import hmac
import json
import mimetypes
import os
import re
import shutil
import time
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from .. import __version__
from ..core.memory import keep_freed_memory
from .catalog import Catalog
from .db import ACTIVE, FINISHED, JobStore
from .intake import MAX_FIELD, MAX_FILES, Refused, check_request
from .jobs import JobQueue
from .server import is_loopback

STATIC = Path(__file__).parent / "static"
MB = 1 << 20
CLIENT_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


@dataclass
class StudioConfig:
    """How a studio runs: its data folder, its workers and its limits."""
    data: Path = field(default_factory=lambda: Path("~/.brushwork/studio").expanduser())
    token: str | None = None
    workers: int = 1
    threads: int | None = None  # torch threads shared by the running jobs (None: one per core)
    device: str = "cpu"
    max_upload_mb: float = 50.0
    max_queued: int = 8
    max_pixels: int | None = None
    sse_interval: float = 0.2   # seconds between checks of a job for its event stream


class BodyTooLarge(Exception):
    """A request body (without a Content-Length) grew past the upload limit while read."""


class Guard:
    """ASGI middleware in front of everything: the token and the request size. Without a
    token the Host header must name the loopback (so a web page elsewhere cannot reach a
    loopback studio through a host name of its own) and writes from another origin (a page
    of another site) are refused."""

    def __init__(self, app, config: StudioConfig):
        self.app = app
        self.token = config.token
        self.limit = int(config.max_upload_mb * MB)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                   for k, v in scope.get("headers", [])}
        host = headers.get("host", "")
        hostname = urlsplit(f"//{host}").hostname or ""
        if not self.token and host and not is_loopback(hostname):
            return await _send_error(send, 403, f"host {host!r} refused: a studio without a "
                                                "token answers on the loopback only")
        path = scope.get("path", "")
        method = scope.get("method", "GET")
        if path.startswith("/api/"):
            if self.token and not self._authorised(headers, scope):
                return await _send_error(send, 401, "missing or wrong token (send "
                                                    "'Authorization: Bearer TOKEN' or ?token=)",
                                         [(b"www-authenticate", b"Bearer")])
            origin = headers.get("origin")
            if not self.token and method not in ("GET", "HEAD", "OPTIONS") and origin \
                    and urlsplit(origin).netloc != host:
                # without a token, another site's page must not submit or cancel jobs
                return await _send_error(send, 403, f"requests from {origin} are refused")
            if method == "POST":
                try:
                    length = int(headers.get("content-length", "0") or 0)
                except ValueError:
                    length = 0
                if length > self.limit:
                    await _drain(receive, 2 * self.limit + MB)
                    return await _send_error(send, 413, self._too_large())
                receive = self._counting(receive)
        return await self.app(scope, receive, send)

    def _too_large(self) -> str:
        return too_large_message(self.limit / MB)

    def _authorised(self, headers, scope) -> bool:
        auth = headers.get("authorization", "")
        given = auth[7:].strip() if auth[:7].lower() == "bearer " else None
        if given is None:
            qs = parse_qs(scope.get("query_string", b"").decode("latin-1"))
            given = (qs.get("token") or [None])[0]
        return given is not None and hmac.compare_digest(given.encode(), self.token.encode())

    def _counting(self, receive):
        seen = 0
        limit = self.limit

        async def counted():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge()
            return message
        return counted


def too_large_message(limit_mb: float) -> str:
    return f"upload larger than the limit of {limit_mb:g} MB (--max-upload)"


async def _drain(receive, cap: int) -> None:
    """Read (and drop) a refused request's body, up to ``cap`` bytes, so that the client,
    still sending, reads the answer instead of a reset connection."""
    seen = 0
    while seen <= cap:
        message = await receive()
        if message["type"] != "http.request":
            return
        seen += len(message.get("body", b""))
        if not message.get("more_body", False):
            return


async def _send_error(send, status: int, message: str, extra=()):
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()), *extra]})
    await send({"type": "http.response.body", "body": body})


def error(status: int, message: str, headers=None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


class Studio:
    """The server's state: config, store, queue, catalog."""

    def __init__(self, config: StudioConfig):
        self.config = config
        self.data = Path(config.data).expanduser()
        self.jobs_dir = self.data / "jobs"
        self.tmp_dir = self.data / "tmp"
        self.store: JobStore | None = None
        self.queue: JobQueue | None = None
        self.catalog: Catalog | None = None
        self.interrupted_at_start: list[str] = []

    def start(self) -> None:
        for d in (self.data, self.jobs_dir, self.tmp_dir):
            d.mkdir(parents=True, exist_ok=True)
        for leftover in self.tmp_dir.iterdir():  # a request cut short by a crash
            shutil.rmtree(leftover, ignore_errors=True)
        self.store = JobStore(self.data / "studio.db")
        self.interrupted_at_start = self.store.mark_interrupted()
        for job_id in self.interrupted_at_start:  # temporary files of unfinished writes
            for f in (self.jobs_dir / job_id).glob(".*"):
                if f.is_file():
                    f.unlink()
        self.queue = JobQueue(self.store, self.jobs_dir, workers=self.config.workers,
                              threads=self.config.threads, device=self.config.device,
                              max_pixels=self.config.max_pixels)
        self.catalog = Catalog(self.queue.models.get)
        keep_freed_memory()  # the workers' tensors reuse freed memory (no page faults)
        self.queue.start()

    def stop(self) -> None:
        if self.queue is not None:
            self.queue.stop()
        if self.store is not None:
            self.store.close()

    # ------------------------------------------------------------------ job views
    def view(self, row: dict[str, Any]) -> dict[str, Any]:
        """A job as the API shows it: its row with the live progress and the URLs."""
        jid = row["id"]
        live = self.queue.live(jid)
        step, total, message, previews, version = row["step"], row["total"], "", 0, 0
        started = row["started"]
        if live is not None:
            previews, version = live.previews, live.version
            if row["state"] in ACTIVE:
                step, total, message = live.step, live.total, live.message
                started = live.started or started
        now = time.time()
        end = row["finished"] if row["state"] in FINISHED and row["finished"] else now
        elapsed = (end - started) if started else 0.0
        eta = None
        if row["state"] == "running" and step and total and step < total:
            eta = elapsed / step * (total - step)
        req = row["request"]
        base = f"/api/jobs/{jid}"
        v = {"id": jid, "state": row["state"], "kind": row["kind"], "method": row["method"],
             "created": row["created"], "started": row["started"],
             "finished": row["finished"], "runs": row["runs"], "error": row["error"],
             "progress": {"step": step, "total": total, "elapsed": round(elapsed, 3),
                          "eta": None if eta is None else round(eta, 3),
                          "fraction": (min(1.0, step / total) if total else
                                       (1.0 if row["state"] == "done" else 0.0)),
                          "message": message},
             "controls": req["controls"], "options": req["options"], "seed": req["seed"],
             "size": req["size"], "style_weights": req["style_weights"],
             "names": req.get("names", {}), "n_styles": len(req["styles"]),
             "n_masks": len(req["masks"]), "version": version,
             "content_url": f"{base}/content",
             "style_urls": [f"{base}/style/{i + 1}" for i in range(len(req["styles"]))],
             "preview_url": None, "result_url": None, "recipe_url": None,
             "events_url": f"{base}/events"}
        if previews or row["state"] == "done":
            # the URL changes with each new preview image (and once more when the job is
            # done), so a page fetches an image only when there is a new one
            v["preview_url"] = (f"{base}/preview?n={previews}"
                                + ("&done=1" if row["state"] == "done" else ""))
        if row["state"] == "done":
            v["result_url"] = f"{base}/result"
            v["recipe_url"] = f"{base}/recipe"
        return v


def _client(request: Request) -> str:
    host = request.client.host if request.client else "unknown"
    cid = request.headers.get("x-studio-client", "")
    return f"{host}/{cid}" if CLIENT_ID.match(cid) else host


def create_app(config: StudioConfig) -> FastAPI:
    studio = Studio(config)

    @asynccontextmanager
    async def lifespan(app):
        await run_in_threadpool(studio.start)
        try:
            yield
        finally:
            await run_in_threadpool(studio.stop)

    app = FastAPI(title="brushwork studio", version=__version__, lifespan=lifespan,
                  docs_url=None, redoc_url=None, openapi_url=None)
    app.state.studio = studio
    app.add_middleware(Guard, config=config)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.exception_handler(HTTPException)
    async def http_error(request, exc):
        return error(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request, exc):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(x) for x in first.get("loc", ()))
        return error(422, f"{where}: {first.get('msg', 'invalid request')}")

    @app.exception_handler(BodyTooLarge)
    async def too_large(request, exc):
        return error(413, too_large_message(config.max_upload_mb))

    def job_row(job_id: str):
        row = studio.store.get(job_id)
        if row is None:
            raise HTTPException(404, f"no job {job_id!r}")
        return row

    # ------------------------------------------------------------------ page
    @app.get("/", include_in_schema=False)
    def index():
        return FileResponse(STATIC / "index.html", headers={"cache-control": "no-cache"})

    # ------------------------------------------------------------------ API
    @app.get("/api/health")
    def health():
        s = studio.store
        return {"ok": True, "version": __version__, "workers": config.workers,
                "queued": s.count(("queued",)), "running": s.count(("running",)),
                "jobs": s.count(), "token": config.token is not None,
                "limits": {"max_upload_mb": config.max_upload_mb,
                           "max_queued": config.max_queued,
                           "max_pixels": config.max_pixels or _max_pixels()}}

    @app.get("/api/methods")
    def methods():
        return {"methods": studio.catalog.methods()}

    @app.get("/api/styles")
    def styles():
        return {"styles": studio.catalog.style_names()}

    @app.get("/api/styles/{name}")
    def style_image(name: str):
        png = studio.catalog.style_png(name)
        if png is None:
            raise HTTPException(404, f"no bundled style {name!r}")
        return Response(png, media_type="image/png",
                        headers={"cache-control": "max-age=86400"})

    @app.post("/api/jobs", status_code=201)
    async def create_job(request: Request):
        client = _client(request)
        if studio.store.active(client) >= config.max_queued:  # before keeping any upload
            async for _ in request.stream():  # read and drop it: the client reads the answer
                pass
            return _too_many(config)
        try:
            form = await request.form(max_files=MAX_FILES, max_fields=256,
                                      max_part_size=MAX_FIELD)
        except BodyTooLarge:
            raise
        except HTTPException as e:
            return error(400, f"cannot read the form: {e.detail}")
        except Exception as e:  # a malformed multipart body
            return error(400, f"cannot read the form ({type(e).__name__}: {e})")
        try:
            return await run_in_threadpool(_submit, studio, form, client)
        finally:
            await form.close()

    @app.get("/api/jobs")
    def list_jobs(limit: int = 100):
        limit = max(1, min(int(limit), 1000))
        return {"jobs": [studio.view(r) for r in studio.store.list(limit)]}

    @app.get("/api/jobs/{job_id}")
    def get_job(job_id: str):
        return studio.view(job_row(job_id))

    @app.delete("/api/jobs/{job_id}")
    def cancel_job(job_id: str):
        row = job_row(job_id)
        if row["state"] not in ACTIVE:
            return error(409, f"job {job_id} is {row['state']}; only queued or running jobs "
                              f"can be cancelled")
        studio.queue.cancel(job_id)
        return studio.view(job_row(job_id))

    @app.post("/api/jobs/{job_id}/rerun")
    def rerun_job(job_id: str):
        outcome = studio.store.requeue(job_id, config.max_queued)
        if outcome == "missing":
            raise HTTPException(404, f"no job {job_id!r}")
        if outcome == "state":
            state = studio.store.get(job_id)["state"]
            return error(409, f"job {job_id} is {state}; only interrupted, cancelled or "
                              f"failed jobs can be rerun")
        if outcome == "busy":
            return _too_many(config)
        studio.queue.put(job_id)
        return JSONResponse(studio.view(job_row(job_id)), status_code=202)

    @app.get("/api/jobs/{job_id}/preview")
    def preview(job_id: str):
        row = job_row(job_id)
        live = studio.queue.live(job_id)
        if live is not None and live.preview is not None and row["state"] != "done":
            return Response(live.preview, media_type="image/png",
                            headers={"cache-control": "no-store"})
        if row["state"] == "done" and row["kind"] == "image":
            return FileResponse(studio.jobs_dir / job_id / row["result"],
                                media_type="image/png")
        if live is not None and live.preview is not None:
            return Response(live.preview, media_type="image/png",
                            headers={"cache-control": "no-store"})
        raise HTTPException(404, f"job {job_id} has no preview yet")

    @app.get("/api/jobs/{job_id}/result")
    def result(job_id: str, download: int = 0):
        row = job_row(job_id)
        if row["state"] != "done":
            return error(409, f"job {job_id} is {row['state']}; no result")
        path = studio.jobs_dir / job_id / row["result"]
        name = f"brushwork-{row['method']}-{job_id}{path.suffix}"
        return FileResponse(path, media_type=mimetypes.guess_type(path.name)[0],
                            filename=name if download else None)

    @app.get("/api/jobs/{job_id}/recipe")
    def recipe(job_id: str, download: int = 0):
        row = job_row(job_id)
        if row["state"] != "done" or row["recipe"] is None:
            return error(409, f"job {job_id} is {row['state']}; no recipe")
        headers = {}
        if download:
            headers["content-disposition"] = \
                f'attachment; filename="brushwork-{row["method"]}-{job_id}.json"'
        return JSONResponse(row["recipe"], headers=headers)

    @app.get("/api/jobs/{job_id}/content")
    def content(job_id: str):
        row = job_row(job_id)
        return _input_file(studio, job_id, row["request"]["content"])

    @app.get("/api/jobs/{job_id}/style/{index}")
    def style(job_id: str, index: int):
        styles = job_row(job_id)["request"]["styles"]
        if not 1 <= index <= len(styles):
            raise HTTPException(404, f"job {job_id} has no style {index}")
        return _input_file(studio, job_id, styles[index - 1])

    @app.get("/api/jobs/{job_id}/events")
    async def events(job_id: str, request: Request):
        job_row(job_id)
        return StreamingResponse(_event_stream(studio, job_id, request),
                                 media_type="text/event-stream",
                                 headers={"cache-control": "no-store",
                                          "x-accel-buffering": "no"})

    return app


def _max_pixels():
    from ..core.image import max_pixels_default
    return max_pixels_default()


def _too_many(config: StudioConfig) -> JSONResponse:
    return error(429, f"this client already has {config.max_queued} job(s) queued or running "
                      f"(--max-queued); wait for one to finish or cancel one",
                 {"retry-after": "5"})


def _submit(studio: Studio, form, client: str):
    """Check a request and store it (files into the job folder, then its row); a refusal
    stores nothing."""
    try:
        checked = check_request(form, studio.tmp_dir, max_pixels=studio.config.max_pixels)
    except Refused as r:
        return error(r.status, r.message)
    job_id = uuid.uuid4().hex[:16]
    folder = studio.jobs_dir / job_id
    os.replace(checked.folder, folder)
    job = {"id": job_id, "client": client, "kind": checked.kind, "method": checked.method,
           "request": checked.request}
    if not studio.store.insert(job, studio.config.max_queued):
        shutil.rmtree(folder, ignore_errors=True)
        return _too_many(studio.config)
    studio.queue.put(job_id)
    return JSONResponse({"id": job_id, "url": f"/api/jobs/{job_id}"}, status_code=201)


def _input_file(studio: Studio, job_id: str, name: str):
    path = studio.jobs_dir / job_id / name
    if not path.is_file():
        raise HTTPException(404, f"job {job_id}: {name} is gone")
    return FileResponse(path, media_type=mimetypes.guess_type(path.name)[0]
                        or "application/octet-stream",
                        headers={"x-content-type-options": "nosniff"})


async def _event_stream(studio: Studio, job_id: str, request: Request):
    """Server-sent events: ``progress`` (the job as ``GET /api/jobs/{id}`` shows it) whenever
    it changed, then ``end`` once it is finished."""
    last, quiet = None, 0.0
    interval = studio.config.sse_interval
    yield "retry: 2000\n\n"
    while True:
        row = studio.store.get(job_id)
        if row is None:
            return
        view = studio.view(row)
        key = (view["state"], view["version"], view["progress"]["step"])
        if key != last:
            last, quiet = key, 0.0
            kind = "end" if view["state"] in FINISHED else "progress"
            yield f"event: {kind}\ndata: {json.dumps(view)}\n\n"
            if kind == "end":
                return
        elif quiet >= 15.0:
            quiet = 0.0
            yield ": keep-alive\n\n"
        if studio.queue.stopping:
            return
        await asyncio.sleep(interval)
        quiet += interval


__all__ = ["StudioConfig", "create_app", "is_loopback"]
