"""The HTTP side every long-running service shares: ``/metrics``, ``/healthz`` and ``/readyz``.

The worker and the trainer are not web services; a small WSGI app on a daemon thread (the standard
library's server, prometheus_client's exposition) is all they need, and the chart's probes and
ServiceMonitor expect the same three paths on every component. The API serves them from FastAPI.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app

Check = Callable[[], tuple[bool, str]]  # (ok, why) for /healthz and /readyz


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        return  # probes every few seconds would drown the service's own log


def _app(registry: CollectorRegistry, healthy: Check, ready: Check) -> Any:
    metrics = make_wsgi_app(registry)

    def check(fn: Check, start_response: Callable[..., Any]) -> Iterable[bytes]:
        ok, why = fn()
        body = json.dumps({"ok": ok, "detail": why}).encode()
        status = "200 OK" if ok else "503 Service Unavailable"
        start_response(status, [("Content-Type", "application/json")])
        return [body]

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            return metrics(environ, start_response)
        if path == "/healthz":
            return check(healthy, start_response)
        if path == "/readyz":
            return check(ready, start_response)
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found: /metrics, /healthz, /readyz\n"]

    return app


class StatusServer:
    """Serves the three paths on ``host:port`` from a daemon thread until :meth:`stop`."""

    def __init__(
        self, registry: CollectorRegistry, host: str, port: int, *, healthy: Check, ready: Check
    ) -> None:
        self._server: WSGIServer = make_server(
            host, port, _app(registry, healthy, ready), handler_class=_QuietHandler
        )
        self.port = self._server.server_port
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="status-http", daemon=True
        )

    def start(self) -> StatusServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread.is_alive():  # shutdown() waits for serve_forever: only if it runs
            self._server.shutdown()
        self._server.server_close()
