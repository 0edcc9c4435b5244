"""Models, probes, metrics, the OpenAPI document, and the hub's memory bounds."""

from __future__ import annotations

import asyncio
import gc
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from prometheus_client.metrics import MetricWrapperBase

from api.hub import DecisionHub, HubLimits, StreamDecision
from api.metrics import ApiMetrics
from api.schemas import TransactionIn
from scoring.decision import DecisionPolicy
from tests.api.conftest import A, transaction

METRICS_MD = Path(__file__).resolve().parents[2] / "deploy" / "helm" / "fraudstream" / "METRICS.md"


def test_models(api_client: Any) -> None:
    with api_client() as (client, _harness):
        response = client.get("/v1/models", headers=A)
        assert response.status_code == 200
        body = response.json()
        assert body["serving"]["version"] == body["champion"]["version"] == "v0001-fake"
        assert body["serving"]["window"]["from"].startswith("2026-01-01")
        assert body["challenger"] is None


def test_probes(api_client: Any) -> None:
    with api_client() as (client, harness):
        assert client.get("/healthz").json() == {"ok": True, "detail": "fake stream"}
        ready = client.get("/readyz")
        assert ready.status_code == 200 and "v0001-fake" in ready.json()["detail"]
        harness.models.loaded = False
        not_ready = client.get("/readyz")
        assert not_ready.status_code == 503 and not_ready.json()["ok"] is False


def test_metrics_are_the_documented_ones(api_client: Any) -> None:
    table = METRICS_MD.read_text()
    documented = dict(re.findall(r"^\| `(fraudstream_[a-z0-9_]+)` \| ([a-z]+)", table, re.M))
    api_rows = {
        m.group(1)
        for m in re.finditer(
            r"^\| `(fraudstream_[a-z0-9_]+)` \|[^|]*\|[^|]*\| ([^|]*)\|",
            METRICS_MD.read_text(),
            re.M,
        )
        if "api" in m.group(2)
    }
    exported = {}
    for metric in vars(ApiMetrics()).values():
        if isinstance(metric, MetricWrapperBase):
            (family,) = metric.describe()
            name = family.name + ("_total" if family.type == "counter" else "")
            exported[name] = family.type
    for name, kind in exported.items():
        assert documented.get(name, "").startswith(kind[:5]), f"{name} ({kind}) not in METRICS.md"
    assert api_rows == set(exported), (
        f"documented for the api, not exported: {api_rows - set(exported)}; "
        f"exported, not documented for the api: {set(exported) - api_rows}"
    )
    with api_client(delay=None, deadline_ms=1.0) as (client, _harness):
        client.post("/v1/transactions", json=transaction(), headers=A)
        client.get("/v1/decisions/tx-1", headers=A)
        client.get("/v1/decisions/another", headers=A)
        text = client.get("/metrics").text
        assert 'route="/v1/transactions",status="200"' in text
        # the route template, never the id
        assert 'route="/v1/decisions/{transaction_id}",status="404"' in text
        assert "tx-1" not in text and "another" not in text
        bucket = r'request_duration_seconds_bucket\{le="([^"]+)",route="/v1/transactions"'
        buckets = re.findall(bucket, text)
        assert buckets == ["0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.075", "0.1",
                           "0.25", "0.5", "1.0", "2.5", "+Inf"]  # fmt: skip


def test_openapi_document(api_client: Any) -> None:
    with api_client() as (client, _harness):
        doc = client.get("/openapi.json").json()
    paths = doc["paths"]
    assert set(paths) == {
        "/v1/transactions", "/v1/transactions/batch", "/v1/decisions/{transaction_id}",
        "/v1/labels", "/v1/models", "/v1/reviews", "/v1/reviews/{transaction_id}",
    }  # fmt: skip
    assert set(doc["components"]["securitySchemes"]) == {"BearerKey", "ApiKeyHeader"}
    post = paths["/v1/transactions"]["post"]
    assert {"401", "409", "413", "422", "429"} <= set(post["responses"])
    assert post["requestBody"]["content"]["application/json"]["examples"]["pos"]["value"]
    problem = doc["components"]["schemas"]["FieldProblem"]["properties"]
    assert set(problem) == {"loc", "msg", "type"}  # no "input"
    tx = doc["components"]["schemas"]["TransactionIn"]
    assert "bank_id" not in tx["properties"] and tx["additionalProperties"] is False
    TransactionIn.model_validate(tx["examples"][0])


class _QuietLink:
    """A link that sends nothing anywhere: the test plays the stream itself."""

    def send_transaction(self, *_: Any) -> None:
        pass

    async def send_label(self, *_: Any) -> None:
        pass


