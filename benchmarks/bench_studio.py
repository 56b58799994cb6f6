"""Benchmark: the studio over loopback (a real uvicorn server in this process, urllib clients).

1. Upload to result: a 512 px ``adain --encoder small`` job, timed from the start of the upload
   (multipart POST of the photo and the style) through the event stream's ``end`` event to the
   last byte of the result PNG; one warm-up job (the model loads), then the median of
   ``--repeat`` jobs.
2. Preview interval: a 512 px gatys job (its default two scales, 256 and 512 px, with
   ``--steps`` L-BFGS steps each) watched over its event stream as the page watches it; the
   time between successive new previews, per scale (median and max). A preview comes with
   the first step of a scale, every 10 steps and whenever 2 s passed since the last one, so
   where a step takes longer than 2 s the interval is one step.

Inputs are scikit-image's 512x512 'astronaut' photo and the studio's bundled 'swirls' style.

    python benchmarks/bench_studio.py --repeat 5 --steps 12
"""
from __future__ import annotations

import argparse
import io
import json
import statistics
import tempfile
import time
import urllib.request
import uuid


def multipart(fields: dict, files: list) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    out = io.BytesIO()
    for k, v in fields.items():
        out.write(f"--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n"
                  f"{v}\r\n".encode())
    for name, filename, payload in files:
        out.write(f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; "
                  f"filename=\"{filename}\"\r\nContent-Type: image/png\r\n\r\n".encode())
        out.write(payload + b"\r\n")
    out.write(f"--{boundary}--\r\n".encode())
    return out.getvalue(), f"multipart/form-data; boundary={boundary}"


def post_job(base: str, fields: dict, files: list) -> str:
    body, ctype = multipart(fields, files)
    req = urllib.request.Request(base + "api/jobs", data=body, method="POST",
                                 headers={"Content-Type": ctype})
    with urllib.request.urlopen(req) as r:
        return json.loads(r.read())["id"]


def stream(base: str, job_id: str):
    """Yield (event, job view) from a job's event stream until its end."""
    kind = None
    with urllib.request.urlopen(f"{base}api/jobs/{job_id}/events", timeout=600) as r:
        for raw in r:
            line = raw.decode().rstrip("\r\n")
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: "):
                yield kind, json.loads(line[6:])


def png(im) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def upload_to_result(base, content, style, size) -> float:
    t0 = time.perf_counter()
    jid = post_job(base, {"method": "adain", "options": json.dumps({"encoder": "small"}),
                          "size": str(size)},
                   [("content", "astronaut.png", content), ("style", "swirls.png", style)])
    last = None
    for kind, job in stream(base, jid):
        last = job
    if last["state"] != "done":
        raise SystemExit(f"job {jid} {last['state']}: {last['error']}")
    with urllib.request.urlopen(base + last["result_url"].lstrip("/")) as r:
        r.read()
    return time.perf_counter() - t0


def preview_intervals(base, content, style, size, steps):
    """[(seconds since the previous preview, scale message, step)] of a gatys job: a preview
    is new when the job's ``preview_url`` changes, which it does with each new image."""
    jid = post_job(base, {"method": "gatys", "size": str(size),
                          "controls": json.dumps({"steps": steps, "tol": 0})},
                   [("content", "astronaut.png", content), ("style", "swirls.png", style)])
    seen, last, out = None, None, []
    for kind, job in stream(base, jid):
        url = job["preview_url"]
        if job["state"] == "running" and url and url != seen:
            now = time.perf_counter()
            if last is not None:
                out.append((now - last, job["progress"]["message"], job["progress"]["step"]))
            seen, last = url, now
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--steps", type=int, default=5, help="gatys steps per scale")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--workers", type=int, default=None,
                    help="studio workers (default: one per core, as `brushwork serve`)")
    ap.add_argument("--fixed-threads", action="store_true",
                    help="give each job cores / workers torch threads whatever runs beside it "
                         "(default, as `brushwork serve`: the running jobs share the cores)")
    args = ap.parse_args()

    from PIL import Image
    from skimage import data

    from brushwork.studio.app import StudioConfig
    from brushwork.studio.catalog import _make_style
    from brushwork.studio.server import StudioThread, default_workers, thread_budget

    args.workers = args.workers or default_workers()
    threads = thread_budget()
    if args.fixed_threads:
        threads = max(1, threads // args.workers)
    content = png(Image.fromarray(data.astronaut()))
    style = png(_make_style("swirls"))
    with tempfile.TemporaryDirectory() as d:
        server = StudioThread(StudioConfig(data=d, workers=args.workers,
                                           threads=threads)).start()
        try:
            base = server.url
            warm = upload_to_result(base, content, style, args.size)
            runs = [upload_to_result(base, content, style, args.size)
                    for _ in range(args.repeat)]
            print(f"upload to result, {args.size} px adain --encoder small, "
                  f"{args.workers} worker(s), {threads} torch thread(s) shared"
                  f"{' (fixed)' if args.fixed_threads else ''}: first {warm:.2f} s (model "
                  f"load), then median {statistics.median(runs):.2f} s "
                  f"(min {min(runs):.2f}, max {max(runs):.2f}, n={len(runs)})")
            gaps = preview_intervals(base, content, style, args.size, args.steps)
        finally:
            server.stop()
    for gap, where, step in gaps:
        print(f"  preview at step {step:3d} ({where or 'one scale'}): {gap:.2f} s after the last")
    for where in dict.fromkeys(w for _, w, _ in gaps):
        g = [x for x, w, _ in gaps if w == where]
        print(f"gatys previews, {where or 'one scale'}: median interval "
              f"{statistics.median(g):.2f} s, max {max(g):.2f} s ({len(g)} intervals)")


if __name__ == "__main__":
    main()
