"""The trainer's Prometheus metrics (names: deploy/helm/fraudstream/METRICS.md)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from training.trainer_rounds import CANDIDATES, REFUSAL_REASONS, STAGES, VERDICTS, RoundResult

# A stage takes from well under a second (publish) to many minutes (a fresh fit on months of data).
STAGE_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
SCORECARD = (
    "average_precision",
    "card_precision_at_k",
    "cost_per_transaction",
    "decline_rate",
    "review_rate",
)
WINDOW_KINDS = ("joined", "matured", "fraud", "unjoined")


class TrainerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.last_success = Gauge(
            "fraudstream_trainer_last_success_timestamp",
            "Unix time of the last training round that reached a verdict: a promotion, or a "
            "refusal by the promotion rule (0 until the first).",
            unit="seconds",
            registry=r,
        )
        self.promotions = Counter(
            "fraudstream_trainer_promotions", "Challengers promoted to champion.", registry=r
        )
        self.refusals = Counter(
            "fraudstream_trainer_refusals",
            "Training rounds that ended without a promotion, by reason.",
            ["reason"],
            registry=r,
        )
        self.integrity_failures = Counter(
            "fraudstream_model_integrity_failures",
            "Model artifacts refused because their digest did not match.",
            registry=r,
        )
        self.stage = Histogram(
            "fraudstream_trainer_stage_duration_seconds",
            "Time per stage of a training round (fit_continued, fit_fresh, evaluate, register = "
            "compile and store, publish = load back, canary, alias, announcement).",
            ["stage"],
            buckets=STAGE_BUCKETS,
            registry=r,
        )
        self.candidate = Gauge(
            "fraudstream_trainer_candidate_metric",
            "The last round's holdout evaluation of the champion and each challenger.",
            ["candidate", "metric"],
            registry=r,
        )
        self.event_time = Gauge(
            "fraudstream_trainer_event_time",
            "The trainer's clock: event time of the transactions it has consumed.",
            unit="seconds",
            registry=r,
        )
        self.window = Gauge(
            "fraudstream_trainer_window_rows",
            "Transactions in the trainer's window: joined (transaction and feature vector), "
            "matured (usable), fraud (fraud label known), unjoined (waiting for the other half).",
            ["kind"],
            registry=r,
        )
        for reason in REFUSAL_REASONS:  # every series exists from the start (rate() needs it)
            self.refusals.labels(reason=reason)
        self.last_success.set(0)

    def round_done(self, result: RoundResult, now: float) -> None:
        for stage, seconds in result.seconds.items():
            if stage in STAGES:
                self.stage.labels(stage=stage).observe(seconds)
        self.candidate.clear()
        for candidate, card in result.scorecards.items():
            if candidate not in CANDIDATES:
                continue
            values = card.as_dict()
            for metric in SCORECARD:
                self.candidate.labels(candidate=candidate, metric=metric).set(values[metric])
        if result.integrity_failure:
            self.integrity_failures.inc()
        if result.outcome == "promoted":
            self.promotions.inc()
        elif result.outcome == "refused":
            self.refusals.labels(reason=result.reason or "error").inc()
        if result.outcome == "promoted" or (
            result.outcome == "refused" and result.reason in VERDICTS
        ):
            self.last_success.set(now)
