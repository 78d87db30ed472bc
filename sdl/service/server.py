"""Run the service with uvicorn: in the foreground (`sdl serve`) or in a thread (tests,
benchmarks, notebooks)."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import uvicorn

from sdl.service.settings import ServiceSettings

#: the largest WebSocket message a client may send (it only sends "ping"); uvicorn's default is 16 MiB
WS_MAX = 64 * 1024


class LiveServer:
    """A real uvicorn server on ``host`` (a free port unless given) in a background thread.

    >>> with LiveServer(settings) as server:        # doctest: +SKIP
    ...     Client(server.url, server.admin_token).instruments()
    """

    def __init__(self, settings: ServiceSettings, *, host: str = "127.0.0.1", port: int = 0,
                 log_level: str = "warning"):
        from sdl.service.api import create_app

        self.settings = settings
        self.app = create_app(settings)
        self.service = self.app.state.service
        self.admin_token: str | None = self.app.state.initial_admin_token
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.host, self.port = self.sock.getsockname()[:2]
        config = uvicorn.Config(self.app, log_level=log_level, ws="websockets-sansio", lifespan="on",
                                ws_max_size=WS_MAX,
                                timeout_graceful_shutdown=5)
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._run, name="sdl-uvicorn", daemon=True)
        self.error: BaseException | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}"

    def _run(self) -> None:
        try:
            self.server.run(sockets=[self.sock])
        except BaseException as exc:  # noqa: BLE001 - reported by start()
            self.error = exc

    def start(self, timeout: float = 60.0) -> "LiveServer":
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if self.error is not None or not self._thread.is_alive():
                raise RuntimeError(f"the server did not start: {self.error!r}")
            if time.monotonic() > deadline:
                raise TimeoutError("the server did not start in time")
            time.sleep(0.02)
        return self

    def stop(self, timeout: float = 30.0) -> None:
        self.server.should_exit = True
        self._thread.join(timeout)
        try:
            self.sock.close()
        except OSError:  # pragma: no cover
            pass

    def __enter__(self) -> "LiveServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def serve_forever(settings: ServiceSettings, *, on_ready: Any = None, log_level: str = "info") -> None:
    """Run in the foreground until Ctrl-C (what `sdl serve` does)."""
    from sdl.service.api import create_app

    app = create_app(settings)
    if on_ready is not None:
        on_ready(app)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level=log_level, ws="websockets-sansio",
                ws_max_size=WS_MAX,
                timeout_graceful_shutdown=5)


def main(argv: list[str] | None = None) -> None:
    """``python -m sdl.service.server [--config FILE] [--host H] [--port P] [--store URL]``: the
    service in the foreground (what `sdl serve` does, without the CLI around it)."""
    import argparse
    import logging
    import warnings

    from sdl.service.settings import load_settings

    ap = argparse.ArgumentParser(prog="python -m sdl.service.server")
    ap.add_argument("--config")
    ap.add_argument("--host")
    ap.add_argument("--port", type=int)
    ap.add_argument("--store")
    ap.add_argument("--instruments")
    ap.add_argument("--log-level", default="warning")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    for name in ("bluesky", "ophyd", "ax", "botorch"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    settings = load_settings(args.config, host=args.host, port=args.port, store_url=args.store,
                             instruments=args.instruments)

    def ready(app) -> None:
        if app.state.initial_admin_token:
            print(f"admin token: {app.state.initial_admin_token}", flush=True)

    serve_forever(settings, on_ready=ready, log_level=args.log_level)


if __name__ == "__main__":  # pragma: no cover
    main()
