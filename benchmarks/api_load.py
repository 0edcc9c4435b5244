"""The bank-facing API under open-loop load, beside a bare FastAPI endpoint (issue 5).

Everything on this machine at once: a local Kafka broker, one stream worker (``fraudstream
worker``), one API replica (``fraudstream api``), a bare FastAPI app served by uvicorn the same
way, and the load generator — a separate process with its own event loop.

* **Open loop.** Arrivals are a Poisson process at a fixed mean rate, drawn before the run; each
  request is sent at its scheduled time whether or not earlier ones were answered, and its latency
  is counted from the *scheduled* time (so a stalled server or a full connection pool shows up as
  latency, not as fewer requests: no coordinated omission). Each run has a warm-up (same rate,
  not counted) and a measured window.
* **The generator** is a small asyncio HTTP/1.1 client (keep-alive pool, LIFO reuse, at most
  ``--max-connections``), not httpx: on 2 shared cores httpx's own per-request CPU would be a large
  share of what is being measured. Errors: any non-2xx, a connection failure, or no answer within
  ``--timeout-s`` of the scheduled time.
* **Traffic**: the simulator's transactions (the 20,202-card world of stream_throughput.py, and its
  champion trained on the first two weeks). The first ``--history-days`` are replayed into Kafka
  first, shifted to end a minute ago, so cards have history; the load is the following
  transactions, in time order, each sent under its own bank's API key (bank01–03) with a run-unique
  transaction id and the send time as timestamp.
* **Per run**: offered and achieved rate, latency p50/p90/p99/p99.9/max from the scheduled send,
  error rate, the share of ``degraded: true`` answers (the stream missed the deadline; not an
  error), the actions, the stream's own ``latency_ms`` for the answers it decided, the 1-minute
  load average before the run (waiting up to 60 s for it to drop under 3), the CPU used by each
  process and by everything else on the machine during the run, and the API process's event-loop
  lag and garbage collections (the API runs as ``fraudstream api`` inside ``api_load.py _api``,
  which adds those two observers).
* **Stack warm-up.** Before the first measured run the API takes ``--stack-warmup-rate`` (500/s)
  for ``--stack-warmup-s`` (60 s), not measured: the broker is a JVM started a minute earlier, and
  its JIT compilers took 0.36 cores for the first 10 s of request traffic and ~0.1 for the next
  20 s (C2 compiling the produce, fetch and network paths; the history replay had warmed other
  paths), time taken from the processes being measured. A bank's broker has run for weeks. The
  warm-up's numbers are kept in the JSON (``stack_warmup``) and its summary printed.
* Rates climb until a target is saturated; then 500/s once more with the API answering only from
  committed decisions (``FRAUD_API__DECISIONS_ISOLATION=read_committed``, the alternative to the
  default read_uncommitted: docs/api.md), and once with a 200 ms deadline (the API restarted each
  time), to see the stream path without the fallback.

Writes results/api_load.{json,md,png} (``--name`` for another name).

    .venv/bin/python benchmarks/api_load.py          # 6-15 min, depending on the waits for the load
    .venv/bin/python benchmarks/api_load.py --rates 100,500 --seconds 10 --no-long-deadline  # quick
    .venv/bin/python benchmarks/api_load.py --report-only      # .md and .png again from the JSON
    .venv/bin/python benchmarks/api_load.py --rates 250,500,750,1000 --no-long-deadline \
        --api-gc-freeze --name api_load.gc-freeze  # diagnostic (the API freezes at start)
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import re
import resource
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
import zlib
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import orjson

ROOT = Path(__file__).resolve().parent
REPO = ROOT.parent
RESULTS = ROOT / "results"
CACHE = ROOT / ".cache"
BANKS = ("bank01", "bank02", "bank03")
LOAD_LIMIT = 3.0
LOAD_WAIT_S = 60.0
IDLE_REUSE_S = 4.0  # uvicorn closes keep-alive connections idle for 5 s
BARE_ANSWER = {"transaction_id": "bare", "action": "approve", "degraded": False, "latency_ms": 0.0}
ACTIONS = ("approve", "review", "decline")


def _free_ports(count: int) -> list[int]:
    from stream_throughput import free_ports

    return free_ports(count)


def serve_bare(port: int) -> None:
    """A minimal FastAPI app returning a constant JSON, run by uvicorn like ``fraudstream api``."""
    import uvicorn
    from fastapi import FastAPI

    app = FastAPI()

    @app.post("/v1/transactions")
    async def decide() -> dict[str, Any]:
        return BARE_ANSWER

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=10,
        log_config=None,
    )


# ------------------------------------------------------------------- the API, with a probe


def serve_api_probed(probe_out: str, argv: list[str]) -> None:
    """``fraudstream api`` itself, plus two observers written once a second to ``probe_out``
    (JSON lines): the event loop's lag (a 10 ms sleep, how late it wakes up) and every garbage
    collection of the process (generation, pause). They explain a tail the client sees: a loop
    that wakes up late answers late, deadline timers included."""
    import gc
    import runpy

    import uvicorn

    collections: list[tuple[int, float]] = []
    gc_started = [0.0]
    freeze = os.environ.get("API_LOAD_GC_FREEZE") == "1"  # a diagnostic: see main()

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            gc_started[0] = time.perf_counter()
        else:
            collections.append((info["generation"], (time.perf_counter() - gc_started[0]) * 1e3))

    async def monitor() -> None:
        lags: list[float] = []
        second = int(time.time())
        with open(probe_out, "a") as handle:
            while True:
                began = time.perf_counter()
                await asyncio.sleep(0.01)
                lags.append(round((time.perf_counter() - began - 0.01) * 1e3, 2))
                now = int(time.time())
                if now != second:
                    if freeze:
                        gc.freeze()
                    taken = collections[:]
                    del collections[: len(taken)]
                    handle.write(json.dumps({"t": second, "lag_ms": lags, "gc": taken}) + "\n")
                    handle.flush()
                    lags, second = [], now

    startup = uvicorn.Server.startup

    async def startup_with_monitor(self: Any, sockets: Any = None) -> None:
        await startup(self, sockets)
        asyncio.get_running_loop().create_task(monitor())

    uvicorn.Server.startup = startup_with_monitor  # type: ignore[method-assign]
    gc.callbacks.append(on_gc)
    sys.argv = ["fraudstream", *argv]
    runpy.run_module("fraudstream", run_name="__main__", alter_sys=True)


def _probe_summary(path: Path, began: float, ended: float) -> dict[str, Any]:
    lags: list[float] = []
    pauses: dict[int, list[float]] = {0: [], 1: [], 2: []}
    if path.exists():
        for line in path.read_text().splitlines():
            record = json.loads(line)
            if began <= record["t"] < ended:
                lags += record["lag_ms"]
                for generation, ms in record["gc"]:
                    pauses[generation].append(ms)
    lag = np.asarray(lags)
    return {
        "loop_lag_ms": _pct(lag),
        "loop_stalls_over_20ms": int((lag > 20).sum()),
        "loop_samples": int(lag.size),
        "gc": {
            f"gen{g}": {
                "count": len(ms),
                "total_ms": float(sum(ms)),
                "max_ms": float(max(ms)) if ms else 0.0,
            }
            for g, ms in pauses.items()
        },
    }


# --------------------------------------------------------------------------- the generator


def _rfc3339_ms(t: float) -> bytes:
    ms = int(t * 1000)
    second = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000))
    return f"{second}.{ms % 1000:03d}Z".encode()


class _Client(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection, one request at a time (no pipelining)."""

    def __init__(self, gen: _Generator) -> None:
        self.gen = gen
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.request = -1  # the request in flight, or -1
        self.last = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def send(self, i: int) -> None:
        self.request = i
        self.gen.write(self, i)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        header = bytes(self.buffer[:end]).lower()
        match = re.search(rb"content-length: *(\d+)", header)
        length = int(match.group(1)) if match else 0
        if len(self.buffer) < end + 4 + length:
            return
        body = bytes(self.buffer[end + 4 : end + 4 + length])
        del self.buffer[: end + 4 + length]
        i, self.request = self.request, -1
        if i >= 0:
            self.gen.answered(self, i, header, body)

    def connection_lost(self, exc: Exception | None) -> None:
        self.gen.lost(self)


