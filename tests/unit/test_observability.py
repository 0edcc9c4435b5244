"""StatusServer: /metrics, /healthz and /readyz on a real loopback port (port 0: the kernel's)."""

from __future__ import annotations

import json
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge

from scoring.observability import StatusServer


class Flag:
    def __init__(self, ok: bool, why: str) -> None:
        self.ok, self.why = ok, why

    def __call__(self) -> tuple[bool, str]:
        return self.ok, self.why


def get(port: int, path: str) -> tuple[int, str, bytes]:
    """(status, content type, body) of a GET; error statuses too."""
    url = f"http://127.0.0.1:{port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.headers["Content-Type"], response.read()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.headers["Content-Type"], error.read()


@pytest.fixture(scope="module")
def registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    decisions = Counter("fraudstream_test_decisions", "Decisions.", ["action"], registry=registry)
    decisions.labels(action="approve").inc(3)
    Gauge("fraudstream_test_lag", "Lag.", registry=registry).set(7)
    return registry


@pytest.fixture(scope="module")
def checks() -> tuple[Flag, Flag]:
    return Flag(True, "alive"), Flag(False, "starting")


@pytest.fixture(scope="module")
def server(registry: CollectorRegistry, checks: tuple[Flag, Flag]) -> Iterator[StatusServer]:
    healthy, ready = checks
    status = StatusServer(registry, "127.0.0.1", 0, healthy=healthy, ready=ready).start()
    yield status
    status.stop()


def test_metrics_are_prometheus_text(server: StatusServer) -> None:
    assert server.port > 0
    status, content_type, body = get(server.port, "/metrics")
    assert status == 200
    assert content_type.startswith("text/plain")
    text = body.decode()
    assert "# TYPE fraudstream_test_decisions_total counter" in text
    assert 'fraudstream_test_decisions_total{action="approve"} 3.0' in text
    assert "fraudstream_test_lag 7.0" in text


def test_health_and_readiness_follow_their_checks(
    server: StatusServer, checks: tuple[Flag, Flag]
) -> None:
    healthy, ready = checks
    try:
        _flip_checks(server, healthy, ready)
    finally:
        healthy.ok, healthy.why = True, "alive"
        ready.ok, ready.why = False, "starting"


def _flip_checks(server: StatusServer, healthy: Flag, ready: Flag) -> None:
    status, content_type, body = get(server.port, "/healthz")
    assert (status, content_type) == (200, "application/json")
    assert json.loads(body) == {"ok": True, "detail": "alive"}
    status, content_type, body = get(server.port, "/readyz")
    assert (status, content_type) == (503, "application/json")
    assert json.loads(body) == {"ok": False, "detail": "starting"}

    ready.ok, ready.why = True, "ready"
    healthy.ok, healthy.why = False, "no heartbeat for 30 s"
    assert get(server.port, "/readyz")[0] == 200
    assert json.loads(get(server.port, "/readyz")[2]) == {"ok": True, "detail": "ready"}
    status, _, body = get(server.port, "/healthz")
    assert status == 503
    assert json.loads(body) == {"ok": False, "detail": "no heartbeat for 30 s"}


@pytest.mark.parametrize("path", ["/", "/metric", "/healthz/extra", "/status"])
def test_unknown_paths_are_404(server: StatusServer, path: str) -> None:
    status, _, body = get(server.port, path)
    assert status == 404
    assert b"/metrics" in body


def test_stop_frees_the_port(registry: CollectorRegistry, checks: tuple[Flag, Flag]) -> None:
    healthy, ready = checks
    first = StatusServer(registry, "127.0.0.1", 0, healthy=healthy, ready=ready).start()
    port = first.port
    assert get(port, "/healthz")[0] == 200
    first.stop()
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=2):
        pass  # nothing listens any more
    second = StatusServer(registry, "127.0.0.1", port, healthy=healthy, ready=ready).start()
    try:
        assert second.port == port
        assert get(port, "/healthz")[0] == 200
    finally:
        second.stop()


def test_stop_without_start_returns(registry: CollectorRegistry, checks: tuple[Flag, Flag]) -> None:
    healthy, ready = checks
    status = StatusServer(registry, "127.0.0.1", 0, healthy=healthy, ready=ready)
    stopper = threading.Thread(target=status.stop, daemon=True)
    stopper.start()
    stopper.join(timeout=1.0)
    try:
        assert not stopper.is_alive()
    finally:
        status._server._BaseServer__is_shut_down.set()  # type: ignore[attr-defined]  # unblock
        stopper.join(timeout=1.0)
        status._server.server_close()
