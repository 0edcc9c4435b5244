"""The live terminal view of a running stack: scraped from the services' /metrics and from the
decisions the run reads back.

Each tick scrapes every service (``prometheus_client``'s text parser) and keeps the scrapes of the
last ``WINDOW_S`` seconds, so rates and latency percentiles describe *now*, not the average since
the start: histogram percentiles come from the difference of the bucket counts across the window
(linear inside a bucket, as PromQL's ``histogram_quantile``). On a terminal the view is a
``rich.live.Live`` table; otherwise (CI, a pipe) one plain line every few seconds.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from rich.table import Table

from fraudstream.commands.decision_log import DecisionLog
from fraudstream.commands.supervisor import Service
from fraudstream.commands.workload import ApiStats, WalkStats

WINDOW_S = 10.0
COST_KINDS = ("expected_fraud_loss", "review", "friction", "compute")


@dataclass(frozen=True)
class Scrape:
    """The samples of one /metrics page: (name, labels, value)."""

    samples: tuple[tuple[str, dict[str, str], float], ...]

    def value(self, name: str, **labels: str) -> float:
        """Sum over the series of ``name`` whose labels include ``labels``."""
        return sum(
            v
            for n, found, v in self.samples
            if n == name and all(found.get(k) == want for k, want in labels.items())
        )

    def label_values(self, name: str, label: str, *, positive: bool = True) -> list[str]:
        return sorted(
            {
                found[label]
                for n, found, v in self.samples
                if n == name and label in found and (v > 0 or not positive)
            }
        )

    def buckets(self, name: str) -> dict[float, float]:
        """Cumulative counts by upper bound, summed over series."""
        out: dict[float, float] = {}
        for n, found, v in self.samples:
            if n == f"{name}_bucket":
                bound = float(found["le"])
                out[bound] = out.get(bound, 0.0) + v
        return out


def scrape(service: Service) -> Scrape | None:
    from prometheus_client.parser import text_string_to_metric_families

    try:
        status, body = service.get("/metrics", timeout=2.0)
    except OSError:
        return None
    if status != 200:
        return None
    samples = tuple(
        (s.name, dict(s.labels), float(s.value))
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    )
    return Scrape(samples)


def histogram_quantile(
    now: dict[float, float], before: dict[float, float], q: float
) -> float | None:
    """The q-quantile of the observations between two scrapes of a histogram."""
    bounds = sorted(now)
    counts = [now[b] - before.get(b, 0.0) for b in bounds]
    if not counts or counts[-1] <= 0:
        return None
    rank = q * counts[-1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in zip(bounds, counts, strict=True):
        if count >= rank:
            if math.isinf(bound):
                return lower_bound  # above the last finite bucket: report its bound
            share = (rank - lower_count) / max(count - lower_count, 1e-12)
            return lower_bound + (bound - lower_bound) * share
        lower_bound, lower_count = bound, count
    return None


def _ms(seconds: float | None) -> str:
    return "–" if seconds is None else f"{seconds * 1e3:,.0f}"


def _pct(values: list[float] | np.ndarray, q: float) -> float | None:
    return float(np.percentile(values, q)) if len(values) else None


def _fmt_ms(value: float | None) -> str:
    return "–" if value is None else f"{value:,.0f}"


@dataclass
class Sources:
    """What the view reads: the services, the run's decisions and the workload's counters."""

    workers: list[Service]
    api: Service | None
    trainer: Service | None
    decisions: DecisionLog
    walk: Callable[[], WalkStats]
    api_stats: Callable[[], ApiStats | None]
    phase: Callable[[], str]


@dataclass
class LiveView:
    sources: Sources
    started: float = field(default_factory=time.monotonic)
    _history: deque[tuple[float, list[Scrape | None], Scrape | None, Scrape | None]] = field(
        default_factory=deque
    )
    figures: dict[str, str] = field(default_factory=dict)
    trainer_rounds: int = 0
    trainer_verdict: str = "no round yet"
    _promotions: float = 0.0
    _refusals: dict[str, float] = field(default_factory=dict)

    def tick(self) -> dict[str, str]:
        src = self.sources
        now = time.monotonic()
        workers = [scrape(w) for w in src.workers]
        api = scrape(src.api) if src.api is not None else None
        trainer = scrape(src.trainer) if src.trainer is not None else None
        self._history.append((now, workers, api, trainer))
        while len(self._history) > 2 and now - self._history[1][0] >= WINDOW_S:
            self._history.popleft()
        before = self._history[0]
        self.figures = self._figures(now, workers, api, trainer, before)
        return self.figures

    def _figures(
        self,
        now: float,
        workers: list[Scrape | None],
        api: Scrape | None,
        trainer: Scrape | None,
        before: tuple[float, list[Scrape | None], Scrape | None, Scrape | None],
    ) -> dict[str, str]:
        src = self.sources
        walk = src.walk()
        api_stats = src.api_stats()
        live = [w for w in workers if w is not None]
        window = src.decisions.window(WINDOW_S)
        span = min(WINDOW_S, max(now - self.started, 1e-9))
        latencies = [s.latency_ms for s in window]
        out: dict[str, str] = {"phase": f"{src.phase()} ({now - self.started:,.0f} s)"}
        sent = f"{walk.kafka_transactions:,} to Kafka"
        if api_stats is not None:
            sent += f", {api_stats.sent:,} to the API ({api_stats.in_flight} in flight)"
        out["transactions sent"] = f"{sent}; {walk.labels:,} labels"
        out["decisions (topic)"] = f"{src.decisions.count:,}"
        out["throughput"] = f"{len(window) / span:,.0f} decisions/s"
        out["stream latency p50 / p99"] = (
            f"{_fmt_ms(_pct(latencies, 50))} / {_fmt_ms(_pct(latencies, 99))} ms (in the worker)"
        )
        e2e_now = _sum_buckets(live, "fraudstream_stream_end_to_end_latency_seconds")
        e2e_before = _sum_buckets(
            [w for w in before[1] if w is not None], "fraudstream_stream_end_to_end_latency_seconds"
        )
        out["end-to-end p50 / p99"] = (
            f"{_ms(histogram_quantile(e2e_now, e2e_before, 0.5))} / "
            f"{_ms(histogram_quantile(e2e_now, e2e_before, 0.99))} ms (Kafka time to commit)"
        )
        if api_stats is not None:
            recent = [ms for at, ms in list(api_stats.recent) if at >= now - WINDOW_S]
            out["API latency p50 / p99"] = (
                f"{_fmt_ms(_pct(recent, 50))} / {_fmt_ms(_pct(recent, 99))} ms (client)"
            )
            server = _sum_buckets([api] if api else [], "fraudstream_request_duration_seconds")
            server_before = _sum_buckets(
                [before[2]] if before[2] else [], "fraudstream_request_duration_seconds"
            )
            out["API latency p50 / p99"] += (
                f"; {_ms(histogram_quantile(server, server_before, 0.5))} / "
                f"{_ms(histogram_quantile(server, server_before, 0.99))} ms (server)"
            )
            out["degraded"] = (
                f"{api_stats.degraded:,} of {api_stats.answered:,} API answers; "
                f"{api_stats.errors} errors"
            )
        total = sum(src.decisions.actions.values())
        out["decision mix"] = ", ".join(
            f"{action} {src.decisions.actions[action] / total:.1%}"
            for action in ("approve", "review", "decline")
        ) if total else "–"  # fmt: skip
        out["cost per transaction"] = _cost(live, api)
        versions = sorted(
            {v for w in live for v in w.label_values("fraudstream_model_info", "version")}
        )
        api_versions = api.label_values("fraudstream_model_info", "version") if api else []
        out["model"] = ", ".join(versions) or "–"
        if api is not None:
            out["model"] += f" (API: {', '.join(api_versions) or '–'})"
        lag = sum(w.value("fraudstream_consumer_lag") for w in live)
        late = max((w.value("fraudstream_stream_late_events_total") for w in live), default=0.0)
        dlq = sum(w.value("fraudstream_stream_dlq_total") for w in live)
        out["consumer lag"] = (
            f"{lag:,.0f} messages; {late:,.0f} late events, {dlq:,.0f} dead letters"
        )
        if trainer is not None:
            out["trainer"] = self._trainer(trainer)
        return out

    def _trainer(self, trainer: Scrape) -> str:
        promotions = trainer.value("fraudstream_trainer_promotions_total")
        refusals = {
            reason: trainer.value("fraudstream_trainer_refusals_total", reason=reason)
            for reason in trainer.label_values("fraudstream_trainer_refusals_total", "reason")
        }
        rounds = int(promotions + sum(refusals.values()))
        if rounds > self.trainer_rounds:
            # Which verdict is new: the count that moved since the last tick.
            moved = [r for r, n in refusals.items() if n > self._refusals.get(r, 0)]
            promoted = promotions > self._promotions
            self.trainer_verdict = "promoted" if promoted else "refused: " + ", ".join(moved)
            self.trainer_rounds = rounds
        self._promotions = promotions
        self._refusals = refusals
        clock = trainer.value("fraudstream_trainer_event_time_seconds")
        matured = trainer.value("fraudstream_trainer_window_rows", kind="matured")
        when = time.strftime("%Y-%m-%d %H:%M", time.gmtime(clock)) if clock else "–"
        return (
            f"{rounds} rounds, {promotions:.0f} promotions; last: {self.trainer_verdict}; "
            f"event time {when}, {matured:,.0f} matured rows"
        )

    def table(self) -> Table:
        table = Table(title="fraudstream", show_header=False, title_justify="left", expand=False)
        table.add_column(style="bold")
        table.add_column()
        for name, value in self.figures.items():
            table.add_row(name, value)
        return table

    def line(self) -> str:
        f = self.figures
        keys = (
            "phase", "decisions (topic)", "throughput", "stream latency p50 / p99",
            "API latency p50 / p99", "degraded", "consumer lag", "model", "trainer",
        )  # fmt: skip
        return " | ".join(f"{k}: {f[k]}" for k in keys if k in f)


def _sum_buckets(scrapes: list[Scrape], name: str) -> dict[float, float]:
    out: dict[float, float] = {}
    for s in scrapes:
        for bound, count in s.buckets(name).items():
            out[bound] = out.get(bound, 0.0) + count
    return out


def _cost(workers: list[Scrape], api: Scrape | None) -> str:
    """Every decision's cost (the worker counts the stream's, the API its fallbacks') over the
    number of decisions, by kind."""
    scrapes = [*workers, *([api] if api is not None else [])]
    decisions = sum(s.value("fraudstream_decisions_total") for s in scrapes)
    if not decisions:
        return "–"
    kinds = {
        k: sum(s.value("fraudstream_cost_usd_total", kind=k) for s in scrapes) for k in COST_KINDS
    }
    total = sum(kinds.values()) / decisions
    parts = ", ".join(
        f"{k.replace('expected_fraud_loss', 'fraud')} {v / decisions:.4g}" for k, v in kinds.items()
    )
    return f"${total:.4f} ({parts})"
