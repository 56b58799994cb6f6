"""`brushwork serve`: the web studio."""
from __future__ import annotations

import importlib.util
import os

from ..core import validate
from ..errors import BrushworkError

TOKEN_ENV = "BRUSHWORK_STUDIO_TOKEN"


def add_parser(sub) -> None:
    p = sub.add_parser("serve", help="start the web studio (a page and a JSON API)",
                       description="Serve the studio: a page to stylise photos and videos "
                       "in the browser, and the JSON API it uses. It listens on the loopback unless "
                       "--host names another address, which needs --token.")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1; any other needs --token)")
    p.add_argument("--port", type=validate.int_arg(0, 65535, "--port"), default=7860,
                   help="port (default 7860; 0 = any free port)")
    p.add_argument("--token", default=os.environ.get(TOKEN_ENV),
                   help=f"API token: clients send 'Authorization: Bearer TOKEN' or ?token= "
                        f"(default: ${TOKEN_ENV})")
    p.add_argument("--data", default="~/.brushwork/studio",
                   help="folder of the job database, uploads and results "
                        "(default ~/.brushwork/studio)")
    p.add_argument("--workers", type=validate.positive_int_arg, default=None,
                   help="jobs run at once (default: one per core)")
    p.add_argument("--max-upload", type=validate.float_arg(0.0, 1e5, low_open=True,
                                                           what="--max-upload"),
                   default=50.0, metavar="MB", help="largest request in MB (default 50)")
    p.add_argument("--max-queued", type=validate.positive_int_arg, default=8, metavar="N",
                   help="jobs one client may have queued or running (default 8)")
    p.add_argument("--max-pixels", type=validate.max_pixels_arg, default=None,
                   help="refuse uploaded images with more pixels (default: the CLI's guard)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("-q", "--quiet", action="store_true", help="no start-up line")
    p.set_defaults(func=cmd_serve)


def cmd_serve(args) -> int:
    from ..studio.server import check_data, check_host, default_workers, listen, url_of
    check_host(args.host, args.token)
    missing = [m for m in ("fastapi", "uvicorn", "python_multipart")
               if importlib.util.find_spec(m) is None]
    if missing:
        raise BrushworkError(f"the studio needs {', '.join(missing)} "
                             f"(pip install 'brushwork[studio]')")
    data = check_data(args.data)
    workers = args.workers or default_workers()
    from ..core.device import pick_device
    from ..studio.app import StudioConfig
    from ..studio.server import serve, thread_budget

    pick_device(args.device)  # an unknown device fails here, before the server starts
    config = StudioConfig(data=data, token=args.token, workers=workers, device=args.device,
                          threads=thread_budget(),
                          max_upload_mb=args.max_upload, max_queued=args.max_queued,
                          max_pixels=args.max_pixels)
    sock = listen(args.host, args.port)
    url = url_of(sock)
    if not args.quiet:
        print(f"brushwork studio on {url} ({workers} worker(s), data in {data}); Ctrl-C stops",
              flush=True)
    try:
        serve(config, sock)
    finally:
        sock.close()
    return 0
