"""The API's Prometheus metrics (names: deploy/helm/fraudstream/METRICS.md), and the middleware
that times every request.

Labels never carry a card, transaction or merchant id: ``route`` is the route's template
(``/v1/decisions/{transaction_id}``), not the requested path.

Counting rule shared with the worker: ``fraudstream_decisions_total`` and
``fraudstream_cost_usd_total`` count a decision once, in the process that made it. The worker
counts the stream's decisions; the API counts only its own fallback decisions, so the sum over
services is the number of decisions. ``fraudstream_decision_cost_usd`` is a per-transaction
histogram of every decision the API answers with (stream or fallback): what a bank's transactions
cost, not a total to add to the worker's.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Buckets at the SLOs: 1 ms .. 2.5 s, dense around the default 50 ms deadline.
REQUEST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5)
TRANSPORT_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.5)
# USD per transaction: compute costs are ~1e-8, fraud losses up to thousands.
COST_BUCKETS = (1e-9, 1e-8, 1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 0.01, 0.1, 1.0, 10.0, 100.0, 1e3, 1e4)
COST_KINDS = {
    "expected_fraud_loss": "expected_fraud_loss",
    "review_cost": "review",
    "friction_cost": "friction",
    "compute_usd": "compute",
}


class _Cost(msgspec.Struct):
    expected_fraud_loss: float
    review_cost: float
    friction_cost: float
    compute_usd: float


class _Costed(msgspec.Struct):
    cost: _Cost


# Reads only the costs of a decision (~1 KB with its reasons), skipping the rest unparsed.
_COST_DECODER = msgspec.json.Decoder(_Costed)


class ApiMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.request_duration = Histogram(
            "fraudstream_request_duration",
            "Server-side duration of an API request.",
            ["route", "status"],
            unit="seconds",
            buckets=REQUEST_BUCKETS,
            registry=r,
        )
        self.decisions = Counter(
            "fraudstream_decisions",
            "Decisions made by this process (the API: its fallback decisions only).",
            ["bank", "action"],
            registry=r,
        )
        self.degraded = Counter(
            "fraudstream_degraded_decisions",
            "Decisions taken by the bank's fallback because the stream did not answer in time.",
            ["bank"],
            registry=r,
        )
        self.cost = Counter(
            "fraudstream_cost_usd",
            "Cost of the decisions this process made, in USD (the API: its fallback decisions).",
            ["kind"],
            registry=r,
        )
        self.decision_cost = Histogram(
            "fraudstream_decision_cost_usd",
            "Cost per transaction of the decisions the API answered with (stream or fallback).",
            ["kind"],
            buckets=COST_BUCKETS,
            registry=r,
        )
        self.superseded = Counter(
            "fraudstream_superseded_decisions",
            "Stream decisions replaced by a later one for the same transaction: the first one's "
            "Kafka transaction aborted and the worker recomputed it (read_uncommitted only). "
            "action_changed=true: the bank had been told a different action.",
            ["bank", "action_changed"],
            registry=r,
        )
        self.decision_transport = Histogram(
            "fraudstream_decision_transport",
            "From a stream decision's Kafka timestamp (the worker producing it) to this replica "
            "handing it to the request waiting for it: Kafka's share of a request's latency.",
            unit="seconds",
            buckets=TRANSPORT_BUCKETS,
            registry=r,
        )
        # Labelled children looked up once: labels() costs a lock and a dict lookup per call,
        # and these are observed on every answer.
        self._cost_histograms = [
            (field, self.decision_cost.labels(kind=kind)) for field, kind in COST_KINDS.items()
        ]
        self._request_histograms: dict[tuple[str, int], Any] = {}
        self.model_info = Gauge(
            "fraudstream_model_info", "The model version served (value 1).", ["version"], registry=r
        )
        self.integrity_failures = Counter(
            "fraudstream_model_integrity_failures",
            "Model artifacts refused because their digest did not match.",
            registry=r,
        )

    def serve_model(self, version: str | None) -> None:
        self.model_info.clear()
        if version is not None:
            self.model_info.labels(version=version).set(1)

    def count_fallback(self, bank: str, record: dict[str, Any]) -> None:
        self.decisions.labels(bank=bank, action=record["action"]).inc()
        self.degraded.labels(bank=bank).inc()
        for field, kind in COST_KINDS.items():
            self.cost.labels(kind=kind).inc(record["cost"][field])

    def observe_answer(self, decision: bytes) -> None:
        try:
            cost = _COST_DECODER.decode(decision).cost
        except msgspec.DecodeError:
            return  # a record without costs is the stream's business; never fail an answer
        for field, histogram in self._cost_histograms:
            histogram.observe(getattr(cost, field))

    def observe_request(self, route: str, status: int, seconds: float) -> None:
        key = (route, status)
        histogram = self._request_histograms.get(key)
        if histogram is None:  # a few dozen (route, status) pairs: each labelled child kept
            histogram = self.request_duration.labels(route=route, status=str(status))
            self._request_histograms[key] = histogram
        histogram.observe(seconds)


def route_template(scope: Scope) -> str:
    """``/v1/decisions/{transaction_id}`` for a matched route, ``unmatched`` otherwise."""
    route = scope.get("route")
    return str(getattr(route, "path_format", None) or getattr(route, "path", None) or "unmatched")


class RequestTiming:
    """ASGI middleware: times each request into ``fraudstream_request_duration_seconds`` and
    stamps ``scope["fraudstream.started"]`` (``time.monotonic()``: a decision's deadline counts
    from it, so time spent reading and validating the body is inside the deadline)."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        scope["fraudstream.started"] = time.monotonic()
        status = 500

        async def timed_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, timed_send)
        finally:
            self.metrics.observe_request(
                route_template(scope), status, time.perf_counter() - started
            )
