"""The web studio (`brushwork serve`) over real HTTP: a uvicorn server on a free loopback port
(in a thread, or a subprocess where it is killed), driven with urllib."""
from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi", reason="the studio needs fastapi (the 'studio' extra)")
pytest.importorskip("uvicorn", reason="the studio needs uvicorn (the 'studio' extra)")
pytest.importorskip("python_multipart", reason="the studio needs python-multipart")

from brushwork.cli.common import visible_controls  # noqa: E402
from brushwork.core.protocol import resolve_controls  # noqa: E402
from brushwork.core.recipe import check_recipe  # noqa: E402
from brushwork.errors import BrushworkError  # noqa: E402
from brushwork.methods import METHODS, get_method  # noqa: E402
from brushwork.studio.app import StudioConfig  # noqa: E402
from brushwork.studio.server import StudioThread  # noqa: E402

FINISHED = ("done", "failed", "cancelled", "interrupted")
ADAIN = {"method": "adain", "options": json.dumps({"encoder": "small"}), "size": "64"}
REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------ images
def png(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


def _resized(a, w, h):
    return np.asarray(Image.fromarray(a).resize((w, h), Image.BICUBIC))


@pytest.fixture(scope="module")
def content_png():
    from skimage import data
    return png(_resized(data.chelsea(), 64, 48))


@pytest.fixture(scope="module")
def style_png():
    from skimage import data
    return png(_resized(data.coffee(), 48, 48))


def pixel_bomb(w=30000, h=30000) -> bytes:
    """A small, valid PNG whose header declares w x h pixels."""
    def chunk(kind, payload):
        return (struct.pack(">I", len(payload)) + kind + payload
                + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF))
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


def clip_bytes(tmp_path, n: int) -> bytes:
    """An n-frame 64x48 H.264 clip (a square moving over a texture)."""
    sys.path.insert(0, str(Path(__file__).parent))
    from video_clip import clip_frames, make_clip
    frames = clip_frames(10)
    frames = [frames[i % 10] for i in range(n)]
    return make_clip(tmp_path / f"clip{n}.mp4", audio=None, frames=frames).read_bytes()


# ------------------------------------------------------------------ HTTP
def multipart(fields: dict, files: list) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    out = io.BytesIO()
    for k, v in fields.items():
        out.write(f"--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n"
                  f"{v}\r\n".encode())
    for name, filename, payload in files:
        out.write(f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; "
                  f"filename=\"{filename}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
                  .encode())
        out.write(payload + b"\r\n")
    out.write(f"--{boundary}--\r\n".encode())
    return out.getvalue(), f"multipart/form-data; boundary={boundary}"