class _Generator:
    """Open-loop load: sends request i at its scheduled time on an idle connection (LIFO), a new
    one (up to ``max_connections``), or queues it for the next connection that frees up; latency
    always counts from the scheduled time. No task or future per request: one protocol object per
    connection and a sweeper for timeouts keep the generator's own CPU low."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        self.loop = asyncio.get_running_loop()
        self.host, self.port = cfg["host"], cfg["port"]
        rows = orjson.loads(Path(cfg["bodies"]).read_bytes())
        rate, total = cfg["rate"], cfg["warmup"] + cfg["seconds"]
        rng = np.random.default_rng(cfg["seed"])
        arrivals = np.cumsum(rng.exponential(1.0 / rate, int(rate * total * 1.3) + 200))
        self.arrivals = arrivals[arrivals < total]
        n = self.n = len(self.arrivals)
        if n > len(rows):
            raise SystemExit(f"{n} arrivals but only {len(rows)} transactions")
        heads = {
            bank: (
                f"POST {cfg['path']} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                f"Authorization: Bearer {key}\r\nContent-Type: application/json\r\n"
                "Content-Length: "
            ).encode()
            for bank, key in cfg["keys"].items()
        }
        # Each body is split around its timestamp, which is the wall-clock time of sending.
        self.parts: list[tuple[bytes, bytes, bytes]] = []
        for bank, tx in rows[:n]:
            tx["timestamp"] = "@@TS@@"
            pre, post = orjson.dumps(tx).split(b"@@TS@@")
            self.parts.append((heads[bank], pre, post))
        self.deadline = self.arrivals + cfg["timeout_s"]  # relative to t0
        self.sent = np.full(n, np.nan)
        self.done = np.full(n, np.nan)
        self.status = np.full(n, -2, np.int16)  # -2 unresolved, 0 timeout, -1 connection error
        self.degraded = np.zeros(n, np.int8)
        self.action = np.full(n, -1, np.int8)
        self.server_ms = np.full(n, np.nan)
        self.stream_ms = np.full(n, np.nan)
        self.codes = {a: i for i, a in enumerate(ACTIONS)}
        self.max_connections = cfg["max_connections"]
        self.idle: list[_Client] = []
        self.busy: set[_Client] = set()
        self.queue: deque[int] = deque()
        self.open = self.peak = self.opened = 0
        self.resolved = 0
        self.finished = asyncio.Event()
        self.t0 = self.wall0 = 0.0

    # ---- requests
    def dispatch(self, i: int) -> None:
        now = self.loop.time()
        while self.idle:
            conn = self.idle.pop()
            if now - conn.last < IDLE_REUSE_S and conn.transport is not None:
                self.busy.add(conn)
                conn.send(i)
                return
            self._close(conn)
        self.queue.append(i)
        if self.open < self.max_connections:
            self._connect()

    def write(self, conn: _Client, i: int) -> None:
        head, pre, post = self.parts[i]
        now = self.loop.time()
        body = pre + _rfc3339_ms(self.wall0 + (now - self.t0)) + post
        assert conn.transport is not None
        conn.transport.write(head + str(len(body)).encode() + b"\r\n\r\n" + body)
        self.sent[i] = now - self.t0

    def answered(self, conn: _Client, i: int, header: bytes, body: bytes) -> None:
        if self.status[i] == -2:
            self.done[i] = self.loop.time() - self.t0
            code = int(header[9:12])
            self.status[i] = code
            if 200 <= code < 300:
                try:
                    decision = orjson.loads(body)
                    self.degraded[i] = bool(decision.get("degraded"))
                    self.action[i] = self.codes.get(decision.get("action"), -1)
                    if not self.degraded[i]:
                        self.stream_ms[i] = decision.get("latency_ms", np.nan)
                except orjson.JSONDecodeError:
                    self.status[i] = -1
                timing = re.search(rb"server-timing: *decide;dur=([0-9.]+)", header)
                if timing:
                    self.server_ms[i] = float(timing.group(1))
            self._resolve()
        if b"connection: close" in header:
            self._close(conn)
        else:
            self._free(conn)

    def _resolve(self) -> None:
        self.resolved += 1
        if self.resolved == self.n:
            self.finished.set()

    def _fail(self, i: int, status: int) -> None:
        if self.status[i] == -2:
            self.status[i] = status
            self._resolve()

    # ---- connections
    def _free(self, conn: _Client) -> None:
        conn.last = self.loop.time()
        self.busy.discard(conn)
        while self.queue:
            i = self.queue.popleft()
            if self.status[i] == -2:
                self.busy.add(conn)
                conn.send(i)
                return
        self.idle.append(conn)

    def _connect(self) -> None:
        self.open += 1
        self.opened += 1
        self.peak = max(self.peak, self.open)
        self.loop.create_task(self._open())

    async def _open(self) -> None:
        try:
            _transport, conn = await self.loop.create_connection(
                lambda: _Client(self), self.host, self.port
            )
        except OSError:
            self.open -= 1
            if self.queue:
                self._fail(self.queue.popleft(), -1)
                if self.queue and self.open < self.max_connections:
                    self._connect()
            return
        self._free(conn)

    def _close(self, conn: _Client) -> None:
        if conn.transport is not None:
            conn.transport.close()  # connection_lost does the bookkeeping

    def lost(self, conn: _Client) -> None:
        conn.transport = None
        self.open -= 1
        self.busy.discard(conn)
        if conn in self.idle:
            self.idle.remove(conn)
        if conn.request >= 0:
            self._fail(conn.request, -1)
            conn.request = -1
        if self.queue and self.open < self.max_connections:
            self._connect()

    async def sweep(self) -> None:
        """Every 20 ms: requests past their deadline are timeouts (their connection is closed:
        its answer, if any, would belong to a request it no longer carries)."""
        while not self.finished.is_set():
            await asyncio.sleep(0.02)
            now = self.loop.time() - self.t0
            for conn in list(self.busy):
                i = conn.request
                if i >= 0 and self.deadline[i] <= now:
                    self._fail(i, 0)
                    conn.request = -1
                    self._close(conn)
            while self.queue and self.deadline[self.queue[0]] <= now:
                self._fail(self.queue.popleft(), 0)

    async def run(self) -> dict[str, Any]:
        self.t0 = self.loop.time() + 0.5
        self.wall0 = time.time() + 0.5
        sweeper = self.loop.create_task(self.sweep())
        i = 0
        while i < self.n:
            now = self.loop.time() - self.t0
            while i < self.n and self.arrivals[i] <= now:
                self.dispatch(i)
                i += 1
            if i < self.n:
                await asyncio.sleep(max(0.0, self.arrivals[i] - (self.loop.time() - self.t0)))
        await self.finished.wait()
        await sweeper
        for conn in self.idle + list(self.busy):
            self._close(conn)
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return {
            "scheduled": self.arrivals,
            "sent": self.sent,
            "done": self.done,
            "status": self.status,
            "degraded": self.degraded,
            "action": self.action,
            "server_ms": self.server_ms,
            "stream_ms": self.stream_ms,
            "cpu_s": np.array(usage.ru_utime + usage.ru_stime),
            "connections": np.array([self.peak, self.opened]),
            "wall0": np.array(self.wall0),
        }


async def _generate(cfg: dict[str, Any]) -> dict[str, Any]:
    return await _Generator(cfg).run()


def generate(config_path: str) -> None:
    cfg = json.loads(Path(config_path).read_text())
    out = asyncio.run(_generate(cfg))
    np.savez(cfg["out"], **out)


# ------------------------------------------------------------------------------- the stack


def _cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _busy_cpu_seconds() -> float:
    """Busy CPU time of the whole machine (all cores), from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return (sum(values[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _get(url: str, timeout: float = 5.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, ""


def _wait_http(url: str, process: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url}: process exited; see {log}")
        try:
            if _get(url, 2)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{url} not ready after {timeout} s; see {log}")


def _metric(text: str, name: str, labels: dict[str, str] | None = None) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name) or line[len(name)] not in " {":
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split(" ")[0]))
        if all(found.get(k) == v for k, v in (labels or {}).items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def prepare(seed: int = 4, n: int = 1_000_000) -> tuple[Any, Any, Path]:
    """The simulated month and champion of stream_throughput.py (the same cache folder)."""
    from stream_throughput import prepare as prepare_stream  # imported late: the bare server
    # subprocess runs this file too and needs none of it

    return prepare_stream(n, seed)


@dataclass
class Proc:
    name: str
    process: subprocess.Popen[bytes]
    port: int
    log: Path
    probe: Path | None = None

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


def _spawn(name: str, argv: list[str], env: dict[str, str], work: Path, port: int) -> Proc:
    log = work / f"{name}.log"
    handle = open(log, "wb")  # noqa: SIM115 -- the child's
    process = subprocess.Popen(argv, env=env, stdout=handle, stderr=subprocess.STDOUT, cwd=REPO)
    return Proc(name, process, port, log)


# ------------------------------------------------------------------------------ one run


def _pct(values: np.ndarray) -> dict[str, float | None]:
    if values.size == 0:
        return {k: None for k in ("p50", "p90", "p99", "p99.9", "max")}
    out: dict[str, float | None] = {
        f"p{q:g}": float(np.percentile(values, q)) for q in (50, 90, 99, 99.9)
    }
    out["max"] = float(values.max())
    return out


def _wait_for_load() -> dict[str, float]:
    before = os.getloadavg()[0]
    waited = 0.0
    while os.getloadavg()[0] > LOAD_LIMIT and waited < LOAD_WAIT_S:
        time.sleep(5)
        waited += 5
    return {"load1_before": before, "load1_at_start": os.getloadavg()[0], "waited_s": waited}


def run_one(
    *,
    target: str,
    label: str,
    url_port: int,
    rate: float,
    warmup: float,
    seconds: float,
    rows: list[Any],
    keys: dict[str, str],
    tag: str,
    procs: dict[str, int],
    work: Path,
    args: dict[str, Any],
    worker_port: int | None,
    probe: Path | None = None,
) -> dict[str, Any]:
    load = _wait_for_load()
    bodies = work / f"bodies-{tag}.json"
    payload = []
    for bank, tx in rows:
        tx = dict(tx)
        tx["transaction_id"] = f"{tx['transaction_id']}-{tag}"
        payload.append((bank, tx))
    bodies.write_bytes(orjson.dumps(payload))
    out = work / f"out-{tag}.npz"
    config = {
        "host": "127.0.0.1",
        "port": url_port,
        "path": "/v1/transactions",
        "bodies": str(bodies),
        "rate": rate,
        "warmup": warmup,
        "seconds": seconds,
        "seed": zlib.crc32(tag.encode()),
        "keys": keys,
        "timeout_s": args["timeout_s"],
        "max_connections": args["max_connections"],
        "out": str(out),
    }
    config_path = work / f"gen-{tag}.json"
    config_path.write_text(json.dumps(config))
    before_worker = _get(f"http://127.0.0.1:{worker_port}/metrics")[1] if worker_port else ""
    api_metrics = f"http://127.0.0.1:{url_port}/metrics"
    before_api = _get(api_metrics)[1] if worker_port else ""
    cpu_before = {name: _cpu_seconds(pid) for name, pid in procs.items()}
    busy_before, wall_before = _busy_cpu_seconds(), time.monotonic()
    generator = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "_generate", str(config_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    wall = time.monotonic() - wall_before
    busy = _busy_cpu_seconds() - busy_before
    if generator.returncode != 0:
        raise RuntimeError(f"generator failed:\n{generator.stderr[-3000:]}")
    cpu = {name: _cpu_seconds(pid) - cpu_before[name] for name, pid in procs.items()}
    after_worker = _get(f"http://127.0.0.1:{worker_port}/metrics")[1] if worker_port else ""
    after_api = _get(api_metrics)[1] if worker_port else ""
    data = np.load(out)
    bodies.unlink()
    out.unlink()

    measured = data["scheduled"] >= warmup
    status = data["status"][measured]
    ok = (status >= 200) & (status < 300)
    latency = (data["done"] - data["scheduled"])[measured] * 1000.0
    n = int(measured.sum())
    in_window = (
        ok & (data["done"][measured] >= warmup) & (data["done"][measured] < warmup + seconds)
    )
    degraded = data["degraded"][measured][ok].astype(bool)
    actions = data["action"][measured][ok]
    generator_cpu = float(data["cpu_s"])
    cpu["generator"] = generator_cpu
    ours = sum(cpu.values())
    result: dict[str, Any] = {
        "target": target,
        "label": label,
        "rate_offered": rate,
        "rate_sent": n / seconds,
        "rate_achieved": float(in_window.sum()) / seconds,
        "requests": n,
        "ok": int(ok.sum()),
        "errors": {
            "non_2xx": int(((status > 0) & ~ok).sum()),
            "timeouts": int((status == 0).sum()),
            "connection": int((status == -1).sum()),
        },
        "status_counts": {
            str(k): int(v) for k, v in zip(*np.unique(status, return_counts=True), strict=True)
        },
        "error_rate": float(1.0 - ok.mean()) if n else None,
        "latency_ms": _pct(latency[ok]),
        "server_ms": _pct(
            data["server_ms"][measured][ok][~np.isnan(data["server_ms"][measured][ok])]
        ),
        "send_lag_ms": _pct(
            (data["sent"] - data["scheduled"])[measured][~np.isnan(data["sent"][measured])] * 1000.0
        ),
        "degraded_share": float(degraded.mean()) if degraded.size else None,
        "degraded": int(degraded.sum()),
        # When the tail happened: a steady trickle, or a few stalls (one stall of the worker or
        # broker shows as one busy second here)?
        "degraded_per_second": np.bincount(
            (data["scheduled"][measured][ok][degraded] - warmup).astype(np.int64),
            minlength=int(seconds),
        ).tolist(),
        "actions": {a: int((actions == i).sum()) for i, a in enumerate(ACTIONS)},
        # Reviews and declines wait for their reasons (TreeSHAP); approvals do not.
        "latency_by_action_ms": {a: _pct(latency[ok][actions == i]) for i, a in enumerate(ACTIONS)},
        "stream_latency_ms": _pct(data["stream_ms"][measured][ok][~degraded]),
        "connections_peak": int(data["connections"][0]),
        "connections_opened": int(data["connections"][1]),
        "load": load,
        "wall_s": wall,
        "cpu_cores": {name: seconds_ / wall for name, seconds_ in cpu.items()},
        "cpu_cores_others": max(busy - ours, 0.0) / wall,
        "cpu_cores_machine": busy / wall,
        "latency_sample": np.sort(latency[ok])[:: max(int(ok.sum()) // 4000, 1)].round(3).tolist(),
    }
    if probe is not None:
        began = float(data["wall0"]) + warmup
        result["api_probe"] = _probe_summary(probe, began, began + seconds)
    if worker_port:
        name = "fraudstream_stream_stage_duration_seconds"
        stages = {}
        for stage in ("features", "model", "reasons", "produce", "commit"):
            total = _metric(after_worker, f"{name}_sum", {"stage": stage}) - _metric(
                before_worker, f"{name}_sum", {"stage": stage}
            )
            count = _metric(after_worker, f"{name}_count", {"stage": stage}) - _metric(
                before_worker, f"{name}_count", {"stage": stage}
            )
            stages[stage] = total / count * 1000.0 if count else None
        batches = _metric(after_worker, "fraudstream_stream_batch_size_count") - _metric(
            before_worker, "fraudstream_stream_batch_size_count"
        )
        decided = _metric(after_worker, "fraudstream_stream_batch_size_sum") - _metric(
            before_worker, "fraudstream_stream_batch_size_sum"
        )
        transport = "fraudstream_decision_transport_seconds"
        delivered = _metric(after_api, f"{transport}_count") - _metric(
            before_api, f"{transport}_count"
        )
        result["decision_transport_mean_ms"] = (
            (_metric(after_api, f"{transport}_sum") - _metric(before_api, f"{transport}_sum"))
            / delivered
            * 1000.0
            if delivered
            else None
        )
        result["worker"] = {
            "stage_mean_ms_per_batch": stages,
            "batches": batches,
            "mean_batch": decided / batches if batches else None,
            "late_events": _metric(after_worker, "fraudstream_stream_late_events_total")
            - _metric(before_worker, "fraudstream_stream_late_events_total"),
        }
    p = result["latency_ms"]
    share = result["degraded_share"]
    print(
        f"[{label} {rate:,.0f}/s] achieved {result['rate_achieved']:,.0f}/s, "
        f"p50 {p['p50'] or float('nan'):.1f} p99 {p['p99'] or float('nan'):.1f} "
        f"p99.9 {p['p99.9'] or float('nan'):.1f} ms, errors {result['error_rate']:.2%}"
        + (f", degraded {share:.1%}" if target == "api" and share is not None else "")
        + f"; load {load['load1_before']:.2f}->{load['load1_at_start']:.2f} "
        f"(waited {load['waited_s']:.0f} s), others {result['cpu_cores_others']:.2f} cores",
        flush=True,
    )
    return result


def _saturated(result: dict[str, Any]) -> bool:
    return bool(
        (result["error_rate"] or 0) > 0.2 or result["rate_achieved"] < 0.8 * result["rate_offered"]
    )


# --------------------------------------------------------------------------------- reports


def _cell(value: float | None, fmt: str = "{:.1f}") -> str:
    return "—" if value is None else fmt.format(value)


def write_reports(results: dict[str, Any], name: str = "api_load") -> None:
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(results, indent=1))
    s = results["settings"]
    lines = [
        "# The API under open-loop load, beside a bare FastAPI endpoint",
        "",
        f"{results['machine']}; broker, worker, API, bare endpoint and load generator on the same "
        f"machine. Poisson arrivals; {s['warmup_s']:.0f} s warm-up + {s['seconds']:.0f} s "
        f"measured per run; latency from the scheduled send time to the full answer; errors = "
        f"non-2xx, connection errors, or no answer within {s['timeout_s']:.0f} s. Worker: "
        f"`FRAUD_STREAM__SOURCE_IDLE_MS={s['source_idle_ms']:g}`, {s['reasons_method']} reasons, "
        f"{s['partitions']} partitions. Run of {results['finished']}."
        + (
            " **Diagnostic run: the API process calls `gc.freeze()` once a second.**"
            if s.get("api_gc_freeze")
            else ""
        ),
        "",
        "| endpoint | offered/s | achieved/s | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | "
        "errors | degraded | load1 before (waited) | other jobs, cores |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    for r in results["runs"]:
        p = r["latency_ms"]
        degraded = (
            _cell(
                r["degraded_share"] * 100 if r["degraded_share"] is not None else None, "{:.1f} %"
            )
            if r["target"] == "api"
            else "—"
        )
        lines.append(
            f"| {r['label']} | {r['rate_offered']:,.0f} | {r['rate_achieved']:,.0f} | "
            f"{_cell(p['p50'])} | {_cell(p['p90'])} | {_cell(p['p99'])} | {_cell(p['p99.9'])} | "
            f"{_cell(p['max'])} | {r['error_rate'] * 100:.2f} % | {degraded} | "
            f"{r['load']['load1_before']:.2f} ({r['load']['waited_s']:.0f} s) | "
            f"{r['cpu_cores_others']:.2f} |"
        )
    lines += [
        "",
        "API runs in detail: the stream's own `latency_ms` (Kafka timestamp of the transaction to "
        "its decision computed) for the answers it decided in time, the API's server-side time "
        "(`Server-Timing`), the worker's mean Kafka-transaction commit per batch, actions, CPU "
        "(cores) per process during the run, and the API process's event-loop lag (how late a "
        "10 ms sleep wakes up) and full (gen2) garbage collections:",
        "",
        "| run | offered/s | stream p50 / p99 ms | API server p50 / p99 ms | commit ms | batch | "
        "approve / review / decline | CPU: API, worker, broker, generator | "
        "API loop lag p99 / max ms (stalls > 20 ms) | API GC gen2: count, max ms |",
        "|---|---:|---:|---:|---:|---:|---|---|---|---|",
    ]
    for r in results["runs"]:
        if r["target"] != "api":
            continue
        st, sv, w, c = r["stream_latency_ms"], r["server_ms"], r.get("worker", {}), r["cpu_cores"]
        a = r["actions"]
        lines.append(
            f"| {r['label']} | {r['rate_offered']:,.0f} | {_cell(st['p50'])} / {_cell(st['p99'])} "
            f"| {_cell(sv['p50'])} / {_cell(sv['p99'])} | "
            f"{_cell((w.get('stage_mean_ms_per_batch') or {}).get('commit'))} | "
            f"{_cell(w.get('mean_batch'))} | {a['approve']:,} / {a['review']:,} / "
            f"{a['decline']:,} | {c.get('api', 0):.2f}, {c.get('worker', 0):.2f}, "
            f"{c.get('broker', 0):.2f}, {c.get('generator', 0):.2f} | "
            + (
                f"{_cell(pr['loop_lag_ms']['p99'])} / {_cell(pr['loop_lag_ms']['max'])} "
                f"({pr['loop_stalls_over_20ms']}) | {pr['gc']['gen2']['count']}, "
                f"{pr['gc']['gen2']['max_ms']:.0f} |"
                if (pr := r.get("api_probe"))
                else "— | — |"
            )
        )
    lines += [
        "",
        "Bare endpoint CPU (cores) per run: "
        + ", ".join(
            f"{r['rate_offered']:,.0f}/s {r['cpu_cores'].get('bare', 0):.2f} "
            f"(generator {r['cpu_cores'].get('generator', 0):.2f})"
            for r in results["runs"]
            if r["target"] == "bare"
        ),
    ]
    by_action = [r for r in results["runs"] if r["target"] == "api" and "latency_by_action_ms" in r]
    if by_action:
        lines += [
            "",
            "Latency by action, p50 / p99 ms (reviews and declines wait for their reasons), and "
            "the mean transport of a stream decision from the worker producing it to the API "
            "having it (`fraudstream_decision_transport_seconds`): "
            + "; ".join(
                f"{r['label']} {r['rate_offered']:,.0f}/s: "
                + ", ".join(
                    f"{a} {_cell(p['p50'])} / {_cell(p['p99'])}"
                    for a, p in r["latency_by_action_ms"].items()
                )
                + f", transport {_cell(r.get('decision_transport_mean_ms'))}"
                for r in by_action
            ),
        ]
    idle = results.get("idle_cpu_cores") or {}
    if idle:
        lines += [
            "",
            "The idle stack (10 s before the first run), cores: "
            + ", ".join(f"{k} {v:.2f}" for k, v in idle.items())
            + " (machine: everything, other jobs included).",
        ]
    warm = results.get("stack_warmup")
    if warm:
        lat = warm["latency_ms"]
        lines += [
            "",
            f"Stack warm-up before the first run (not measured): {warm['rate_offered']:,.0f}/s "
            f"for {results['settings']['stack_warmup_s']:g} s, p50 {lat['p50']:.1f} ms, p99 "
            f"{lat['p99']:.1f} ms, degraded {(warm['degraded_share'] or 0) * 100:.1f} %.",
        ]
    (RESULTS / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(17, 4.8), width_ratios=[1.1, 1, 1])
    timeout_ms = results["settings"]["timeout_s"] * 1000
    styles = {"api": ("tab:red", "API (50 ms deadline)"), "bare": ("tab:blue", "bare FastAPI")}
    for target, (color, title) in styles.items():
        runs = [r for r in results["runs"] if r["target"] == target and r["label"] == title]
        x = [r["rate_offered"] for r in runs]
        for key, style in (("p50", "-o"), ("p99", "--s")):
            y = [r["latency_ms"][key] or np.nan for r in runs]
            axes[0].plot(x, y, style, color=color, label=f"{title} {key}")
        for r in runs:
            if (r["error_rate"] or 0) > 0.5:
                axes[0].plot([r["rate_offered"]], [timeout_ms], "x", color=color, ms=10)
                axes[0].annotate(
                    f"{r['error_rate']:.0%} errors\n(timeouts)",
                    (r["rate_offered"], timeout_ms),
                    textcoords="offset points",
                    xytext=(-80, -4),
                    fontsize=7,
                    color=color,
                )
    long = [r for r in results["runs"] if r["target"] == "api" and r["label"] != styles["api"][1]]
    for r in long:
        for key, marker in (("p50", "o"), ("p99", "s")):
            axes[0].plot(
                [r["rate_offered"]],
                [r["latency_ms"][key]],
                marker,
                color="tab:green",
                label=f"{r['label']} {key}",
            )
    for level in (10, 50):
        axes[0].axhline(level, color="grey", lw=0.8, ls=":")
        axes[0].annotate(
            f"{level} ms",
            (0.01, level),
            xycoords=("axes fraction", "data"),
            fontsize=7,
            color="grey",
            va="bottom",
        )
    axes[0].set(
        xscale="log",
        yscale="log",
        xlabel="offered requests/s (Poisson, log)",
        ylabel="latency from scheduled send, ms (log)",
        title="Latency under load (x: no answers in time)",
    )
    axes[0].legend(fontsize=7, loc="center right")
    api = [r for r in results["runs"] if r["target"] == "api"]
    names = [f"{r['rate_offered']:,.0f}/s\n{'200 ms' if r in long else '50 ms'}" for r in api]
    xs = np.arange(len(api))
    for offset, key, color, title in (
        (-0.2, "degraded_share", "tab:orange", "degraded answers, % of answers"),
        (0.2, "error_rate", "tab:red", "errors, % of requests"),
    ):
        values = [r[key] * 100 if r[key] is not None else np.nan for r in api]
        bars = axes[1].bar(xs + offset, np.nan_to_num(values), 0.4, color=color, label=title)
        axes[1].bar_label(
            bars,
            labels=["—" if np.isnan(v) else f"{v:.1f}" if v < 10 else f"{v:.0f}" for v in values],
            fontsize=7,
        )
    axes[1].set_xticks(xs, names, fontsize=8)
    axes[1].set(ylabel="%", title="API: degraded answers and errors (rate, deadline)")
    axes[1].legend(fontsize=8)
    parts = ("api", "worker", "broker", "generator", "bare")
    colors = ("tab:red", "tab:purple", "tab:brown", "tab:grey", "tab:blue")
    every = results["runs"]
    xs = np.arange(len(every))
    bottom = np.zeros(len(every))
    for part, color in zip(parts, colors, strict=True):
        cores = np.array([r["cpu_cores"].get(part, 0.0) for r in every])
        axes[2].bar(xs, cores, 0.7, bottom=bottom, color=color, label=part)
        bottom += cores
    others = np.array([r["cpu_cores_others"] for r in every])
    axes[2].bar(xs, others, 0.7, bottom=bottom, color="lightgrey", hatch="//", label="other jobs")
    axes[2].axhline(os.cpu_count() or 2, color="black", lw=0.8)
    labels = [
        f"{'A' if r['target'] == 'api' else 'B'}{r['rate_offered']:,.0f}"
        + ("*" if r in long else "")
        for r in every
    ]
    axes[2].set_xticks(xs, labels, fontsize=7, rotation=60)
    axes[2].set(
        ylabel="CPU cores during the run",
        title="Where the 2 cores went (A: API, B: bare; * 200 ms)",
    )
    axes[2].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(RESULTS / f"{name}.png", dpi=110)


# ------------------------------------------------------------------------------------ main


def main(
    rates: str = "100,250,500,750,1000,2000",
    seconds: float = 20.0,
    warmup: float = 5.0,
    stack_warmup_s: float = 60.0,
    stack_warmup_rate: float = 500.0,
    long_deadline_ms: float = 200.0,
    long_deadline_rate: float = 500.0,
    long_deadline: bool = True,
    committed_run: bool = True,
    deadline_ms: float = 50.0,
    source_idle_ms: float = 10.0,
    history_days: float = 2.0,
    timeout_s: float = 2.0,
    max_connections: int = 256,
    partitions: int = 3,
    report_only: bool = False,
    name: str = "api_load",
    api_gc_freeze: bool = False,
) -> None:
    """Run the load test (see the module docstring); --report-only rewrites the Markdown and the
    chart from results/<name>.json. --api-gc-freeze is a diagnostic: the API process moves every
    object that survived a second out of the garbage collector's reach (``gc.freeze()``), to show
    what its full collections cost."""
    if report_only:
        write_reports(json.loads((RESULTS / f"{name}.json").read_text()), name)
        return
    from api.security import hash_key
    from scoring.settings import Settings
    from stream.local_kafka import LocalKafka
    from stream.replay import replay
    from stream.topics import create_topics

    settings = Settings()
    rate_list = [float(r) for r in rates.split(",") if r.strip()]
    transactions, labels, registry = prepare()
    ts = transactions.column("timestamp").to_numpy().astype("datetime64[ms]").astype(np.int64)
    order = np.argsort(ts, kind="stable")
    transactions = transactions.take(order)
    ts = ts[order]
    split = int(np.searchsorted(ts, ts[0] + int(history_days * 86_400_000)))
    history = transactions.slice(0, split)
    end_ms = int(ts[split - 1])
    shift = timedelta(milliseconds=int(time.time() * 1000) - 60_000 - end_ms)
    import pyarrow as pa
    import pyarrow.compute as pc

    def shifted(table: Any, column: str) -> Any:
        i = table.schema.get_field_index(column)
        moved = pc.add(table.column(column), pa.scalar(shift, pa.duration("ms")))
        return table.set_column(i, column, moved.cast(table.schema.field(column).type))

    label_ms = labels.column("reported_at").to_numpy().astype("datetime64[ms]").astype(np.int64)
    history_labels = shifted(labels.filter(pa.array(label_ms <= end_ms)), "reported_at")
    history = shifted(history, "timestamp")
    load_runs = (
        list(rate_list)
        + ([long_deadline_rate] if committed_run else [])
        + ([long_deadline_rate] if long_deadline else [])
    )
    needed = int(sum(r * (seconds + warmup) * 1.1 + 500 for r in load_runs))
    if stack_warmup_s > 0:
        needed += int(stack_warmup_rate * stack_warmup_s * 1.1 + 500)
    pool = transactions.slice(split, needed)
    if pool.num_rows < needed:
        raise SystemExit(f"only {pool.num_rows} transactions after the history; need {needed}")
    fields = (
        "transaction_id",
        "card_id",
        "amount",
        "currency",
        "merchant_id",
        "terminal_id",
        "mcc",
        "country",
        "channel",
        "card_present",
        "customer_id",
    )
    columns = {f: pool.column(f).to_pylist() for f in (*fields, "bank_id")}
    rows = [
        (columns["bank_id"][i], {f: columns[f][i] for f in fields if columns[f][i] is not None})
        for i in range(pool.num_rows)
    ]
    keys = {bank: f"bench-key-{bank}-{uuid.uuid4().hex[:12]}" for bank in BANKS}
    started_at = time.monotonic()
    runs: list[dict[str, Any]] = []
    idle_cpu: dict[str, float] = {}
    stack_warmup: dict[str, Any] | None = None
    timings: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="fraudstream-apiload-") as tmp:
        work = Path(tmp)
        port, controller = _free_ports(2)
        local = settings.kafka.model_copy(
            update={
                "local_port": port,
                "local_controller_port": controller,
                "local_dir": work / "broker",
                "partitions": partitions,
            }
        )
        broker = LocalKafka(local)
        procs: list[Proc] = []
        try:
            t = time.monotonic()
            broker.up(timeout=180)
            timings["broker_up_s"] = time.monotonic() - t
            broker_pid = int((work / "broker" / "kafka.pid").read_text().strip())
            kafka = local.model_copy(
                update={"bootstrap_servers": broker.bootstrap, "topic_prefix": "load."}
            )
            create_topics(kafka)
            env = {
                **os.environ,
                "PYTHONPATH": str(REPO),
                "FRAUD_KAFKA__BOOTSTRAP_SERVERS": broker.bootstrap,
                "FRAUD_KAFKA__TOPIC_PREFIX": kafka.topic_prefix,
                "FRAUD_SCORING__REGISTRY": str(registry),
            }
            (worker_port,) = _free_ports(1)
            worker = _spawn(
                "worker",
                [
                    sys.executable,
                    "-m",
                    "fraudstream",
                    "worker",
                    "--instance",
                    "load-w1",
                    "--port",
                    str(worker_port),
                ],
                {
                    **env,
                    "FRAUD_STREAM__SOURCE_IDLE_MS": f"{source_idle_ms:g}",
                    "FRAUD_STREAM__STATE_DIR": str(work / "state"),
                    "FRAUD_STREAM__GROUP_ID": "load-workers",
                },
                work,
                worker_port,
            )
            procs.append(worker)
            t = time.monotonic()
            _wait_http(f"http://127.0.0.1:{worker_port}/readyz", worker.process, worker.log, 180)
            timings["worker_ready_s"] = time.monotonic() - t
            t = time.monotonic()
            replay(history, history_labels, kafka=kafka)
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline:
                text = _get(f"http://127.0.0.1:{worker_port}/metrics")[1]
                if _metric(text, "fraudstream_stream_events_total", {"direction": "out"}) >= split:
                    break
                time.sleep(1)
            else:
                raise RuntimeError("the worker did not decide the history in time")
            timings["history_decided_s"] = time.monotonic() - t
            print(
                f"history: {split:,} transactions decided in {timings['history_decided_s']:.0f} s",
                flush=True,
            )

            api_env = {
                **env,
                "FRAUD_API__API_KEYS": json.dumps({b: [hash_key(k)] for b, k in keys.items()}),
            }

            def start_api(deadline: float, isolation: str = "read_uncommitted") -> Proc:
                (api_port,) = _free_ports(1)
                probe = work / f"probe-{deadline:g}-{isolation}.jsonl"
                api = _spawn(
                    f"api-{deadline:g}-{isolation}",
                    [
                        sys.executable,
                        str(Path(__file__).resolve()),
                        "_api",
                        str(probe),
                        "api",
                        "--port",
                        str(api_port),
                        "--registry",
                        str(registry),
                    ],
                    {
                        **api_env,
                        "FRAUD_API__DEADLINE_MS": f"{deadline:g}",
                        "FRAUD_API__DECISIONS_ISOLATION": isolation,
                        "API_LOAD_GC_FREEZE": "1" if api_gc_freeze else "",
                    },
                    work,
                    api_port,
                )
                t = time.monotonic()
                _wait_http(f"http://127.0.0.1:{api_port}/readyz", api.process, api.log, 180)
                timings[f"api_{deadline:g}ms_{isolation}_ready_s"] = time.monotonic() - t
                api.probe = probe
                return api

            api = start_api(deadline_ms)
            procs.append(api)
            (bare_port,) = _free_ports(1)
            bare = _spawn(
                "bare",
                [sys.executable, str(Path(__file__).resolve()), "_bare", str(bare_port)],
                env,
                work,
                bare_port,
            )
            procs.append(bare)
            _wait_http(f"http://127.0.0.1:{bare_port}/healthz", bare.process, bare.log, 60)

            def pids() -> dict[str, int]:
                return {
                    "broker": broker_pid,
                    "worker": worker.process.pid,
                    "api": api.process.pid,
                    "bare": bare.process.pid,
                }

            # What the idle stack costs (consumers polling, timers), before any load.
            cpu_before = {name: _cpu_seconds(pid) for name, pid in pids().items()}
            busy_before, idle_began = _busy_cpu_seconds(), time.monotonic()
            time.sleep(10)
            idle_wall = time.monotonic() - idle_began
            idle_cpu = {
                name: (_cpu_seconds(pid) - cpu_before[name]) / idle_wall
                for name, pid in pids().items()
            }
            idle_cpu["machine"] = (_busy_cpu_seconds() - busy_before) / idle_wall
            print("idle stack, cores: " + ", ".join(f"{k} {v:.2f}" for k, v in idle_cpu.items()))

            common: dict[str, Any] = {
                "warmup": warmup,
                "seconds": seconds,
                "keys": keys,
                "work": work,
                "args": {"timeout_s": timeout_s, "max_connections": max_connections},
            }
            offset = 0
            if stack_warmup_s > 0:
                n = int(stack_warmup_rate * stack_warmup_s * 1.1 + 500)
                print(
                    f"stack warm-up: {stack_warmup_rate:g}/s for {stack_warmup_s:g} s, not measured"
                )
                stack_warmup = run_one(
                    target="api",
                    label="stack warm-up",
                    url_port=api.port,
                    rate=stack_warmup_rate,
                    rows=rows[:n],
                    tag=f"w{stack_warmup_rate:g}",
                    procs=pids(),
                    worker_port=worker_port,
                    probe=api.probe,
                    **{**common, "warmup": 0.0, "seconds": stack_warmup_s},
                )
                offset = n
            api_done = bare_done = False
            api_label = f"API ({deadline_ms:g} ms deadline)"
            for rate in rate_list:
                n = int(rate * (seconds + warmup) * 1.1 + 500)
                chunk = rows[offset : offset + n]
                offset += n
                if not bare_done:
                    result = run_one(
                        target="bare",
                        label="bare FastAPI",
                        url_port=bare.port,
                        rate=rate,
                        rows=chunk,
                        tag=f"b{rate:g}",
                        procs=pids(),
                        worker_port=None,
                        **common,
                    )
                    runs.append(result)
                    bare_done = _saturated(result)
                if not api_done:
                    result = run_one(
                        target="api",
                        label=api_label,
                        url_port=api.port,
                        rate=rate,
                        rows=chunk,
                        tag=f"a{rate:g}",
                        procs=pids(),
                        worker_port=worker_port,
                        probe=api.probe,
                        **common,
                    )
                    runs.append(result)
                    api_done = _saturated(result)

            def restarted_run(deadline: float, isolation: str, label: str, tag: str) -> None:
                """The API restarted with other settings, once more at ``long_deadline_rate``."""
                nonlocal api, offset
                api.stop()
                procs.remove(api)
                api = start_api(deadline, isolation)
                procs.append(api)
                n = int(long_deadline_rate * (seconds + warmup) * 1.1 + 500)
                chunk, offset = rows[offset : offset + n], offset + n
                runs.append(
                    run_one(
                        target="api",
                        label=label,
                        url_port=api.port,
                        rate=long_deadline_rate,
                        rows=chunk,
                        tag=f"{tag}{long_deadline_rate:g}",
                        procs=pids(),
                        worker_port=worker_port,
                        probe=api.probe,
                        **common,
                    )
                )

            if committed_run:  # the alternative side by side: answers from committed decisions
                restarted_run(
                    deadline_ms,
                    "read_committed",
                    f"API ({deadline_ms:g} ms deadline, read_committed)",
                    "c",
                )
            if long_deadline:
                restarted_run(
                    long_deadline_ms,
                    "read_uncommitted",
                    f"API ({long_deadline_ms:g} ms deadline)",
                    "l",
                )
        finally:
            for proc in reversed(procs):
                proc.stop()
            broker.down()
            for proc in procs:
                if proc.log.exists() and proc.process.returncode not in (0, None):
                    print(
                        f"--- {proc.name} exited {proc.process.returncode}:\n"
                        + "\n".join(proc.log.read_text(errors="replace").splitlines()[-20:])
                    )

    write_reports(
        {
            "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
            "finished": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "total_s": time.monotonic() - started_at,
            "settings": {
                "rates": rate_list,
                "seconds": seconds,
                "warmup_s": warmup,
                "stack_warmup_s": stack_warmup_s,
                "stack_warmup_rate": stack_warmup_rate,
                "deadline_ms": deadline_ms,
                "long_deadline_ms": long_deadline_ms,
                "source_idle_ms": source_idle_ms,
                "history_days": history_days,
                "history_transactions": split,
                "timeout_s": timeout_s,
                "max_connections": max_connections,
                "partitions": partitions,
                "reasons_method": settings.scoring.reasons_method,
                "api_gc_freeze": api_gc_freeze,
                "rate_limit_per_s_per_key": settings.api.rate_limit_per_s,
                "banks": list(BANKS),
                "load_limit": LOAD_LIMIT,
                "load_wait_s": LOAD_WAIT_S,
            },
            "setup_s": timings,
            "idle_cpu_cores": idle_cpu,
            "stack_warmup": stack_warmup,
            "runs": runs,
        },
        name,
    )


if __name__ == "__main__":
    if sys.argv[1:2] == ["_bare"]:
        serve_bare(int(sys.argv[2]))
    elif sys.argv[1:2] == ["_api"]:
        serve_api_probed(sys.argv[2], sys.argv[3:])
    elif sys.argv[1:2] == ["_generate"]:
        generate(sys.argv[2])
    else:
        import typer

        typer.run(main)
