"""``--engine ray`` on a local Ray with 2 CPUs: the same outputs and manifest as the local engine,
a worker killed mid-run (every output exists exactly once and is valid), an unreachable
--address refused."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from brushwork.batch import manifest
from conftest import photo_folder

pytest.importorskip("ray.data", reason="Ray Data is not installed (pip install 'brushwork[cluster]')")

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "RAY_DEDUP_LOGS": "0"}


def _cli(args, **kw):
    return subprocess.run([sys.executable, "-m", "brushwork", "stylize", *args], env=ENV,
                          capture_output=True, text=True, timeout=300, **kw)


@pytest.fixture()
def photos(tmp_path):
    d, style = photo_folder(tmp_path, 4)
    (d / "broken.png").write_bytes(b"not an image")
    return d, style


def _pixels(path):
    return np.asarray(Image.open(path), dtype=np.int16)


def test_ray_engine_matches_the_local_engine(photos, tmp_path):
    d, style = photos
    flags = ["-s", str(style), "-m", "adain", "--encoder", "small", "--size", "32", "-q"]
    local = _cli([str(d), "-o", str(tmp_path / "local")] + flags)
    ray = _cli([str(d), "-o", str(tmp_path / "ray"), "--engine", "ray", "--num-cpus", "2"]
               + flags)
    assert local.returncode == ray.returncode == 2  # the broken file, in both
    assert "broken.png" in ray.stderr and ray.stderr.count("brushwork: error:") == 1
    a, b = manifest.read(tmp_path / "local" / manifest.FILE), \
        manifest.read(tmp_path / "ray" / manifest.FILE)
    assert sorted(a) == sorted(b) == ["broken.png", "p0.png", "p1.png", "p2.png", "p3.png"]
    workers = set()
    for name in a:
        assert a[name]["status"] == b[name]["status"]
        assert a[name]["recipe"] == b[name]["recipe"]
        if a[name]["status"] == "done":
            diff = np.abs(_pixels(tmp_path / "local" / name) - _pixels(tmp_path / "ray" / name))
            assert diff.max() <= 1, name
            workers.add(b[name]["worker"])
    assert workers  # the records name the actor process that made each file
    # --resume on Ray: nothing left to do
    again = _cli([str(d), "-o", str(tmp_path / "ray"), "--engine", "ray", "--resume"] + flags[:-1])
    assert "0 written, 4 already done, 1 failed" in again.stdout


def _worker_pids():
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    return [int(line.split()[0]) for line in out.splitlines() if "StylizeWorker" in line
            and "ps -eo" not in line]


def test_a_killed_worker_is_replaced_and_every_output_exists_once(tmp_path):
    d, style = photo_folder(tmp_path, 8)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "brushwork", "stylize", str(d), "-s", str(style), "-o",
           str(out), "--steps", "30", "--size", "48", "--precision", "fp32", "-q",
           "--engine", "ray", "--num-cpus", "2"]
    p = subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed = None
    deadline = time.time() + 240
    while time.time() < deadline and p.poll() is None:
        if len(manifest.read(out / manifest.FILE)) >= 1 and _worker_pids():
            killed = _worker_pids()[0]
            os.kill(killed, signal.SIGKILL)
            break
        time.sleep(0.1)
    stdout, stderr = p.communicate(timeout=300)
    assert killed is not None, "the run ended before a worker could be killed"
    assert p.returncode == 0, stderr
    recs = [json.loads(x) for x in (out / manifest.FILE).read_text().splitlines()]
    names = [r["name"] for r in recs]
    assert sorted(names) == [f"p{i}.png" for i in range(8)]  # each recorded exactly once
    assert all(r["status"] == "done" for r in recs)
    files = sorted(f.name for f in out.iterdir() if f.name != manifest.FILE)
    assert files == [f"p{i}.png" for i in range(8)]  # no temp files, no duplicates
    for r in recs:
        Image.open(out / r["output"]).load()
        from brushwork.core.weights import sha256_file
        assert sha256_file(out / r["output"]) == r["output_sha256"]


def test_an_unreachable_address_is_refused_and_writes_nothing(photos, tmp_path):
    d, style = photos
    r = _cli([str(d), "-s", str(style), "-o", str(tmp_path / "out"), "--engine", "ray",
              "--address", "127.0.0.1:9", "-m", "adain", "--encoder", "small"])
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("brushwork: error: --address")
    assert not (tmp_path / "out").exists()
