"""``card_number`` on the API: tokenized on arrival, never stored, echoed, logged or produced."""

from __future__ import annotations

import json
import logging
from typing import Any

import orjson
import pytest
from pydantic import SecretStr

from scoring.tokenize import CardTokenizer
from tests.api.conftest import A, transaction

PAN = "4111111111111111"
OTHER_PAN = "5555555555554444"
SECRET = "test-tokenization-secret-0123456789abcdef"
ROTATING = json.dumps({"active": "k2", "keys": {"k1": SECRET, "k2": SECRET[::-1]}})


def carded(transaction_id: str = "tx-1", pan: str = PAN, **fields: Any) -> dict[str, Any]:
    body = transaction(transaction_id, **fields)
    del body["card_id"]
    return {**body, "card_number": pan}


def no_pan_anywhere(harness: Any, caplog: pytest.LogCaptureFixture, *texts: str) -> None:
    """Neither card number in what was produced, kept for idempotency, logged or answered."""
    produced = b"".join(key + value for key, value in harness.stream.sent)
    stored = b"".join(entry.request or b"" for entry in harness.app.state.services.hub.entries())
    logged = "\n".join(r.getMessage() for r in caplog.records if not r.name.startswith("httpx"))
    for pan in (PAN, OTHER_PAN):
        assert pan.encode() not in produced + stored
        assert pan not in logged + "".join(texts)


def test_a_card_number_becomes_a_token_before_anything_sees_it(
    api_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    token = CardTokenizer.parse(ROTATING).tokenize(PAN)
    assert token.startswith("tok_k2_")  # the active key
    with api_client(tokenization_key=SecretStr(ROTATING)) as (client, harness):
        first = client.post("/v1/transactions", json=carded(), headers=A)
        assert first.status_code == 200, first.text
        ((key, value),) = harness.stream.sent
        assert key == token.encode() and orjson.loads(value)["card_id"] == token
        assert "card_number" not in orjson.loads(value)
        # idempotency compares the tokenized body: the same card number, or its token, replays
        again = client.post("/v1/transactions", json=carded(), headers=A)
        as_token = client.post("/v1/transactions", json=transaction(card_id=token), headers=A)
        assert again.headers["idempotent-replayed"] == as_token.headers["idempotent-replayed"]
        assert again.json() == as_token.json() == first.json()
        # another card under the same id: a 409 naming card_id, not the numbers
        conflict = client.post("/v1/transactions", json=carded(pan=OTHER_PAN), headers=A)
        assert conflict.status_code == 409 and "card_id differ" in conflict.json()["detail"]
        batch = {"transactions": [carded("tx-2"), carded("tx-3", OTHER_PAN), transaction("tx-4")]}
        decided = client.post("/v1/transactions/batch", json=batch, headers=A)
        assert decided.status_code == 200, decided.text
        cards = [orjson.loads(v)["card_id"] for _k, v in harness.stream.sent[1:]]
        assert cards == [token, CardTokenizer.parse(ROTATING).tokenize(OTHER_PAN), "card-77"]
        no_pan_anywhere(harness, caplog, first.text, conflict.text, decided.text)


@pytest.mark.parametrize(
    ("body", "loc", "says"),
    [
        (carded(pan="4111111111111112"), ["body", "card_number"], "Luhn"),
        (carded(pan="4111 1111 1111 1111"), ["body", "card_number"], "pattern"),
        (carded(pan=4111111111111111), ["body", "card_number"], "valid string"),  # type: ignore[arg-type]
        ({**carded(), "card_id": "card-77"}, ["body"], "exactly one of"),
        ({k: v for k, v in carded().items() if k != "card_number"}, ["body"], "exactly one of"),
        ({**carded(), "card_id": None}, ["body", "card_id"], "valid string"),
        ({**transaction(), "card_id": PAN}, ["body", "card_id"], "raw card number"),
    ],
)
def test_bad_card_fields_are_422s_that_never_echo_the_number(
    api_client: Any, caplog: pytest.LogCaptureFixture, body: dict[str, Any], loc: list[Any],
    says: str,
) -> None:  # fmt: skip
    caplog.set_level(logging.DEBUG)
    with api_client(tokenization_key=SecretStr(SECRET)) as (client, harness):
        response = client.post("/v1/transactions", json=body, headers=A)
        assert response.status_code == 422
        (problem,) = response.json()["detail"]
        assert problem["loc"] == loc and says in problem["msg"], problem
        in_batch = client.post("/v1/transactions/batch", json={"transactions": [body]}, headers=A)
        assert in_batch.status_code == 422
        assert in_batch.json()["detail"][0]["loc"][:3] == ["body", "transactions", 0]
        assert harness.stream.sent == []
        no_pan_anywhere(harness, caplog, response.text, in_batch.text)
        assert "4111111111111112" not in response.text + in_batch.text


def test_without_a_key_card_number_is_refused_and_not_in_the_schema(
    api_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    with api_client() as (client, harness):
        response = client.post("/v1/transactions", json=carded(), headers=A)
        assert response.status_code == 422
        (problem,) = [p for p in response.json()["detail"] if p["loc"] == ["body", "card_number"]]
        assert "FRAUD_API__TOKENIZATION_KEY" in problem["msg"]
        schemas = client.get("/openapi.json").json()["components"]["schemas"]
        assert "card_number" not in json.dumps(schemas)
        assert harness.stream.sent == []
        no_pan_anywhere(harness, caplog, response.text)


def test_with_a_key_the_schema_offers_card_number_or_card_id(api_client: Any) -> None:
    with api_client(tokenization_key=SecretStr(SECRET)) as (client, _harness):
        schemas = client.get("/openapi.json").json()["components"]["schemas"]
        body = schemas["TokenizingTransactionIn"]
        assert body["oneOf"] == [{"required": ["card_id"]}, {"required": ["card_number"]}]
        assert body["properties"]["card_number"]["format"] == "card-number"
        assert "card_id" not in body.get("required", [])


def test_a_malformed_key_stops_the_app_without_showing_it(api_client: Any) -> None:
    from scoring.tokenize import TokenizationConfigError

    with (
        pytest.raises(TokenizationConfigError, match="shorter than 32") as caught,
        api_client(tokenization_key=SecretStr("too-short-key")),
    ):
        pass
    assert "too-short-key" not in str(caught.value)
