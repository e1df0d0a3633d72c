"""A private PostgreSQL server for the tests: its own data directory, port and socket directory.

PostgreSQL refuses to run as root, so under root (CI) ``initdb`` and ``pg_ctl`` run as the
``postgres`` user the Debian package creates (``runuser``). Where no server binaries are
installed the tests that need one skip, saying so, except under ``CI``, where they fail: CI
installs PostgreSQL (``.ci/run``) and must run them.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

#: Where Debian puts the server binaries (not on PATH).
_DEBIAN_BINDIRS = "/usr/lib/postgresql/*/bin"


def bindir() -> Path | None:
    """The directory holding ``initdb`` and ``pg_ctl``, or None."""
    for candidate in sorted(glob.glob(_DEBIAN_BINDIRS), reverse=True):
        if Path(candidate, "initdb").exists():
            return Path(candidate)
    found = shutil.which("initdb")
    return Path(found).parent if found else None


def unavailable(reason: str) -> None:
    """Skip locally, fail in CI (where PostgreSQL must be there)."""
    if os.environ.get("CI"):
        pytest.fail(f"CI must run the PostgreSQL tests: {reason}", pytrace=False)
    pytest.skip(f"PostgreSQL tests skipped: {reason}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """``initdb`` + ``pg_ctl start`` in a fresh directory; ``stop()`` removes everything."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin = bin_dir
        self.root = Path(tempfile.mkdtemp(prefix="orch-pg-"))
        self.data = self.root / "data"
        self.sockets = self.root / "sockets"
        self.sockets.mkdir()
        self.port = _free_port()
        self.log = self.root / "server.log"
        self._as_user: list[str] = []
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            # Root: run the server as the unprivileged user the package created.
            self._as_user = ["runuser", "-u", "postgres", "--"]
            shutil.chown(self.root, "postgres")
            shutil.chown(self.sockets, "postgres")
        self.root.chmod(0o755)

    def dsn(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def _run(self, tool: str, *args: str) -> None:
        command = [*self._as_user, str(self.bin / tool), *args]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
        if done.returncode != 0:
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"{tool} failed: {done.stdout}{done.stderr}\n{log}")

    def init(self) -> None:
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "--no-sync")

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.sockets} -c listen_addresses=127.0.0.1"
            " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
            " -c max_connections=200"
        )
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def remove(self) -> None:
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def running() -> Iterator[Server]:
    """A started server, stopped and removed afterwards (skips or fails when absent)."""
    found = bindir()
    if found is None:
        unavailable("no initdb found (Debian: apt-get install postgresql)")
        raise AssertionError("unreachable")
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        unavailable("running as root without runuser")
    try:
        import procrastinate  # noqa: F401
        import psycopg  # noqa: F401
    except ImportError as exc:
        unavailable(f"the postgres extra is not installed ({exc.name})")
    server = Server(found)
    try:
        server.init()
        server.start()
        yield server
    finally:
        server.remove()
