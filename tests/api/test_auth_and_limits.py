"""API keys (hashes only, rotation, no working default), tenants, rate limits, body limits."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import SecretStr

from api.app import create_app
from api.security import DEV_BANK, DEV_KEY, ApiKeyConfigError, KeyRing, RateLimiter, hash_key
from scoring.settings import ApiSettings, Settings
from tests.api.conftest import B_OLD, KEY_A, A, B, transaction
from tests.api.fakes import FakeModels, FakeStream

ROUTES = [
    ("post", "/v1/transactions", transaction()),
    ("post", "/v1/transactions/batch", {"transactions": [transaction()]}),
    ("get", "/v1/decisions/tx-1", None),
    ("post", "/v1/labels", {"transaction_id": "tx-1", "is_fraud": True}),
    ("get", "/v1/models", None),
    ("get", "/v1/reviews", None),
    ("post", "/v1/reviews/tx-1", {"is_fraud": True}),
]


@pytest.mark.parametrize(("method", "path", "body"), ROUTES)
def test_every_v1_route_needs_a_valid_key(
    api_client: Any, method: str, path: str, body: Any
) -> None:
    with api_client() as (client, harness):
        call = getattr(client, method)
        kwargs = {"json": body} if body is not None else {}
        for headers in (
            {},
            {"Authorization": "Bearer not-a-key"},
            {"Authorization": f"Basic {KEY_A}"},  # right key, wrong scheme
            {"X-API-Key": KEY_A + "x"},
            {"X-API-Key": ""},
            {"Authorization": f"Bearer {KEY_A}", "X-API-Key": "key-b-new-0123456789"},  # 2 banks
        ):
            response = call(path, headers=headers, **kwargs)
            assert response.status_code == 401, (headers, response.text)
            assert response.headers["www-authenticate"].startswith("Bearer")
            assert KEY_A not in response.text
        assert harness.stream.sent == [] and harness.stream.labels == []


def test_both_header_styles_and_rotated_keys_work(api_client: Any) -> None:
    with api_client(delay=0.0, deadline_ms=5000.0) as (client, _harness):
        assert (
            client.post("/v1/transactions", json=transaction("k-1"), headers=A).status_code == 200
        )
        for i, headers in enumerate((B, B_OLD, {"X-API-Key": KEY_A})):
            response = client.post(
                "/v1/transactions", json=transaction(f"k-{i + 2}"), headers=headers
            )
            assert response.status_code == 200


def test_no_keys_no_start_unless_development() -> None:
    with pytest.raises(ApiKeyConfigError, match="FRAUD_API__API_KEYS"):
        create_app(Settings(api=ApiSettings()), link=FakeStream(), models=FakeModels())
    ring = KeyRing.from_settings(ApiSettings(development=True))
    assert ring.bank_for(DEV_KEY) == DEV_BANK and ring.bank_for("other") is None
    # configured keys win over the development placeholder
    keys = SecretStr(json.dumps({"b": [hash_key("k")]}))
    assert (
        KeyRing.from_settings(ApiSettings(api_keys=keys, development=True)).bank_for(DEV_KEY)
        is None
    )


@pytest.mark.parametrize(
    ("config", "complaint"),
    [
        ("not json", "not JSON"),
        ('["x"]', "JSON object"),
        ("{}", "empty"),
        ('{"b": []}', "list of key hashes"),
        ('{"b": ["plain-text-key"]}', "SHA-256 hex"),
        ('{"b": ["' + "A" * 64 + '"]}', "lowercase"),
        (json.dumps({"a": [hash_key("k")], "b": [hash_key("k")]}), "listed for 'a' and 'b'"),
        (json.dumps({"": [hash_key("k")]}), "1-64"),
    ],
)
def test_bad_key_configuration_is_explained(config: str, complaint: str) -> None:
    with pytest.raises(ApiKeyConfigError, match=complaint):
        KeyRing.from_settings(ApiSettings(api_keys=SecretStr(config)))


def test_keys_are_not_in_the_settings_or_the_app(api_client: Any) -> None:
    settings = Settings(api=ApiSettings(api_keys=SecretStr(json.dumps({"b": [hash_key(KEY_A)]}))))
    assert KEY_A not in repr(settings) and hash_key(KEY_A) not in repr(settings)


def test_a_bank_never_sees_another_banks_decisions(api_client: Any) -> None:
    with api_client(delay=0.0, deadline_ms=5000.0) as (client, harness):
        mine = client.post("/v1/transactions", json=transaction("secret", amount=700.0), headers=A)
        assert mine.status_code == 200
        assert client.get("/v1/decisions/secret", headers=A).status_code == 200
        foreign = client.get("/v1/decisions/secret", headers=B)
        unknown = client.get("/v1/decisions/never-sent", headers=B)
        assert foreign.status_code == unknown.status_code == 404
        assert foreign.json() == unknown.json()  # not even "exists elsewhere"
        assert client.get("/v1/reviews", headers=B).json()["items"] == []
        assert len(client.get("/v1/reviews", headers=A).json()["items"]) == 1
        # bank-b cannot review bank-a's transaction, and bank-a's stays in its queue
        assert (
            client.post("/v1/reviews/secret", json={"is_fraud": True}, headers=B).status_code == 404
        )
        assert len(client.get("/v1/reviews", headers=A).json()["items"]) == 1
        # a label from bank-b carries bank-b: the stream matches it to bank-b's transactions only
        client.post("/v1/labels", json={"transaction_id": "secret", "is_fraud": True}, headers=B)
        assert harness.stream.labels[-1]["bank_id"] == "bank-b"


def test_rate_limit_429_with_retry_after(api_client: Any) -> None:
    with api_client(delay=0.0, rate_limit_per_s=0.5, rate_limit_burst=3) as (client, _harness):
        codes = [
            client.post("/v1/transactions", json=transaction(f"r-{i}"), headers=A).status_code
            for i in range(4)
        ]
        assert codes == [200, 200, 200, 429]
        limited = client.get("/v1/models", headers=A)
        assert limited.status_code == 429
        assert int(limited.headers["retry-after"]) >= 1
        assert "rate limit" in limited.json()["detail"]
        # per key: bank-b still has its tokens; and unauthenticated calls get 401, not 429
        assert client.get("/v1/models", headers=B).status_code == 200
        assert client.get("/v1/models").status_code == 401


def test_a_batch_costs_one_token_per_transaction(api_client: Any) -> None:
    with api_client(delay=0.0, rate_limit_per_s=0.1, rate_limit_burst=5) as (client, _harness):
        body = {"transactions": [transaction(f"t-{i}") for i in range(4)]}
        assert client.post("/v1/transactions/batch", json=body, headers=A).status_code == 200
        again = client.post("/v1/transactions/batch", json=body, headers=A)
        assert again.status_code == 429 and "retry-after" in again.headers


def test_token_bucket_refills() -> None:
    now = [0.0]
    limiter = RateLimiter(rate=2.0, burst=2, clock=lambda: now[0])
    assert limiter.take("k") == 0 and limiter.take("k") == 0
    assert limiter.take("k") == pytest.approx(0.5)
    now[0] = 0.5
    assert limiter.take("k") == 0
    assert limiter.take("k", 10) == pytest.approx(1.0)  # capped at the burst: never impossible


def test_bodies_over_the_limit_get_413(api_client: Any) -> None:
    with api_client(delay=0.0, max_body_bytes=2048) as (client, harness):
        big = transaction(merchant_id="m" * 60)
        body = json.dumps({"transactions": [big] * 30}).encode()
        declared = client.post(
            "/v1/transactions/batch",
            content=body,
            headers={**A, "Content-Type": "application/json"},
        )
        assert declared.status_code == 413
        assert declared.json() == {"detail": "request body larger than 2048 bytes"}

        def chunks() -> Any:  # no Content-Length: counted as it streams
            for start in range(0, len(body), 500):
                yield body[start : start + 500]

        streamed = client.post(
            "/v1/transactions/batch",
            content=chunks(),
            headers={**A, "Content-Type": "application/json"},
        )
        assert streamed.status_code == 413
        assert streamed.json()["detail"] == "request body larger than 2048 bytes"
        assert harness.stream.sent == []
        # under the limit is fine
        assert client.post("/v1/transactions", json=big, headers=A).status_code == 200


def test_a_non_ascii_key_matches_its_configured_hash(api_client: Any) -> None:
    key = "clé-ünïcode-0123456789"
    ring = KeyRing({"bank-u": [hash_key(key)]})
    as_received = key.encode().decode("latin-1")  # what a server hands over from the header
    assert ring.bank_for(as_received) == "bank-u"
    assert ring.bank_for(key) is None
