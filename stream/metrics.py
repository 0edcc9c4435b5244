"""The worker's Prometheus metrics (names: deploy/helm/fraudstream/METRICS.md)."""

from __future__ import annotations

import contextlib
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# 0.5 ms .. 30 s: a decision takes milliseconds live, seconds while a worker catches up.
LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip
STAGE_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
)  # fmt: skip
BATCH_BUCKETS = (1, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 25000)
STAGES = ("decode", "features", "model", "reasons", "encode", "produce", "commit")
COST_KINDS = ("expected_fraud_loss", "review", "friction", "compute")


class WorkerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.events = Counter(
            "fraudstream_stream_events",
            "Messages through the worker: in = transactions consumed from the partitions it owns, "
            "out = decisions produced.",
            ["direction"],
            registry=r,
        )
        self.replicated = Counter(
            "fraudstream_stream_state_events",
            "Events applied to this worker's copy of the feature state (every partition).",
            ["kind"],
            registry=r,
        )
        self.batch_size = Histogram(
            "fraudstream_stream_batch_size",
            "Transactions decided per micro-batch.",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.stage = Histogram(
            "fraudstream_stream_stage_duration_seconds",
            "Time per processing stage of a micro-batch.",
            ["stage"],
            buckets=STAGE_BUCKETS,
            registry=r,
        )
        self.end_to_end = Histogram(
            "fraudstream_stream_end_to_end_latency",
            "From the transaction's Kafka timestamp to its decision being committed.",
            unit="seconds",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.dlq = Counter(
            "fraudstream_stream_dlq", "Messages sent to transactions-dlq.", registry=r
        )
        self.bad_labels = Counter(
            "fraudstream_stream_rejected_labels",
            "Label messages that could not be decoded or validated (logged, not applied).",
            registry=r,
        )
        self.unmatched_labels = Counter(
            "fraudstream_stream_unmatched_labels",
            "Labels of transactions the worker does not know (never seen or past retention).",
            registry=r,
        )
        self.resent = Counter(
            "fraudstream_stream_resent_transactions",
            "Transactions whose bank and id were seen before (resent): not decided or counted "
            "again.",
            registry=r,
        )
        self.late = Counter(
            "fraudstream_stream_late_events",
            "Events that reached the worker after their second was closed (applied late: online "
            "features may differ from offline for them).",
            registry=r,
        )
        self.lag = Gauge(
            "fraudstream_consumer_lag",
            "Messages of transactions not yet processed, per owned partition.",
            ["partition"],
            registry=r,
        )
        self.watermark = Gauge(
            "fraudstream_stream_watermark_timestamp_seconds",
            "Event time up to which every partition has been merged.",
            registry=r,
        )
        self.model_info = Gauge(
            "fraudstream_model_info", "The model version served (value 1).", ["version"], registry=r
        )
        self.shadow_model_info = Gauge(
            "fraudstream_shadow_model_info",
            "The model scoring in shadow beside the served one (value 1), if any.",
            ["version"],
            registry=r,
        )
        self.drift_psi = Gauge(
            "fraudstream_drift_psi",
            "Population stability index of a feature (and of the score) over recent traffic "
            "against the served model's training rows.",
            ["feature"],
            registry=r,
        )
        self.model_swaps = Counter(
            "fraudstream_model_swaps",
            "Model announcements handled, by outcome (swapped, refused, ignored).",
            ["outcome"],
            registry=r,
        )
        self.integrity_failures = Counter(
            "fraudstream_model_integrity_failures",
            "Model artifacts refused because their digest did not match.",
            registry=r,
        )
        self.decisions = Counter(
            "fraudstream_decisions", "Decisions made.", ["bank", "action"], registry=r
        )
        self.cost = Counter(
            "fraudstream_cost_usd", "Cost of the decisions in USD.", ["kind"], registry=r
        )
        self.cpu = Counter(
            "fraudstream_stream_cpu_seconds",
            "CPU time of the processing loop; divided by decisions it gives CPU per transaction.",
            registry=r,
        )
        self.checkpoints = Counter(
            "fraudstream_stream_checkpoints", "State checkpoints written.", registry=r
        )
        self.restores = Counter(
            "fraudstream_stream_restores",
            "State restores, by cause (start, rebalance, abort, membership, stalled) and source "
            "(checkpoint, rebuild).",
            ["cause", "source"],
            registry=r,
        )

        self.state_entities = Gauge(
            "fraudstream_feature_state_entities",
            "Keys whose feature state this worker holds (cards, merchants, terminals).",
            ["entity"],
            registry=r,
        )
        self.state_bytes = Gauge(
            "fraudstream_feature_state_bytes",
            "Bytes of the feature state arrays as allocated (the key maps come on top).",
            registry=r,
        )
        self.state_evictions = Counter(
            "fraudstream_feature_state_evictions",
            "Feature state rows freed: ttl = idle past the TTL (never changes a feature), "
            "capacity = least recently active cards forgotten at scoring.max_cards.",
            ["entity", "reason"],
            registry=r,
        )
        self.buffered = Gauge(
            "fraudstream_stream_buffered_messages",
            "Messages decoded and waiting in the event-time merge for a slower partition.",
            registry=r,
        )
        self.paused = Gauge(
            "fraudstream_stream_paused_partitions",
            "Input partitions paused because their buffered messages reached "
            "stream.max_buffered_messages (backpressure).",
            registry=r,
        )
        self.transaction_stalls = Counter(
            "fraudstream_stream_transaction_stalls",
            "Kafka transaction calls (init, send offsets, commit, abort) that timed out, hung or "
            "failed with a retriable error (the broker slow or away); each replaced the "
            "transactional producer, and the transaction was redone from a checkpoint.",
            registry=r,
        )
        for entity in ("card", "merchant", "terminal"):
            self.state_entities.labels(entity=entity).set(0)
            self.state_evictions.labels(entity=entity, reason="ttl")
        self.state_evictions.labels(entity="card", reason="capacity")
        # The labelled children the loop touches every batch, looked up once: ``labels()`` costs
        # a few µs a call, and the loop made ~17 calls a batch of ~4 transactions at 500/s.
        self.stage_of = {stage: self.stage.labels(stage=stage) for stage in STAGES}
        self.state_events_of = {k: self.replicated.labels(kind=k) for k in ("transaction", "label")}
        self.state_entities_of = {
            entity: self.state_entities.labels(entity=entity)
            for entity in ("card", "merchant", "terminal")
        }
        self.events_in = self.events.labels(direction="in")
        self.events_out = self.events.labels(direction="out")
        self.cost_of = {kind: self.cost.labels(kind=kind) for kind in COST_KINDS}
        self._decisions_of: dict[tuple[str, str], Any] = {}
        self._lag_of: dict[int, Any] = {}

    def decisions_of(self, bank: str, action: str) -> Any:
        """The ``fraudstream_decisions`` child of (bank, action); a few banks x 3 actions."""
        child = self._decisions_of.get((bank, action))
        if child is None:
            child = self.decisions.labels(bank=bank, action=action)
            self._decisions_of[bank, action] = child
        return child

    def lag_of(self, partition: int) -> Any:
        child = self._lag_of.get(partition)
        if child is None:
            child = self._lag_of[partition] = self.lag.labels(partition=str(partition))
        return child

    def drop_lag(self, partition: int) -> None:
        """Remove a partition's lag series (it moved to another worker). The kept child goes
        too: one removed from the gauge would be set without ever being exported again."""
        self._lag_of.pop(partition, None)
        with contextlib.suppress(KeyError):  # never exported
            self.lag.remove(str(partition))

    def serve_model(self, version: str) -> None:
        self.model_info.clear()
        self.model_info.labels(version=version).set(1)
