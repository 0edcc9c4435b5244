"""One typed settings object for every service, read from ``FRAUD_``-prefixed environment variables.

Sections mirror the Helm chart's values: ``FRAUD_KAFKA__BOOTSTRAP_SERVERS`` sets
``Settings().kafka.bootstrap_servers``. Services call :func:`get_settings` (cached); tests build
their own ``Settings(...)`` or clear the cache.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_HOME = Path.home() / ".cache" / "fraudstream"


class KafkaSettings(BaseModel):
    """Where the broker is, what the topics are called, and how the local broker runs."""

    bootstrap_servers: str | None = Field(
        default=None,
        description="host:port list of an existing cluster. Unset: the local broker started by "
        "`fraudstream kafka up` is used.",
    )
    topic_prefix: str = Field(default="", description="Prepended to every topic name.")
    partitions: int = Field(default=3, ge=1, description="Partitions of the data topics.")
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_ca_location: str | None = None
    fetch_wait_max_ms: int = Field(
        default=100,
        ge=1,
        le=500,
        description="How long the broker may hold a consumer's fetch while it has no new records "
        "(librdkafka fetch.wait.max.ms) for the worker, API and trainer consumers. New records "
        "end the wait at once, so this adds no latency; shorter only makes idle consumers poll "
        "the broker more often (10 ms: ~0.2-0.35 broker cores for two idle consumers, against "
        "~0.03 at 100 ms; docs/stream.md).",
    )

    # The local single-node broker (KRaft). Ports are loopback only.
    local_version: str = Field(
        default="3.9.2", description="Apache Kafka version from Maven Central."
    )
    local_port: int = 9092
    local_controller_port: int = 9093
    local_dir: Path = Field(
        default=DEFAULT_HOME / "broker",
        description="Data, config, log and pid of the local broker.",
    )
    jar_cache: Path = Field(
        default=DEFAULT_HOME / "kafka-jars", description="Broker jars fetched by mvn, per version."
    )
    local_heap: str = "-Xms256m -Xmx512m"

    def topic(self, name: str) -> str:
        return f"{self.topic_prefix}{name}"

    def effective_bootstrap(self) -> str:
        return self.bootstrap_servers or f"127.0.0.1:{self.local_port}"

    def client_config(self) -> dict[str, str | int | float | bool]:
        """librdkafka (confluent-kafka) client settings: where the cluster is and how to log in.

        Only the connection belongs here; each client adds its own tuning (acks, group id, ...).
        """
        config: dict[str, str | int | float | bool] = {
            "bootstrap.servers": self.effective_bootstrap(),
            "security.protocol": self.security_protocol,
            # TCP_NODELAY: every request of ours is small and latency-bound; Nagle's algorithm
            # (librdkafka's default) holds a small write back until the last one is acknowledged
            # (benchmarks/kafka_hop.py).
            "socket.nagle.disable": True,
        }
        optional = {
            "sasl.mechanism": self.sasl_mechanism,
            "sasl.username": self.sasl_username,
            "sasl.password": self.sasl_password.get_secret_value() if self.sasl_password else None,
            "ssl.ca.location": self.ssl_ca_location,
        }
        config.update({key: value for key, value in optional.items() if value is not None})
        return config


class S3Settings(BaseModel):
    """An S3-compatible bucket holding the model registry (scoring/registry_s3.py).

    Set (``FRAUD_SCORING__REGISTRY_S3__BUCKET``), it replaces the local registry directory, which
    then only caches downloaded artifacts. Without keys, boto3's default chain is used (IRSA,
    workload identity, ``~/.aws``).
    """

    bucket: str = Field(min_length=3, description="Bucket of the registry.")
    prefix: str = Field(
        default="fraudstream/registry",
        description="Key prefix of the registry inside the bucket ('' for the bucket's root).",
    )
    endpoint_url: str | None = Field(
        default=None, description="Endpoint of the object store (MinIO, Ceph...); unset: AWS S3."
    )
    region: str | None = None
    access_key_id: SecretStr | None = None
    secret_access_key: SecretStr | None = None


class ScoringSettings(BaseModel):
    """Model runtime, decision policy and cost accounting."""

    registry: Path = Field(default=Path("registry"), description="Model registry directory.")
    registry_s3: S3Settings | None = Field(
        default=None,
        description="The registry in an S3-compatible bucket instead of a directory; `registry` "
        "is then the local cache of downloaded artifacts.",
    )
    model_ref: str = Field(default="champion", description="Alias or version to serve.")
    review_cost: float = Field(default=5.0, ge=0, description="Cost of one manual review.")
    review_miss_rate: float = Field(
        default=0.1, ge=0, le=1, description="Share of fraud that a manual review still misses."
    )
    friction_share: float = Field(
        default=0.02,
        ge=0,
        le=1,
        description="Cost of declining a genuine customer, share of amount.",
    )
    cpu_second_usd: float = Field(
        default=0.0000134, ge=0, description="Price of one CPU-second (≈ $0.048 per vCPU-hour)."
    )
    max_reasons: int = Field(default=5, ge=1, le=20)
    reasons_method: Literal["shap", "path"] = Field(
        default="shap",
        description="How reasons are computed. shap: exact TreeSHAP (LightGBM pred_contrib's "
        "values, computed by scoring/tree_shap.py), ~2 ms per explained row on a 343-tree model. "
        "path: decision-path contributions, an exact decomposition of the raw score but not "
        "Shapley values, ~20 µs per row.",
    )
    max_cards: int | None = Field(
        default=10_000_000,
        ge=1,
        description="Most cards whose feature state is held at once (the worker, `score-log` and "
        "`train` must agree: it changes features). Beyond it, when a second begins, the least "
        "recently active cards are forgotten (1/16 of the cap at a time) and counted in "
        'fraudstream_feature_state_evictions_total{reason="capacity"}. ~0.85 KB per card at 10M '
        '(docs/stream.md, "Memory bounds"); null: no cap, only the 180-day idle expiry.',
    )
    banks: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="Per-bank policy overrides as JSON: {bank_id: {review_cost, friction_share, "
        "max_amount, allow_cards, block_cards, block_merchants, block_countries}}.",
    )


class ApiSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = 8000
    deadline_ms: float = Field(default=50.0, gt=0, description="Default per-bank deadline.")
    deadline_margin_ms: float = Field(
        default=2.0,
        ge=0,
        description="The fallback decides this long before the bank's deadline, so that its "
        "answer (encoded and written) is out by the deadline rather than just after it.",
    )
    producer_linger_ms: float = Field(
        default=5.0,
        ge=0,
        le=50,
        description="How long the API's Kafka producer waits to put more transactions into one "
        "produce request (librdkafka linger.ms). Longer: fewer requests for the broker and "
        "larger batches for the worker (less CPU under load), at up to this much latency per "
        "transaction. 5 ms rather than 1: fewer produce requests and a lower p99 at 500 "
        "requests/s on a busy 2-core host (benchmarks/README.md, 'Session 8').",
    )
    max_batch: int = Field(default=100, ge=1)
    max_body_bytes: int = Field(default=1_000_000, ge=1024)
    api_keys: SecretStr | None = Field(
        default=None, description="JSON {bank_id: [sha256 hex of key, ...]}; no working default."
    )
    tokenization_key: SecretStr | None = Field(
        default=None,
        description="Card-number tokenization (scoring/tokenize.py, docs/api.md): a secret of at "
        'least 32 characters (key id k1), or JSON {"active": "<key id>", "keys": '
        '{"<key id>": "<secret>", ...}} for rotation. Set: `card_number` is accepted and '
        "replaced by an HMAC token at once. Unset: `card_number` is refused (in development the "
        "public development key tokenizes). No working default.",
    )
    development: bool = Field(
        default=False,
        description="Development only: without api_keys, accept the public placeholder key "
        "`fraudstream-dev-key` for bank `dev-bank`. Without keys and without this flag the API "
        "refuses to start.",
    )
    rate_limit_per_s: float = Field(
        default=1000.0, gt=0, description="Requests (batch: transactions) per second per API key, "
        "per API replica (token bucket).",
    )  # fmt: skip
    rate_limit_burst: int = Field(
        default=2000, ge=1, description="Token-bucket size per API key and replica."
    )
    decision_window_s: float = Field(
        default=3600.0,
        gt=0,
        description="How long each replica keeps decisions and idempotency records in memory, "
        "and how far back it reads `decisions` when it starts.",
    )
    max_stored_decisions: int = Field(
        default=100_000,
        ge=100,
        description="Most decisions kept in memory per replica (~1.5 KB each), whatever their age.",
    )
    max_pending_reviews: int = Field(
        default=50_000, ge=10, description="Most decisions kept in the review queue per replica."
    )
    decisions_isolation: Literal["read_uncommitted", "read_committed"] = Field(
        default="read_uncommitted",
        description="How the API reads `decisions` to answer requests. read_uncommitted answers "
        "as soon as the worker has produced a decision, without waiting for its Kafka transaction "
        "to commit (the commit is most of the stream path's latency); a decision whose "
        "transaction then aborts is recomputed by the worker from the same state and replaces it "
        "(docs/api.md, 'Answering before the commit'). read_committed waits for the commit.",
    )


class TrainingSettings(BaseModel):
    """Offline training and the incremental trainer (``fraudstream trainer``, docs/training.md)."""

    seed: int = 7
    label_maturity_days: float = Field(default=30.0, gt=0)
    window_days: float = Field(default=60.0, gt=0)
    retrain_every_labels: int = Field(default=5000, ge=1)
    promote_margin: float = Field(default=0.005, ge=0)
    retrain_interval_hours: float = Field(
        default=24.0,
        ge=0,
        description="Retrain when the maturity horizon moved this many hours of event time since "
        "the last round, even with fewer than retrain_every_labels new matured labels; 0: only by "
        "count.",
    )
    eval_days: float = Field(
        default=7.0,
        gt=0,
        description="Length of the holdout: the most recent matured days, never trained on, on "
        "which challengers and the champion are compared. Must be shorter than window_days.",
    )
    min_eval_frauds: int = Field(
        default=30, ge=1, description="Fewer frauds in the holdout: no decision (too_few_labels)."
    )
    card_precision_k: int = Field(
        default=100, ge=1, description="k of card precision@k in the holdout evaluation."
    )
    max_trees: int = Field(
        default=1000, ge=1, description="Most trees of a fresh challenger (early stopping picks)."
    )
    continue_trees: int = Field(
        default=200,
        ge=1,
        description="Most trees added to the champion by the continued-boosting challenger.",
    )
    max_cost_increase: float = Field(
        default=0.0,
        ge=0,
        description="Guardrail: relative increase of the realised cost per transaction on the "
        "holdout that a challenger may have over the champion.",
    )
    max_card_precision_drop: float = Field(
        default=0.02,
        ge=0,
        description="Guardrail: drop of card precision@k (absolute) a challenger may have.",
    )
    max_decline_rate_increase: float = Field(
        default=0.02,
        ge=0,
        description="Guardrail: increase of the share of declined holdout transactions (absolute, "
        "0.02 = 2 points) a challenger may cause. A better model often declines more (the policy "
        "minimises cost); this stops pathological jumps.",
    )
    max_review_rate_increase: float = Field(
        default=0.01,
        ge=0,
        description="Guardrail: increase of the share of reviewed holdout transactions (absolute; "
        "analysts' capacity).",
    )
    num_threads: int = Field(
        default=1,
        ge=1,
        description="LightGBM threads. 1 on shared hosts: spinning OpenMP threads cost more than "
        "they give (docs/scoring.md).",
    )
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8002, description="The trainer's /metrics, /healthz, /readyz.")


class StreamSettings(BaseModel):
    """The stream worker: batching, event-time merge, state checkpoints, its HTTP endpoints."""

    group_id: str = Field(
        default="fraudstream-worker", description="Consumer group that shares out the partitions."
    )
    instance_id: str | None = Field(
        default=None,
        description="Stable name of this worker (static group membership, transactional id, "
        "checkpoint folder). Unset: the host name.",
    )
    state_dir: Path = Field(
        default=DEFAULT_HOME / "worker-state", description="Where state checkpoints are kept."
    )
    poll_timeout_ms: float = Field(
        default=5.0, gt=0, description="Longest wait for messages before the loop moves on."
    )
    batch_max: int = Field(default=20_000, ge=1, description="Most messages taken per poll.")
    batch_linger_ms: float = Field(
        default=0.0,
        ge=0,
        description="After the first message of a batch arrives, how long the worker waits for "
        "more before deciding. 0: it takes what the consumer has fetched already, which under "
        "load is a batch by itself (messages queue while the previous batch is decided) and, "
        "behind producers that linger (the API's 5 ms), arrives in clumps anyway. Each batch "
        "has a fixed cost (~2-4 ms on a small batch), so a wait trades latency for CPU; 0 "
        "rather than 1 ms since session 8 (benchmarks/README.md).",
    )
    commit_interval_ms: float = Field(
        default=100.0,
        ge=0,
        description="How long one Kafka transaction stays open, gathering the outputs and "
        "offsets of the batches decided meanwhile, before it commits. Readers of decisions with "
        "read_committed (banks' consumers, the trainer) see them up to this much later; "
        "read_uncommitted readers (the API's default) see them as they are produced. 0: one "
        "transaction per batch, whose commit (broker round trips) the next batch waits for.",
    )
    max_buffered_messages: int = Field(
        default=50_000,
        ge=1,
        description="Backpressure: a partition with more decoded messages than this waiting in "
        "the event-time merge (for a slower partition to catch up) is paused until the merge "
        "has released them. Bounds the merge buffer to about partitions x this x ~0.5 KB.",
    )
    source_idle_ms: float = Field(
        default=50.0,
        ge=0,
        description="A caught-up transactions partition that delivered nothing for this long "
        "stops holding the event-time watermark back. Larger: online == offline even when a "
        "producer stalls; smaller: lower latency when partitions are quiet.",
    )
    label_idle_ms: float = Field(
        default=0.0,
        ge=0,
        description="The same for labels partitions. Labels are sparse; 0 (a caught-up labels "
        "partition never holds decisions back) keeps them from adding latency, at the price "
        "of applying a label that arrives after its second has closed a little late.",
    )
    checkpoint_interval_s: float = Field(
        default=30.0, gt=0, description="Seconds between state checkpoints."
    )
    checkpoints_kept: int = Field(default=3, ge=1)
    label_index_days: float = Field(
        default=180.0,
        gt=0,
        description="How long a transaction's keys are kept for the labels that arrive later.",
    )
    session_timeout_ms: int = Field(
        default=10_000,
        ge=1000,
        description="Group session timeout: how soon a dead worker's "
        "partitions move to another worker.",
    )
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8001, description="/metrics, /healthz and /readyz.")
    shadow_ref: str | None = Field(
        default=None,
        description="Alias or version (e.g. challenger) that scores every transaction beside the "
        "served model without acting; its scores go to the feature log.",
    )
    canary_rows: int = Field(
        default=512, ge=1, description="Recent feature rows a new model must score before a swap."
    )


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="FRAUD_", env_nested_delimiter="__", extra="ignore", env_file=None
    )

    kafka: KafkaSettings = KafkaSettings()
    scoring: ScoringSettings = ScoringSettings()
    api: ApiSettings = ApiSettings()
    training: TrainingSettings = TrainingSettings()
    stream: StreamSettings = StreamSettings()


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
