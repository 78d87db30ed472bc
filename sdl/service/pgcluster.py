"""A private, throwaway PostgreSQL cluster for tests and benchmarks.

``initdb`` into a temporary folder, trust authentication, listening on a free port of
127.0.0.1 only, ``fsync`` off (scratch data). PostgreSQL refuses to run as root, so when
this process is root the server runs as the ``postgres`` system user (Debian's packages
create it). ``restart()`` is a real ``pg_ctl restart``: every connection is cut.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

BIN_DIRS = [Path(p) for p in ("/usr/lib/postgresql/17/bin", "/usr/lib/postgresql/16/bin",
                              "/usr/lib/postgresql/15/bin", "/usr/lib/postgresql/14/bin")]


def pg_bin() -> Path | None:
    """The folder with initdb and pg_ctl, or None when PostgreSQL is not installed."""
    env = os.environ.get("SDL_PG_BIN")
    for d in ([Path(env)] if env else []) + BIN_DIRS:
        if (d / "initdb").exists() and (d / "pg_ctl").exists():
            return d
    found = shutil.which("initdb")
    return Path(found).parent if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PrivateCluster:
    def __init__(self, folder: str | Path | None = None, port: int | None = None):
        b = pg_bin()
        if b is None:
            raise RuntimeError("PostgreSQL is not installed (no initdb/pg_ctl found; set SDL_PG_BIN)")
        self.bin = b
        self.folder = Path(folder or tempfile.mkdtemp(prefix="sdl-pg-"))
        self.data = self.folder / "data"
        self.port = port or _free_port()
        self.as_root = os.geteuid() == 0
        self.started = False

    # ------------------------------------------------------------------ helpers
    def _run(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        cmd = [str(a) for a in args]
        if self.as_root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        out = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=timeout)
        if check and out.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({out.returncode}): {out.stderr.strip()[-2000:]}")
        return out

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def url_for(self, dbname: str) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{dbname}"

    # ---------------------------------------------------------------- lifecycle
    def start(self) -> "PrivateCluster":
        self.folder.mkdir(parents=True, exist_ok=True)
        if self.as_root:
            shutil.chown(self.folder, "postgres", "postgres")
        if not (self.data / "PG_VERSION").exists():
            self._run(self.bin / "initdb", "-D", self.data, "-U", "postgres", "-A", "trust", "-E", "UTF8",
                      "--no-sync")
        self._ctl("start")
        self.started = True
        return self

    def _ctl(self, action: str, *extra: str) -> None:
        opts = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.folder} -c fsync=off " \
               "-c synchronous_commit=off -c full_page_writes=off -c max_connections=300"
        args = [self.bin / "pg_ctl", "-D", self.data, "-l", self.folder / "log", "-w", "-t", "60", "-o", opts]
        if action in ("stop", "restart"):
            args += ["-m", "fast"]
        self._run(*args, action, *extra)
        if action in ("start", "restart"):
            self._wait_ready()

    def _wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.05)
        raise TimeoutError(f"PostgreSQL on port {self.port} did not come up")

    def restart(self) -> None:
        """``pg_ctl restart -m fast``: every client connection is cut."""
        self._ctl("restart")

    def stop(self) -> None:
        if self.started:
            self._ctl("stop")
            self.started = False

    def cleanup(self) -> None:
        try:
            self.stop()
        except Exception:  # noqa: BLE001 - best effort
            pass
        shutil.rmtree(self.folder, ignore_errors=True)

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres",
                             autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url_for(name)

    def __enter__(self) -> "PrivateCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.cleanup()