def call(base, method, path, body=None, headers=None, timeout=60):
    """(status, headers, body bytes) of one request."""
    req = urllib.request.Request(base.rstrip("/") + path, data=body, method=method,
                                 headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def get_json(base, path, **kw):
    status, _, body = call(base, "GET", path, **kw)
    assert status == 200, (status, body)
    return json.loads(body)


def submit(base, content, styles=(), *, fields=None, masks=(), client="t", extra_files=()):
    files = [("content", "content.png", content)]
    files += [("style", f"style{i}.png", s) for i, s in enumerate(styles)]
    files += [("mask", f"mask{i}.png", m) for i, m in enumerate(masks)]
    files += list(extra_files)
    body, ctype = multipart(fields or {}, files)
    status, _, out = call(base, "POST", "/api/jobs", body,
                          {"Content-Type": ctype, "X-Studio-Client": client})
    return status, json.loads(out)


def wait(base, job_id, states=FINISHED, timeout=120):
    end = time.monotonic() + timeout
    while True:
        job = get_json(base, f"/api/jobs/{job_id}")
        if job["state"] in states:
            return job
        assert time.monotonic() < end, f"job {job_id} still {job['state']}"
        time.sleep(0.05)


def wait_running(base, job_id, min_step=1, timeout=120):
    end = time.monotonic() + timeout
    while True:
        job = get_json(base, f"/api/jobs/{job_id}")
        if job["state"] == "running" and job["progress"]["step"] >= min_step:
            return job
        assert job["state"] in ("queued", "running"), job
        assert time.monotonic() < end, f"job {job_id} did not start"
        time.sleep(0.05)


def events(base, job_id, timeout=120):
    """The server-sent events of a job, read to the end: [(event, data)]."""
    out, kind = [], None
    with urllib.request.urlopen(f"{base}api/jobs/{job_id}/events", timeout=timeout) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        for raw in r:
            line = raw.decode().rstrip("\r\n")
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: "):
                out.append((kind, json.loads(line[6:])))
    return out


def stored(data: Path) -> tuple[int, list[str]]:
    """(job rows, files under the data folder but the database's own)."""
    import sqlite3
    with sqlite3.connect(data / "studio.db") as db:
        rows = db.execute("SELECT COUNT(*) FROM jobs").fetchone()[0]
    files = sorted(str(p.relative_to(data)) for p in data.rglob("*")
                   if not p.name.startswith("studio.db"))
    return rows, files


# ------------------------------------------------------------------ servers
@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    data = tmp_path_factory.mktemp("studio")
    config = StudioConfig(data=data, workers=2, max_upload_mb=1.0, max_queued=3,
                          sse_interval=0.05)
    server = StudioThread(config).start()
    server.data = data
    yield server
    server.stop()


def start_process(data: Path, *args, env_extra=None):
    """`brushwork serve` in a subprocess on a free port; returns (process, base URL)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **(env_extra or {})}
    p = subprocess.Popen([sys.executable, "-m", "brushwork", "serve", "--port", "0",
                          "--data", str(data), *args], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)
    line = []
    reader = threading.Thread(target=lambda: line.append(p.stdout.readline()), daemon=True)
    reader.start()
    reader.join(120)
    assert line and line[0].startswith("brushwork studio on http://"), \
        (line, p.poll(), p.stderr.read() if p.poll() is not None else "")
    base = line[0].split(" on ", 1)[1].split(" ", 1)[0]
    return p, base


# ------------------------------------------------------------------ tests
def test_health_and_methods_match_the_cli(studio):
    h = get_json(studio.url, "/api/health")
    assert h["ok"] is True and h["workers"] == 2
    methods = get_json(studio.url, "/api/methods")["methods"]
    assert [m["name"] for m in methods] == list(METHODS)
    for m in methods:
        cls = METHODS[m["name"]]
        assert m["capabilities"]["styles"] == cls.capabilities.styles
        assert [c["name"] for c in m["controls"]] == list(visible_controls(cls))
        for c in m["controls"]:
            ctl = cls.controls[c["name"]]
            default = list(ctl.default) if isinstance(ctl.default, tuple) else ctl.default
            assert (c["kind"], c["default"], c["low"], c["high"], c["help"]) == \
                (ctl.kind, default, ctl.low, ctl.high, ctl.help)
            assert c["choices"] == (None if ctl.choices is None else list(ctl.choices))
            if ctl.kind == "bool":
                assert c["type"] == "toggle"
            if ctl.low is not None and ctl.high is not None and ctl.kind in ("float", "int"):
                assert c["type"] == "slider"
        if cls.capabilities.styles == "labels":
            assert m["labels"] and m["label_control"] in cls.controls
    styles = get_json(studio.url, "/api/styles")["styles"]
    status, headers, body = call(studio.url, "GET", styles[0]["url"])
    assert status == 200 and Image.open(io.BytesIO(body)).size[0] > 0
    status, headers, body = call(studio.url, "GET", "/")
    assert status == 200 and b"studio.js" in body


def test_adain_job_runs_to_done_with_a_valid_recipe(studio, content_png, style_png):
    status, r = submit(studio.url, content_png, [style_png], fields=ADAIN)
    assert status == 201, r
    stream = events(studio.url, r["id"])
    assert stream[-1][0] == "end" and stream[-1][1]["state"] == "done"
    job = stream[-1][1]
    assert job["progress"]["fraction"] == 1.0 and job["runs"] == 1
    status, headers, body = call(studio.url, "GET", job["result_url"])
    assert status == 200 and headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(body)).size == (64, 48)
    recipe = check_recipe(get_json(studio.url, job["recipe_url"]))
    assert recipe["method"] == "adain" and recipe["options"] == {"encoder": "small"}
    assert recipe["size"] == 64 and recipe["seed"] == 0
    assert recipe["content_sha256"] == hashlib.sha256(content_png).hexdigest()
    assert recipe["style_sha256"] == [hashlib.sha256(style_png).hexdigest()]
    assert "adain_small.safetensors" in recipe["weights"]
    assert r["id"] in [j["id"] for j in get_json(studio.url, "/api/jobs")["jobs"]]


def test_gatys_streams_progress_and_previews(studio, content_png, style_png):
    fields = {"method": "gatys", "size": "64", "controls": json.dumps({"steps": 20, "tol": 0})}
    status, r = submit(studio.url, content_png, [style_png], fields=fields)
    assert status == 201, r
    stream = events(studio.url, r["id"])
    assert stream[-1][1]["state"] == "done"
    steps = [d["progress"]["step"] for k, d in stream if d["state"] == "running"]
    assert any(0 < s < 20 for s in steps)  # progress arrived while it ran
    assert steps == sorted(steps)
    assert any(d["preview_url"] for k, d in stream if d["state"] == "running")
    # the preview URL names the preview image (gatys makes one at its first step, every 10
    # steps and every 2 s), not each progress event; the done job's URL is a new one
    urls = [d["preview_url"] for k, d in stream if d["state"] == "running" and d["preview_url"]]
    counts = {int(u.rsplit("?n=", 1)[1]) for u in urls}
    assert counts and counts <= set(range(1, 21)) and len(counts) == len(set(urls))
    assert stream[-1][1]["preview_url"].endswith("&done=1")
    running = [d for k, d in stream if d["state"] == "running" and d["progress"]["step"]]
    assert all(d["progress"]["total"] == 20 for d in running)
    assert any(d["progress"]["eta"] is not None for d in running)
    status, headers, body = call(studio.url, "GET", f"/api/jobs/{r['id']}/preview")
    assert status == 200 and Image.open(io.BytesIO(body)).size == (64, 48)


def test_masks_and_several_styles(studio, content_png, style_png):
    other = png(np.tile(np.array([[20, 40, 160], [250, 220, 40]], np.uint8)[:, None],
                        (24, 48, 1)))
    left = np.zeros((48, 64), np.uint8)
    left[:, :32] = 255
    fields = dict(ADAIN, style_weights=json.dumps([1, 2]))
    status, r = submit(studio.url, content_png, [style_png, other], fields=fields,
                       masks=[png(left), png(255 - left)])
    assert status == 201, r
    job = wait(studio.url, r["id"])
    assert job["state"] == "done", job
    recipe = get_json(studio.url, job["recipe_url"])
    assert recipe["controls"]["masks"] == ["mask1.png", "mask2.png"]  # beside the recipe
    assert recipe["style_weights"] == [1.0, 2.0]
    folder = studio.data / "jobs" / r["id"]
    assert json.loads((folder / "recipe.json").read_text()) == recipe
    assert all((folder / m).is_file() for m in recipe["controls"]["masks"])


def test_video_job(studio, style_png, tmp_path):
    body, ctype = multipart({**ADAIN, "consistency": "none"},
                            [("content", "clip.mp4", clip_bytes(tmp_path, 4)),
                             ("style", "s.png", style_png)])
    status, _, out = call(studio.url, "POST", "/api/jobs", body, {"Content-Type": ctype})
    assert status == 201, out
    job = wait(studio.url, json.loads(out)["id"])
    assert job["state"] == "done" and job["kind"] == "video", job
    assert job["progress"]["total"] == 4
    status, headers, video = call(studio.url, "GET", job["result_url"])
    assert status == 200 and headers["content-type"] == "video/mp4"
    (tmp_path / "out.mp4").write_bytes(video)
    from brushwork.video.io import probe
    info = probe(tmp_path / "out.mp4")
    assert (info.width, info.height, info.n_frames) == (64, 48, 4)


def test_cancel_queued_and_running_gatys_and_the_queue_limit(studio, content_png, style_png):
    long = {"method": "gatys", "size": "64",
            "controls": json.dumps({"steps": 100000, "tol": 0})}
    ids = []
    for _ in range(3):
        status, r = submit(studio.url, content_png, [style_png], fields=long, client="busy")
        assert status == 201, r
        ids.append(r["id"])
    before = stored(studio.data)
    status, r = submit(studio.url, content_png, [style_png], fields=long, client="busy")
    assert status == 429 and "--max-queued" in r["error"]
    assert stored(studio.data) == before  # refused: no row, no file
    wait_running(studio.url, ids[0])
    wait_running(studio.url, ids[1])
    # two workers: the third job waits; cancelling it means it never runs
    status, _, body = call(studio.url, "DELETE", f"/api/jobs/{ids[2]}")
    assert status == 200 and json.loads(body)["state"] == "cancelled"
    for jid in ids[:2]:
        status, _, body = call(studio.url, "DELETE", f"/api/jobs/{jid}")
        assert status == 200 and json.loads(body)["state"] == "cancelled", body
    jobs = {j["id"]: j for j in get_json(studio.url, "/api/jobs")["jobs"]}
    assert [jobs[i]["runs"] for i in ids] == [1, 1, 0]
    assert all(jobs[i]["state"] == "cancelled" for i in ids)
    status, _, body = call(studio.url, "GET", f"/api/jobs/{ids[0]}/result")
    assert status == 409
    status, _, body = call(studio.url, "DELETE", f"/api/jobs/{ids[0]}")
    assert status == 409 and "error" in json.loads(body)


def _expected(fn):
    with pytest.raises(BrushworkError) as e:
        fn()
    return str(e.value)


def test_refusals_store_nothing(studio, content_png, style_png):
    for _ in range(100):  # earlier tests' jobs finish first: their files are theirs
        if get_json(studio.url, "/api/health")["running"] == 0:
            break
        time.sleep(0.1)
    before = stored(studio.data)
    cls = get_method("adain")
    cases = [
        # (content, styles, fields, masks, status, expected message or fragment)
        (os.urandom(1_200_000), [style_png], ADAIN, [], 413, "--max-upload"),
        (pixel_bomb(), [style_png], ADAIN, [], 413, "30000x30000"),
        (content_png, [pixel_bomb()], ADAIN, [], 413, "pixel guard"),
        (b"this is not an image", [style_png], ADAIN, [], 422, "not an image"),
        (content_png, [style_png], dict(ADAIN, method="nope"), [], 422,
         _expected(lambda: get_method("nope"))),
        (content_png, [style_png], dict(ADAIN, controls=json.dumps({"strength": 5})), [], 422,
         _expected(lambda: cls.controls["strength"].parse(5))),
        (content_png, [style_png], dict(ADAIN, controls=json.dumps({"bogus": 1})), [], 422,
         _expected(lambda: resolve_controls("adain", cls.controls, {"bogus": 1}))),
        (content_png, [style_png], dict(ADAIN, controls="{not json"), [], 422, "JSON"),
        (content_png, [style_png], dict(ADAIN, options=json.dumps({"encoder": "huge"})), [],
         422, "encoder"),
        (content_png, [style_png], dict(ADAIN, size="5"), [], 422, "below the minimum"),
        (content_png, [], ADAIN, [], 422, "style image"),
        (content_png, [style_png], ADAIN, [png(np.zeros((48, 64), np.uint8))] * 2, 422,
         "2 mask(s) given for 1 style(s)"),
        (content_png, [style_png], {"method": "cin"}, [], 422, "takes no style images"),
    ]
    for content, styles, fields, masks, want_status, want in cases:
        status, r = submit(studio.url, content, styles, fields=fields, masks=masks)
        assert status == want_status, (fields, r)
        assert set(r) == {"error"} and want in r["error"] and "\n" not in r["error"], r
        assert stored(studio.data) == before, fields


def test_twenty_concurrent_clients(studio, content_png, style_png):
    results, errors = {}, []

    def client(i):
        try:
            status, r = submit(studio.url, content_png, [style_png], fields=ADAIN,
                               client=f"client-{i}")
            assert status == 201, r
            results[i] = wait(studio.url, r["id"], timeout=300)
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not errors, errors
    ids = [results[i]["id"] for i in range(20)]
    assert len(set(ids)) == 20
    assert all(results[i]["state"] == "done" and results[i]["runs"] == 1 for i in range(20))
    listed = [j["id"] for j in get_json(studio.url, "/api/jobs?limit=1000")["jobs"]]
    assert all(listed.count(i) == 1 for i in ids)


def test_token(tmp_path):
    server = StudioThread(StudioConfig(data=tmp_path, token="s3cret")).start()
    try:
        status, _, body = call(server.url, "GET", "/api/health")
        assert status == 401 and "token" in json.loads(body)["error"]
        status, _, _ = call(server.url, "GET", "/api/jobs", headers={"Authorization": "Bearer no"})
        assert status == 401
        assert call(server.url, "GET", "/api/health",
                    headers={"Authorization": "Bearer s3cret"})[0] == 200
        assert call(server.url, "GET", "/api/health?token=s3cret")[0] == 200
        assert call(server.url, "GET", "/")[0] == 200  # the page asks for the token itself
    finally:
        server.stop()


def test_loopback_only_without_a_token(tmp_path, capsys):
    from brushwork.cli import main
    assert main(["serve", "--host", "0.0.0.0", "--data", str(tmp_path / "d")]) == 2
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("brushwork: error: ") and "--token" in lines[0]
    assert out == "" and not (tmp_path / "d").exists()


def test_foreign_host_and_origin_refused_without_token(studio, content_png, style_png):
    status, _, body = call(studio.url, "GET", "/api/health", headers={"Host": "evil.example"})
    assert status == 403 and "loopback" in json.loads(body)["error"]
    body, ctype = multipart(ADAIN, [("content", "c.png", content_png), ("style", "s.png",
                                                                        style_png)])
    status, _, out = call(studio.url, "POST", "/api/jobs", body,
                          {"Content-Type": ctype, "Origin": "http://evil.example"})
    assert status == 403 and "evil.example" in json.loads(out)["error"]


def test_label_and_builtin_methods_take_no_style_images(studio, content_png):
    status, r = submit(studio.url, content_png, fields={"method": "cin", "size": "64",
                                                        "controls": json.dumps({"style_id": "1"})})
    assert status == 201, r
    job = wait(studio.url, r["id"])
    assert job["state"] == "done" and job["n_styles"] == 0, job
    assert get_json(studio.url, job["recipe_url"])["controls"] == {"style_id": "1"}
    status, r = submit(studio.url, content_png, fields={"method": "johnson", "size": "64"})
    assert status == 201 and wait(studio.url, r["id"])["state"] == "done"


def test_stopping_the_server_interrupts_its_running_job(tmp_path, content_png, style_png):
    server = StudioThread(StudioConfig(data=tmp_path, workers=1)).start()
    fields = {"method": "gatys", "size": "64",
              "controls": json.dumps({"steps": 100000, "tol": 0})}
    try:
        running = submit(server.url, content_png, [style_png], fields=fields)[1]["id"]
        queued = submit(server.url, content_png, [style_png], fields=fields)[1]["id"]
        wait_running(server.url, running)
    finally:
        server.stop()
    from brushwork.studio.db import JobStore
    store = JobStore(tmp_path / "studio.db")
    assert store.get(running)["state"] == "interrupted" and store.get(running)["runs"] == 1
    assert store.get(queued)["state"] == "interrupted" and store.get(queued)["runs"] == 0
    store.close()


def test_killed_server_restarts_without_losing_results(tmp_path, content_png, style_png):
    data = tmp_path / "data"
    p, base = start_process(data, "--workers", "1")
    try:
        status, r = submit(base, content_png, [style_png], fields=ADAIN)
        assert status == 201, r
        done = wait(base, r["id"])
        assert done["state"] == "done"
        # a 240-frame clip: killed after its first frames
        body, ctype = multipart({**ADAIN, "consistency": "none"},
                                [("content", "clip.mp4", clip_bytes(tmp_path, 240)),
                                 ("style", "s.png", style_png)])
        status, _, out = call(base, "POST", "/api/jobs", body, {"Content-Type": ctype})
        assert status == 201, out
        killed = json.loads(out)["id"]
        wait_running(base, killed)
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait(30)
    # the same data folder, served again (here in this process: no second start-up)
    server = StudioThread(StudioConfig(data=data, workers=1)).start()
    base = server.url
    try:
        jobs = {j["id"]: j for j in get_json(base, "/api/jobs")["jobs"]}
        assert jobs[done["id"]]["state"] == "done"
        status, headers, body = call(base, "GET", jobs[done["id"]]["result_url"])
        assert status == 200 and Image.open(io.BytesIO(body)).size == (64, 48)
        check_recipe(get_json(base, jobs[done["id"]]["recipe_url"]))
        assert jobs[killed]["state"] == "interrupted"
        assert not [f for f in (data / "jobs" / killed).iterdir() if f.name.startswith(".")]
        status, _, body = call(base, "POST", f"/api/jobs/{done['id']}/rerun")
        assert status == 409  # a finished result is not redone
        status, _, body = call(base, "POST", f"/api/jobs/{killed}/rerun")
        assert status == 202, body
        job = wait(base, killed)
        assert job["state"] == "done" and job["runs"] == 2, job
        assert job["progress"]["total"] == 240
        check_recipe(get_json(base, job["recipe_url"]))
    finally:
        server.stop()


def test_running_jobs_share_the_thread_budget(tmp_path):
    """Each worker sets its own torch threads (per thread in PyTorch) to the budget divided
    by the running jobs: a job alone gets all of it, and the caller's threads stay as they
    were."""
    import torch

    from brushwork.studio.db import JobStore
    from brushwork.studio.jobs import JobQueue
    queue = JobQueue(JobStore(tmp_path / "jobs.db"), tmp_path, workers=2, threads=4)
    before, seen = torch.get_num_threads(), {}

    def worker(running):
        queue.running = running
        seen[running] = (queue.share_threads(), torch.get_num_threads())

    for running in (1, 2, 3, 5):
        t = threading.Thread(target=worker, args=(running,))
        t.start()
        t.join()
    assert seen == {1: (4, 4), 2: (2, 2), 3: (1, 1), 5: (1, 1)}
    assert torch.get_num_threads() == before
