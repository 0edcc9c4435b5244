"""Card data and model integrity on the whole stack: a real broker, a worker and an API replica
(subprocesses, as in production) with card-number tokenization on (issue 9, items 4 and 5).

* A tampered model (a byte of its compiled library changed after registration, manifest intact,
  correctly announced) is refused by the worker and by the API; the previous model keeps serving
  — decisions made afterwards carry its version — and ``fraudstream_model_integrity_failures_total``
  (the FraudstreamModelIntegrityFailure alert) rises on both.
* Raw card numbers sent in ``card_number`` through the API, and raw card numbers produced straight
  to Kafka by a misbehaving bank (as ``card_id``, as the key, in another field), are then searched
  for in every record of every topic of the deployment, every log line of every process
  (stdout/stderr captured to files) and every file the run wrote (registry, worker state, process
  TMPDIR): the only hits are the bank's own bad records in ``transactions``, which the system
  cannot unwrite — nothing the system itself wrote holds a card number.
"""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.security import hash_key
from scoring.announcements import announcement_for
from scoring.card_data import find_card_numbers, scan_files
from scoring.records import luhn_valid
from scoring.registry import ModelRegistry
from scoring.settings import KafkaSettings
from scoring.tokenize import CardTokenizer
from stream.announce import publish_announcement
from stream.card_scan import scan_topics
from stream.replay import replay
from stream.topics import PRODUCER_PARTITIONER, create_topics
from tests.integration.stream_harness import (
    ApiProcess,
    Stack,
    WorkerProcess,
    read_topic,
    wait_for,
)
from training.simulator import SimulationConfig, simulate
from training.train import train_and_register

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

KEY = "key-secbank-0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}
TOKENIZATION = json.dumps(
    {"active": "k2", "keys": {"k1": "old-secret-" + "o" * 32, "k2": "new-secret-" + "n" * 32}}
)
# First digits of the networks and their lengths: Visa 13/16/19, Mastercard (2- and 5-series),
# Amex 15, Discover, JCB, Diners 14, UnionPay 19.
PREFIXES = [("4", 16), ("4", 13), ("4", 19), ("51", 16), ("2221", 16), ("37", 15), ("6011", 16),
            ("3530", 16), ("36", 14), ("62", 19)]  # fmt: skip


