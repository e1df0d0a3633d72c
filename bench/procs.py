"""Child processes for the benchmarks: the emulator (``orchestrator emulator``) and drivers.

The emulator runs in its own process so its CPU never counts as the client's; the parent
reads the emulator's counters over loopback (``/_emulator/stats``) and its CPU time from
``/proc``. Everything here is synchronous: the benchmark parents only start, wait and read.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

import msgspec

from orchestrator.emulator import EmulatorStats

__all__ = [
    "EmulatorProcess",
    "child_command",
    "cores",
    "cpu_seconds",
    "fetch_stats",
    "free_port",
    "pin",
    "pinning_note",
    "requests_between",
    "reset_emulator",
    "run_child",
]

ROOT = Path(__file__).resolve().parent.parent
_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def cores() -> list[int]:
    """The CPUs this process may run on."""
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else [0]


def pin(pid: int, cpus: set[int] | None) -> bool:
    """Restrict ``pid`` to ``cpus`` (threads it starts later inherit it); False if impossible."""
    if not cpus or not hasattr(os, "sched_setaffinity"):
        return False
    try:
        os.sched_setaffinity(pid, cpus)
    except OSError:
        return False
    return True


def pinning_note(other: str) -> str:
    """How the benchmark placed the emulator and ``other`` on the CPUs, for a report."""
    cpus = cores()
    if len(cpus) < 2:
        return f"Only one CPU is usable: the emulator and {other} share it."
    return f"The emulator is pinned to CPU {cpus[-1]}, {other} to the others."


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a live process (all its threads), from ``/proc``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # utime and stime are fields 14 and 15 of stat(5); fields[0] here is field 3.
    return (int(fields[11]) + int(fields[12])) / _TICKS


def _internal(base_url: str, method: str, name: str) -> bytes:
    root = base_url.removesuffix("/").removesuffix("/v1")
    data = b"" if method == "POST" else None
    req = urllib.request.Request(f"{root}/_emulator/{name}", method=method, data=data)
    with urllib.request.urlopen(req, timeout=30) as resp:
        body: bytes = resp.read()
        return body


def fetch_stats(base_url: str) -> EmulatorStats:
    """The counters of the emulator serving ``base_url`` (``.../v1``)."""
    return msgspec.json.decode(_internal(base_url, "GET", "stats"), type=EmulatorStats)


def reset_emulator(base_url: str) -> None:
    """Make the emulator serving ``base_url`` forget every object and count."""
    _internal(base_url, "POST", "reset")


def requests_between(before: EmulatorStats, after: EmulatorStats, *, contains: str = "") -> int:
    """API requests counted between two snapshots (to routes containing ``contains``)."""
    return after.count(contains=contains or None) - before.count(contains=contains or None)


def child_command(module: str, *args: str) -> list[str]:
    """``python -m module args...`` with this interpreter."""
    return [sys.executable, "-m", module, *args]


def run_child(
    module: str,
    args: Sequence[str],
    *,
    stdin: Any = None,
    cpus: set[int] | None = None,
    timeout: float = 600,
) -> dict[str, Any]:
    """Run ``python -m module args`` to its end; its last stdout line is its JSON result.

    ``stdin`` is sent as JSON. Raises ``RuntimeError`` with the child's stderr if it fails.
    """
    proc = subprocess.Popen(
        child_command(module, *args),
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    pin(proc.pid, cpus)
    try:
        out, err = proc.communicate(json.dumps(stdin), timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise
    if proc.returncode != 0 or not out.strip():
        raise RuntimeError(f"{module} {' '.join(args)} failed ({proc.returncode}):\n{err[-4000:]}")
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


class EmulatorProcess:
    """``orchestrator emulator`` in a child process: ``with EmulatorProcess(think_delay=0.1)``.

    ``settings`` are emulator flags by field name (``think_delay=0.1`` -> ``--think-delay 0.1``);
    ``cpus`` pins the process (e.g. to one core).
    """

    def __init__(self, *, cpus: set[int] | None = None, **settings: float | int | str) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self._cpus = cpus
        self.pinned = False
        self._args = ["emulator", "--port", str(self.port)]
        for name, value in settings.items():
            self._args += ["--" + name.replace("_", "-"), str(value)]
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def pid(self) -> int:
        """The emulator's process id."""
        if self._proc is None:
            raise RuntimeError("the emulator is not running")
        return self._proc.pid

    def __enter__(self) -> Self:
        # A file, not a pipe: nobody reads the emulator's log while it runs. Closed on exit.
        self._log = tempfile.TemporaryFile()
        self._proc = subprocess.Popen(
            child_command("orchestrator.cli", "--log-level", "WARNING", *self._args),
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=self._log,
        )
        self.pinned = pin(self._proc.pid, self._cpus)
        deadline = time.monotonic() + 30
        while True:
            try:
                self.stats()
                return self
            except OSError:
                if self._proc.poll() is not None or time.monotonic() > deadline:
                    log = self.log()
                    self.__exit__(None, None, None)
                    raise RuntimeError(f"the emulator did not start:\n{log}") from None
                time.sleep(0.05)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log, self._log = self._log, None
        if log is not None:
            log.close()

    def log(self) -> str:
        """The end of what the emulator wrote to stderr so far."""
        if self._log is None:
            return ""
        self._log.seek(0)
        return self._log.read().decode(errors="replace")[-4000:]

    def stats(self) -> EmulatorStats:
        """What the emulator has counted so far."""
        return fetch_stats(self.base_url)

    def reset(self) -> None:
        """Forget every object and count."""
        reset_emulator(self.base_url)

    def cpu(self) -> float:
        """The emulator's CPU seconds so far."""
        return cpu_seconds(self.pid)