def _bound_hub(
    metrics: ApiMetrics, *, max_entries: int, wall_clock: Callable[[], float]
) -> DecisionHub:
    """A hub on the running loop with a 10 s deadline and a quiet link."""
    hub = DecisionHub(
        DecisionPolicy(),
        HubLimits(default_deadline_ms=10_000, window_s=60, max_entries=max_entries,
                  max_reviews=10, cpu_second_usd=0.0),
        metrics,
        wall_clock=wall_clock,
    )  # fmt: skip
    hub.bind(asyncio.get_running_loop(), _QuietLink())
    return hub


def _record(tx_id: str, at: float) -> StreamDecision:
    return StreamDecision("b", tx_id, "approve", "2026-05-04T12:00:00Z", b"{}", at)


def test_the_store_is_bounded_by_count_and_age_but_never_drops_a_waiting_request() -> None:
    async def run() -> None:
        now = [1000.0]
        hub = _bound_hub(ApiMetrics(), max_entries=3, wall_clock=lambda: now[0])
        tx = TransactionIn.model_validate(transaction("waiting"))
        ((future, _),) = hub.submit_many("b", [tx], asyncio.get_running_loop().time())
        hub.on_stream_decisions([_record(f"d-{i}", now[0]) for i in range(5)])
        assert hub.stored("b", "waiting") is None and len(hub) == 6  # in flight: kept
        hub.on_stream_decisions([_record("waiting", now[0])])
        assert await future == b"{}"
        hub.on_stream_decisions([_record("d-9", now[0])])
        assert len(hub) == 3
        now[0] += 61
        hub.on_stream_decisions([_record("fresh", now[0])])
        assert len(hub) == 1 and hub.stored("b", "fresh") is not None
        hub.close()

    asyncio.run(run())


def test_answered_decisions_are_kept_out_of_the_garbage_collectors_reach() -> None:
    """A full collection walks every tracked object; the stored decisions (up to 100k) must not
    be among them, whether answered to a request or only read from the stream."""

    async def run() -> None:
        hub = _bound_hub(ApiMetrics(), max_entries=100_000, wall_clock=lambda: 1000.0)
        loop = asyncio.get_running_loop()
        asked = [TransactionIn.model_validate(transaction(f"a-{i}")) for i in range(2_000)]
        gc.collect()
        tracked_before = len(gc.get_objects())
        answers = [future for future, _ in hub.submit_many("b", asked, loop.time())]
        hub.on_stream_decisions([_record(f"a-{i}", 1000.0) for i in range(2_000)])
        hub.on_stream_decisions([_record(f"read-{i}", 1000.0) for i in range(2_000)])
        # Checked without awaiting: a gather future would hold the 2,000 request futures alive
        # (via the loop's wake-up handle) past the collection below.
        assert all(future.done() and future.result() == b"{}" for future in answers)
        del answers
        await asyncio.sleep(0)  # one loop turn drops the 2,000 cancelled deadline timers
        gc.collect()
        assert len(hub) == 4_000
        assert len(gc.get_objects()) - tracked_before < 200  # not one or more per decision
        assert all(not e.in_flight for e in hub.entries())
        assert hub.stored("b", "a-7") is not None and hub.stored("b", "read-7") is not None
        hub.close()

    asyncio.run(run())


def test_a_later_stream_decision_replaces_an_aborted_one() -> None:
    """read_uncommitted: a decision whose Kafka transaction aborted is followed by the worker's
    redo. The redo becomes the stored stream decision; what the bank was told stays, and a told
    action that the committed decision contradicts is counted."""

    def record(tx_id: str, action: str, n: int) -> StreamDecision:
        value = orjson.dumps({"transaction_id": tx_id, "action": action, "n": n})
        return StreamDecision("b", tx_id, action, "2026-05-04T12:00:00Z", value, 1000.0)

    async def run() -> None:
        metrics = ApiMetrics()
        hub = _bound_hub(metrics, max_entries=100, wall_clock=lambda: 1000.0)
        tx = TransactionIn.model_validate(transaction("asked"))
        ((future, _),) = hub.submit_many("b", [tx], asyncio.get_running_loop().time())
        first = record("asked", "approve", 1)
        hub.on_stream_decisions([first])
        assert await future == first.value
        hub.on_stream_decisions([first])  # the same record read again: nothing to count
        redo = record("asked", "decline", 2)  # its transaction aborted; the redo differs
        hub.on_stream_decisions([redo])
        stored = hub.stored("b", "asked")
        assert stored is not None and stored.told == first.value and stored.stream == redo.value
        # a decision this replica only read (told nobody): the later one is the decision
        hub.on_stream_decisions([record("seen", "approve", 1), record("seen", "review", 2)])
        seen = hub.stored("b", "seen")
        assert seen is not None and seen.told == seen.stream == record("seen", "review", 2).value
        sample = metrics.registry.get_sample_value
        name = "fraudstream_superseded_decisions_total"
        assert sample(name, {"bank": "b", "action_changed": "true"}) == 1
        assert sample(name, {"bank": "b", "action_changed": "false"}) == 1
        hub.close()

    asyncio.run(run())