def _card_numbers(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    out = []
    for i in range(count):
        prefix, length = PREFIXES[i % len(PREFIXES)]
        body = prefix + "".join(rng.choice("0123456789") for _ in range(length - len(prefix) - 1))
        out.append(next(body + d for d in "0123456789" if luhn_valid(body + d)))
    return out


@dataclass
class Deployment:
    root: Path
    kafka: KafkaSettings
    stack: Stack
    worker: WorkerProcess
    api: ApiProcess
    champion: str
    second: str
    registry: ModelRegistry
    cards: list[str]


@pytest.fixture(scope="module")
def deployment(
    kafka_settings: KafkaSettings,
    kafka_env: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
    free_tcp_ports: Callable[[int], list[int]],
) -> Iterator[Deployment]:
    root = tmp_path_factory.mktemp("card-data")
    transactions, labels = simulate(SimulationConfig(days=4, cards=300, seed=9))
    registry_dir = root / "registry"
    registry = ModelRegistry(registry_dir)
    until = transactions.column("timestamp")[0].as_py() + timedelta(days=3)
    champion = train_and_register(transactions, labels, registry=registry, until=until).version
    second = train_and_register(transactions, labels, registry=registry, until=until, seed=2)
    registry.promote(champion)
    prefix = f"t{uuid.uuid4().hex[:8]}-sec."
    kafka = kafka_settings.model_copy(update={"topic_prefix": prefix, "partitions": 2})
    create_topics(kafka)
    # Every process writes its temporary files under the run's root: they are scanned too.
    (root / "tmp").mkdir()
    env = {**kafka_env, "TMPDIR": str(root / "tmp")}
    stack = Stack(kafka, env, registry_dir, root, free_tcp_ports)
    api: ApiProcess | None = None
    try:
        worker = stack.start("sec-w1", FRAUD_STREAM__SOURCE_IDLE_MS="20")
        worker.wait_ready()
        assert replay(transactions, labels, kafka=kafka).failed == 0
        read_topic(kafka, kafka.topic("decisions"), expected=transactions.num_rows, quiet=0.5)
        (port,) = free_tcp_ports(1)
        log = root / "api.log"
        api_env = {
            **env,
            "FRAUD_KAFKA__TOPIC_PREFIX": prefix,
            "FRAUD_API__API_KEYS": json.dumps({"secbank": [hash_key(KEY)]}),
            "FRAUD_API__TOKENIZATION_KEY": TOKENIZATION,
            "FRAUD_API__DEADLINE_MS": "10000",  # the stream decides: decisions carry its model
        }
        api = ApiProcess.start(api_env, port, registry_dir, log)
        api.wait_ready()
        yield Deployment(
            root, kafka, stack, worker, api, champion, second.version, registry,
            _card_numbers(40, seed=4),
        )  # fmt: skip
    finally:
        if api is not None:
            api.stop()
        stack.close()


def _get(api: ApiProcess, path: str) -> httpx.Response:
    return httpx.get(f"{api.url}{path}", headers=AUTH, timeout=10)


def _sample(metrics: str, name: str) -> float:
    values = [float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
              if line.split("{")[0].split(" ")[0] == name]  # fmt: skip
    assert values, f"{name} not exported"
    return sum(values)


def _transaction(tx_id: str, i: int, **card: str) -> dict[str, Any]:
    now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return {
        "transaction_id": tx_id, "timestamp": now, "amount": 10.0 + i, "currency": "EUR",
        "merchant_id": f"mer_{i % 7:06d}", "country": "FR", "channel": "ecom", **card,
    }  # fmt: skip


def test_a_tampered_model_is_refused_by_worker_and_api(deployment: Deployment) -> None:
    d = deployment
    assert _get(d.api, "/v1/models").json()["serving"]["version"] == d.champion
    library = d.root / "registry" / "versions" / d.second / "model.so"
    data = bytearray(library.read_bytes())
    data[len(data) // 2] ^= 0xFF  # after registration: the manifest still has the old SHA-256
    library.write_bytes(bytes(data))
    d.registry.promote(d.second)
    try:
        publish_announcement(d.kafka, announcement_for(d.registry, "champion", d.champion))
        name = "fraudstream_model_integrity_failures_total"
        wait_for(lambda: _sample(d.worker.metrics(), name) == 1, 90, "the worker's refusal")
        wait_for(lambda: _sample(_get(d.api, "/metrics").text, name) == 1, 90, "the API's refusal")
    finally:
        d.registry.promote(d.champion)
        publish_announcement(d.kafka, announcement_for(d.registry, "champion", d.second))
    # the previous model keeps serving: on both, and in the decisions made now
    assert f'fraudstream_model_info{{version="{d.champion}"}} 1.0' in d.worker.metrics()
    assert f'fraudstream_model_info{{version="{d.second}"}}' not in d.worker.metrics()
    assert _get(d.api, "/v1/models").json()["serving"]["version"] == d.champion
    assert 'fraudstream_model_swaps_total{outcome="refused"} 1.0' in d.worker.metrics()
    with httpx.Client(base_url=d.api.url, headers=AUTH, timeout=30) as client:
        for i in range(5):
            body = _transaction(f"after-tamper-{i}", i, card_id=f"card_{i:06d}")
            response = client.post("/v1/transactions", json=body)
            assert response.status_code == 200, response.text
            decision = response.json()
            assert decision["degraded"] is False and decision["model_version"] == d.champion


def test_no_card_number_anywhere_after_a_run_with_tokenization(deployment: Deployment) -> None:
    from confluent_kafka import Producer

    d = deployment
    cards = d.cards
    tokenizer = CardTokenizer.parse(TOKENIZATION)
    answered: dict[str, dict[str, Any]] = {}
    bodies = [_transaction(f"pan-{i}", i, card_number=cards[i % 20]) for i in range(30)]
    with httpx.Client(base_url=d.api.url, headers=AUTH, timeout=30) as client:
        for body in bodies:  # cards repeat: the same card must map to the same card_id
            response = client.post("/v1/transactions", json=body)
            assert response.status_code == 200, response.text
            answered[body["transaction_id"]] = response.json()
        batch = [_transaction(f"pan-batch-{i}", i, card_number=cards[20 + i]) for i in range(10)]
        response = client.post("/v1/transactions/batch", json={"transactions": batch})
        assert response.status_code == 200, response.text
        resend = client.post("/v1/transactions", json=bodies[3])
        assert resend.status_code == 200 and resend.headers["idempotent-replayed"] == "true"
        refused = [
            client.post("/v1/transactions", json=_transaction("bad-1", 1, card_number=cards[30][:-1]
                        + str((int(cards[30][-1]) + 1) % 10))),
            client.post("/v1/transactions", json=_transaction("bad-2", 2, card_number=cards[31],
                                                              card_id="card_000001")),
            client.post("/v1/transactions", json=_transaction("bad-3", 3, card_id=cards[32])),
            client.post("/v1/transactions/batch", json={"transactions": [
                _transaction("bad-4", 4, card_number=cards[33][:8] + "-" + cards[33][8:])]}),
            client.get(f"/v1/decisions/{cards[34]}"),
            client.post("/v1/labels", json={"transaction_id": "pan-1", "is_fraud": True}),
        ]  # fmt: skip
        assert [r.status_code for r in refused] == [422, 422, 422, 422, 404, 202]
        for r in refused:
            assert find_card_numbers(r.content) == [] and not any(c in r.text for c in cards)
    assert all(a["degraded"] is False for a in answered.values())

    # A bank that produces straight to Kafka and does not tokenize: card_id, key, another field.
    raw = [
        (cards[35].encode(), json.dumps({"transaction_id": "raw-1", "card_id": cards[35],
                                         "timestamp": 1767571200000, "amount": 5.0}).encode()),
        (cards[36].encode(), json.dumps({"transaction_id": "raw-2", "card_id": cards[36],
                                         "timestamp": 1767571200000, "amount": 5.0}).encode()),
        (b"card_000001", json.dumps({"transaction_id": "raw-3", "card_id": "card_000001",
                                     "channel": cards[37], "timestamp": 1767571200000,
                                     "amount": 5.0}).encode()),
    ]  # fmt: skip
    producer = Producer({**d.kafka.client_config(), "partitioner": PRODUCER_PARTITIONER})
    for key, value in raw:
        producer.produce(d.kafka.topic("transactions"), key=key, value=value)
    assert producer.flush(30) == 0
    dead = read_topic(d.kafka, d.kafka.topic("transactions-dlq"), expected=3, quiet=1.0)
    assert len(dead) == 3 and all("fraudstream-masked" in h for _k, _v, h in dead)

    # What went to the stream: tokens of the active key, the same token for the same card.
    sent = read_topic(d.kafka, d.kafka.topic("transactions"), expected=1, quiet=0.5)
    by_id = {json.loads(v)["transaction_id"]: (k, json.loads(v)) for k, v, _h in sent
             if v.startswith(b"{")}  # fmt: skip
    for i in range(30):
        key, record = by_id[f"pan-{i}"]
        assert record["card_id"] == tokenizer.tokenize(cards[i % 20]) == key.decode()

    # Stop everything so that logs are flushed and final checkpoints written, then scan.
    assert d.api.stop() == 0
    assert d.worker.stop() == 0
    api_log = d.api.log.read_text(errors="replace")
    assert "serving model" in api_log and d.worker.log.stat().st_size > 0  # logs were captured

    in_topics, records = scan_topics(d.kafka)
    in_files, files = scan_files(d.root)
    print(f"\ncard-data scan: {records:,} records of the deployment's topics, {files:,} files")
    bank_input = [f for f in in_topics if f.where.startswith(d.kafka.topic("transactions") + "/")]
    assert len(bank_input) == 5, in_topics  # positive control: 3 values, 2 keys of the bank's own
    assert [f for f in in_topics if f not in bank_input] == []
    assert in_files == [], [str(f) for f in in_files]
    # The exact numbers too, wherever and however they appear (independent of the scanner's rules).
    everything = b"".join(p.read_bytes() for p in d.root.rglob("*") if p.is_file())
    assert [c for c in cards if c.encode() in everything] == []
