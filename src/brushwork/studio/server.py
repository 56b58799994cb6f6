"""Running the studio: checks of the address, the listening socket and uvicorn.

:func:`serve` runs it in the foreground (``brushwork serve``); :class:`StudioThread` runs it
in a background thread of the calling process (tests, notebooks).
"""
from __future__ import annotations

import os
import socket
import threading
from pathlib import Path

from ..errors import BrushworkError


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or ``localhost``) is this machine's loopback."""
    import ipaddress
    h = host.strip().strip("[]").lower()
    if h == "localhost":
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False


def check_host(host: str, token: str | None) -> None:
    """A studio on any address but the loopback needs a token."""
    if token is not None and not token.strip():
        raise BrushworkError("--token must not be empty")
    if not is_loopback(host) and not token:
        raise BrushworkError(f"--host {host} is reachable from other machines; give --token "
                             f"TOKEN (clients then send 'Authorization: Bearer TOKEN')")


def cpu_cores() -> int:
    """The cores this process may run on."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, cores or 1)


def default_workers() -> int:
    """One worker per core."""
    return cpu_cores()


def thread_budget() -> int:
    """The torch threads the running jobs share: ``OMP_NUM_THREADS`` where it is set, else one
    per core."""
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    return max(1, int(env)) if env.isdigit() else cpu_cores()


def listen(host: str, port: int) -> socket.socket:
    """A bound, listening socket (port 0: any free port); BrushworkError if it cannot be."""
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host.strip("[]"), port))
        sock.listen(128)
    except OSError as e:
        sock.close()
        raise BrushworkError(f"cannot listen on {host}:{port} ({e.strerror or e})") from None
    sock.set_inheritable(True)
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}/"


def _uvicorn_server(config):
    import uvicorn

    from .app import create_app
    app = create_app(config)
    cfg = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on",
                         timeout_graceful_shutdown=3, ws="none")
    return uvicorn.Server(cfg)


def check_data(data) -> Path:
    """The data folder exists (or can be made) and is writable."""
    path = Path(data).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise BrushworkError(f"{path}: cannot create the data folder ({e.strerror or e})") \
            from None
    if not path.is_dir():
        raise BrushworkError(f"{path}: not a folder")
    if not os.access(path, os.W_OK | os.X_OK):
        raise BrushworkError(f"{path}: the data folder is not writable")
    return path


def serve(config, sock: socket.socket) -> None:
    """Serve on ``sock`` until SIGINT/SIGTERM; running jobs then become ``interrupted``."""
    _uvicorn_server(config).run(sockets=[sock])


class StudioThread:
    """The studio in a background thread: ``start()`` returns once it answers; ``url`` is
    its address; ``stop()`` shuts it down (running jobs become ``interrupted``)."""

    def __init__(self, config, host: str = "127.0.0.1", port: int = 0):
        self.config = config
        self.sock = listen(host, port)
        self.url = url_of(self.sock)
        self.server = _uvicorn_server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]},
                                       name="studio-server", daemon=True)

    def start(self, timeout: float = 60.0) -> "StudioThread":
        self.thread.start()
        import time
        end = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > end:
                raise RuntimeError("the studio did not start")
            time.sleep(0.05)
        return self

    def stop(self, timeout: float = 30.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)
        self.sock.close()
