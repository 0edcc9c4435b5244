"""Run the project's services as child processes: start them, wait for /readyz, stop every one.

``fraudstream up`` / ``demo`` start the real services (``fraudstream worker``, ``trainer``, ``api``)
as subprocesses, exactly as they run in production, each with its log in the run directory.

* Each child is the leader of its own session (process group). Ctrl-C in the terminal then reaches
  only the supervisor, which stops the children in order; and a stop signals the whole group, so
  whatever a service started itself (the C compiler the trainer runs) goes with it.
* Stopping is SIGTERM to the group (every service drains and exits 0 on it), then SIGKILL to the
  group after a grace period. A second Ctrl-C during the shutdown skips the remaining graces.
* Every pid is written to ``processes.json`` in the run directory as it starts, so a test (or an
  operator) can check afterwards that none is left. An ``atexit`` hook SIGKILLs any group still
  alive if the supervisor exits by a path that skipped :meth:`Supervisor.stop_all`.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

# The marker every process of a run inherits (see the module docstring of stack.py): with it, "no
# process left behind" is checkable by scanning /proc for the run's value.
RUN_MARKER = "FRAUDSTREAM_RUN"


class ServiceError(RuntimeError):
    """A service exited or did not become ready; the message ends with its log tail."""


@dataclass
class Service:
    """One ``fraudstream <verb>`` child process with its log file and HTTP port."""

    name: str
    argv: list[str]
    env: dict[str, str]
    port: int
    log: Path
    grace_s: float = 30.0
    process: subprocess.Popen[bytes] | None = None
    exit_code: int | None = None
    _log_handle: IO[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    def start(self) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self._log_handle = self.log.open("ab")
        self.process = subprocess.Popen(
            self.argv,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=self._log_handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # own process group: see the module docstring
        )

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def get(self, path: str, timeout: float = 2.0) -> tuple[int, bytes]:
        try:
            # S310: the URL is always http://127.0.0.1:<port> built here
            with urllib.request.urlopen(self.url + path, timeout=timeout) as response:  # noqa: S310
                return int(response.status), bytes(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, b""

    def wait_ready(self, deadline: float) -> None:
        """Until /readyz answers 200; raises ServiceError if the process exits or time runs out."""
        while True:
            if not self.running():
                raise ServiceError(f"{self.name} exited before it was ready:\n{self.tail()}")
            with contextlib.suppress(OSError):
                if self.get("/readyz")[0] == 200:
                    return
            if time.monotonic() > deadline:
                raise ServiceError(f"{self.name} not ready in time:\n{self.tail()}")
            time.sleep(0.25)

    def signal_group(self, signum: int) -> None:
        if self.process is None:
            return
        # The group outlives its leader while any member is alive; no group, nothing to do.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signum)

    def stop(self, hurry: _Hurry) -> int | None:
        """SIGTERM to the group, SIGKILL after the grace (or at once if ``hurry`` is set); then
        SIGKILL to the group again for any member that outlived the leader. Returns the exit
        code (negative: killed by that signal)."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.signal_group(signal.SIGTERM)
            deadline = time.monotonic() + self.grace_s
            while self.process.poll() is None and time.monotonic() < deadline and not hurry.set:
                time.sleep(0.05)
        self.signal_group(signal.SIGKILL)
        self.exit_code = self.process.wait()
        if self._log_handle is not None:
            self._log_handle.close()
        return self.exit_code

    def tail(self, lines: int = 30) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return f"(no log at {self.log})"
        return "\n".join(text.splitlines()[-lines:]) + f"\n(full log: {self.log})"


class _Hurry:
    """Set by a second Ctrl-C (or SIGTERM) during the shutdown: skip the remaining graces."""

    def __init__(self) -> None:
        self.set = False


class Shutdown(Exception):  # noqa: N818 -- a request, not an error
    """SIGTERM/SIGHUP to the supervisor: handled like Ctrl-C."""


def raise_on_termination() -> None:
    """SIGTERM and SIGHUP raise :class:`Shutdown` in the main thread, so they take the same
    clean-up path (``finally``) as Ctrl-C's KeyboardInterrupt."""

    def handler(signum: int, _frame: object) -> None:
        raise Shutdown(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGHUP, handler)


@dataclass
class Supervisor:
    """The services of one run, in start order; :meth:`stop_all` stops them in reverse."""

    run_dir: Path
    services: list[Service] = field(default_factory=list)
    extra: dict[str, object] = field(default_factory=dict)  # e.g. the broker's pid

    def __post_init__(self) -> None:
        atexit.register(self.kill_leftovers)

    @property
    def record_path(self) -> Path:
        return self.run_dir / "processes.json"

    def start(self, service: Service) -> Service:
        service.start()
        self.services.append(service)
        self.write_record()
        return service

    def write_record(self) -> None:
        record = {
            "supervisor_pid": os.getpid(),
            "services": [
                {"name": s.name, "pid": s.pid, "port": s.port, "log": str(s.log)}
                for s in self.services
            ],
            **self.extra,
        }
        tmp = self.record_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(record, indent=2) + "\n")
        tmp.replace(self.record_path)

    def check_alive(self) -> None:
        """Raise ServiceError if a service died while the run goes on."""
        for service in self.services:
            if service.process is not None and service.process.poll() is not None:
                raise ServiceError(
                    f"{service.name} exited with code {service.process.returncode}:\n"
                    f"{service.tail()}"
                )

    def stop_all(self, on_stop: Callable[[Service, int | None], None] | None = None) -> None:
        """Stop every service, last started first. Ctrl-C/SIGTERM meanwhile only hurries it."""
        hurry = _Hurry()

        def hurry_up(_signum: int, _frame: object) -> None:
            hurry.set = True

        in_main = _in_main_thread()
        previous = {}
        if in_main:
            for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                previous[signum] = signal.signal(signum, hurry_up)
        try:
            for service in reversed(self.services):
                code = service.stop(hurry)
                if on_stop is not None:
                    on_stop(service, code)
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def kill_leftovers(self) -> None:
        for service in self.services:
            service.signal_group(signal.SIGKILL)
            if service.process is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    service.process.wait(5)


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def service_argv(verb: str, *args: str) -> list[str]:
    """``python -m fraudstream <verb> ...`` with this interpreter (the virtualenv's)."""
    return [sys.executable, "-m", "fraudstream", verb, *args]
