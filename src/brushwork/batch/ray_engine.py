"""``--engine ray``: the same batch on Ray Data, for a cluster (or every core of one machine).

The files are listed into a dataset; ``map_batches`` runs :class:`StylizeWorker`, a callable
class, so each Ray actor loads the method and the styles once and then stylises file after
file. Workers write each output atomically where the driver's plan says (a folder every node
can reach: a shared file system); the driver appends each returned record to the manifest.
Actors that die are restarted and their files retried; as outputs are renamed into place whole,
a retried file is still written exactly once.

Without ``address`` a local Ray starts inside this process (nothing to set up); with it, the
run joins that cluster. Needs the optional extra: ``pip install 'brushwork[cluster]'``.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import time
from pathlib import Path

from ..core.protocol import Progress, emit
from ..errors import BrushworkError, ControlError
from . import manifest
from .plan import Item
from .runner import Config, Runner, Summary, pending, remove_partials


def _ray():
    try:
        import ray
        import ray.data  # noqa: F401  (Ray Data is its own extra)
    except ImportError:
        raise BrushworkError("--engine ray needs Ray Data: pip install 'brushwork[cluster]'") \
            from None
    return ray


class StylizeWorker:
    """One Ray actor: a :class:`Runner` built once, then one batch of rows per call."""

    def __init__(self, config: Config, out_dir: str, threads: int = 1):
        import torch

        torch.set_num_threads(max(1, threads))
        self.runner = Runner(config)
        self.out_dir = Path(out_dir)

    def __call__(self, batch: dict) -> dict:
        records = []
        for inp, name, out, sha in zip(batch["input"], batch["name"], batch["output"],
                                       batch["sha256"]):
            item = Item(Path(str(inp)), str(name), Path(str(out)))
            rec = self.runner.process(item, self.out_dir, str(sha) or None)
            rec["worker"] = os.getpid()
            records.append(json.dumps(rec))
        return {"record": records}


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail fast on a cluster address nothing listens at (Ray itself retries for minutes)."""
    if address == "auto":
        return
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, _, port = hostport.rpartition(":")
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout).close()
    except ValueError:
        raise ControlError(f"--address {address}: expected HOST:PORT (or ray://HOST:PORT)") \
            from None
    except OSError as e:
        raise ControlError(f"--address {address}: cannot reach a Ray cluster there "
                           f"({e.strerror or type(e).__name__})") from None


def connect(address: str | None, num_cpus: int | None):
    """Join the cluster at ``address`` or start a local Ray (``num_cpus`` CPUs; all if None)."""
    ray = _ray()
    if ray.is_initialized():
        return ray
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")  # Ray's C++ notices
    logging.getLogger("ray.data").setLevel(logging.ERROR)
    kw = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    if address:
        _check_reachable(address)
        try:
            ray.init(address=address, **kw)
        except Exception as e:  # Ray raises ConnectionError, RuntimeError, ...
            raise ControlError(f"--address {address}: cannot join a Ray cluster there "
                               f"({type(e).__name__})") from None
    else:
        ray.init(num_cpus=num_cpus, **kw)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # brushwork draws its own bar from the records
    ctx.print_on_execution_start = False
    return ray


def _rows(ds):
    """The dataset's rows; a failure inside Ray becomes one BrushworkError line."""
    it = iter(ds.iter_rows())
    while True:
        try:
            row = next(it)
        except StopIteration:
            return
        except Exception as e:  # Ray's own exception types
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise BrushworkError(f"the Ray run failed: {first[:300]}") from None
        yield row


def run(items: list[Item], out_dir, config: Config, *, resume: bool = False,
        num_cpus: int | None = None, address: str | None = None, callback=None,
        workers: int | None = None) -> Summary:
    """Stylise ``items`` on Ray. ``workers``: actors (default: ``num_cpus`` or every CPU the
    cluster has; one CPU each, or one GPU each when ``config.device`` is CUDA)."""
    out_dir = Path(out_dir)
    t0 = time.perf_counter()
    if address:
        _check_reachable(address)
    runner = Runner(config)  # checks method, options and styles before anything starts
    ray = connect(address, num_cpus)
    out_dir.mkdir(parents=True, exist_ok=True)
    remove_partials(items)
    todo, skipped = pending(items, out_dir, runner.recipe_for, resume=resume)
    summary = Summary(skipped=skipped)
    total = len(items)
    emit(callback, Progress(config.method, "file", skipped, total))
    if not todo:
        summary.seconds = time.perf_counter() - t0
        return summary
    gpu = str(config.device).startswith("cuda")
    n = workers or num_cpus or max(1, int(ray.cluster_resources().get("GPU" if gpu else "CPU", 1)))
    n = max(1, min(n, len(todo)))
    rows = [{"input": str(it.input), "name": it.name, "output": str(it.output),
             "sha256": sha or ""} for it, sha in todo]
    ds = ray.data.from_items(rows, override_num_blocks=len(rows))
    # Ray Data restarts actors that die and retries their batches (its defaults for actor pools)
    ds = ds.map_batches(StylizeWorker, fn_constructor_kwargs={"config": config,
                                                              "out_dir": str(out_dir)},
                        batch_size=1, compute=ray.data.ActorPoolStrategy(size=n),
                        num_cpus=0 if gpu else 1, num_gpus=1 if gpu else 0)
    seen = set()
    for row in _rows(ds):
        rec = json.loads(row["record"])
        if rec["name"] in seen:  # a retried file that came back twice
            continue
        seen.add(rec["name"])
        manifest.append(out_dir / manifest.FILE, rec)
        if rec["status"] == "done":
            summary.done += 1
            msg = f"{rec['name']}: done"
        else:
            summary.failed.append((rec["name"], rec["error"]))
            msg = f"{rec['name']}: failed: {rec['error']}"
        emit(callback, Progress(config.method, "file", skipped + len(seen), total, message=msg,
                                elapsed=time.perf_counter() - t0))
    summary.seconds = time.perf_counter() - t0
    return summary
