"""Bad input: field-level 422s that never echo what was sent (card numbers above all), and no
input at all that yields a 500."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.api.conftest import A, transaction

PAN = "4111111111111111"  # Luhn-valid: a real-looking card number


def test_a_card_number_is_refused_and_never_echoed_or_logged(
    api_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with api_client(delay=0.0, deadline_ms=5000.0) as (client, harness):
        response = client.post("/v1/transactions", json=transaction(card_id=PAN), headers=A)
        assert response.status_code == 422
        assert response.json() == {
            "detail": [
                {
                    "loc": ["body", "card_id"],
                    "msg": "Value error, looks like a raw card number (13-19 digits, "
                    "Luhn-valid); send a token",
                    "type": "value_error",
                }
            ]
        }
        # a card number as an unexpected key, in the batch, in a path
        extra = client.post("/v1/transactions", json={**transaction(), PAN: 1}, headers=A)
        assert extra.status_code == 422 and extra.json()["detail"][0]["loc"] == [
            "body",
            "<redacted>",
        ]
        batch = {"transactions": [transaction(), transaction("tx-2", card_id=PAN)]}
        in_batch = client.post("/v1/transactions/batch", json=batch, headers=A)
        assert in_batch.json()["detail"][0]["loc"] == ["body", "transactions", 1, "card_id"]
        assert client.get(f"/v1/decisions/{PAN}", headers=A).status_code == 404
        server_log = "\n".join(
            r.getMessage()
            for r in caplog.records
            if not r.name.startswith("httpx")  # the client
        )
        everything = response.text + extra.text + in_batch.text + server_log
        assert PAN not in everything
        assert harness.stream.sent == []


def test_a_luhn_invalid_digit_string_is_a_fine_token(api_client: Any) -> None:
    with api_client(delay=0.0, deadline_ms=5000.0) as (client, _harness):
        ok = client.post(
            "/v1/transactions", json=transaction(card_id="4111111111111112"), headers=A
        )
        assert ok.status_code == 200


@pytest.mark.parametrize(
    ("change", "where", "kind"),
    [
        ({"amount": "12.5"}, "amount", "float_type"),  # strict: a string is not a number
        ({"amount": 0}, "amount", "greater_than"),
        ({"amount": 1e12}, "amount", "less_than"),
        ({"amount": True}, "amount", "float_type"),
        ({"card_present": "true"}, "card_present", "bool_type"),
        ({"timestamp": "2026-05-04T12:00:00"}, "timestamp", "string_pattern_mismatch"),  # offset
        ({"timestamp": "2026-02-30T12:00:00Z"}, "timestamp", "string_pattern_mismatch"),
        ({"timestamp": "2101-01-01T00:00:00Z"}, "timestamp", "string_pattern_mismatch"),
        ({"timestamp": 1767571200000}, "timestamp", "string_type"),
        ({"currency": "usd"}, "currency", "string_pattern_mismatch"),
        ({"currency": "USD\n"}, "currency", "string_pattern_mismatch"),
        ({"mcc": "٥٤١١"}, "mcc", "string_pattern_mismatch"),  # Arabic-Indic digits
        ({"channel": "phone"}, "channel", "literal_error"),
        ({"transaction_id": ""}, "transaction_id", "string_too_short"),
        ({"transaction_id": "x" * 65}, "transaction_id", "string_too_long"),
        ({"bank_id": "bank-b"}, "bank_id", "extra_forbidden"),
    ],
)
def test_field_level_422(api_client: Any, change: dict[str, Any], where: str, kind: str) -> None:
    with api_client(delay=0.0, deadline_ms=5000.0) as (client, harness):
        response = client.post("/v1/transactions", json={**transaction(), **change}, headers=A)
        assert response.status_code == 422, response.text
        (problem,) = response.json()["detail"]
        assert problem["loc"] == ["body", where] and problem["type"] == kind
        assert set(problem) == {"loc", "msg", "type"}  # no input, no ctx
        if where == "bank_id":
            assert "API key" in problem["msg"]
        assert harness.stream.sent == []


def test_missing_fields_and_broken_json(api_client: Any) -> None:
    with api_client(delay=0.0, deadline_ms=5000.0) as (client, _harness):
        missing = client.post("/v1/transactions", json={"transaction_id": "x"}, headers=A)
        assert {tuple(p["loc"]) for p in missing.json()["detail"]} == {
            ("body", "card_id"), ("body", "timestamp"), ("body", "amount")
        }  # fmt: skip
        for raw in (b"{", b"[]", b"null", b'"x"', b'{"amount": NaN}', b'{"a": "\\ud800"}'):
            response = client.post(
                "/v1/transactions", content=raw, headers={**A, "Content-Type": "application/json"}
            )
            assert response.status_code == 422, (raw, response.text)
        no_type = client.post("/v1/transactions", content=json.dumps(transaction()), headers=A)
        assert no_type.status_code == 422  # a body without Content-Type is not parsed as JSON


def test_text_must_be_valid_unicode(api_client: Any) -> None:
    with api_client(delay=0.0, deadline_ms=5000.0) as (client, harness):
        body = json.dumps(transaction(merchant_id="m\ud800")).encode()  # a lone surrogate escape
        response = client.post(
            "/v1/transactions", content=body, headers={**A, "Content-Type": "application/json"}
        )
        assert response.status_code == 422
        assert response.json()["detail"][0]["loc"] == ["body", "merchant_id"]
        assert harness.stream.sent == []


_json = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=6)
    ),
    max_leaves=20,
)
_field = st.sampled_from([*transaction(), "currency", "mcc", "channel", "bank_id", "x"])


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    path=st.sampled_from(["/v1/transactions", "/v1/transactions/batch", "/v1/labels",
                          "/v1/reviews/tx", "/v1/decisions/x"]),
    mutations=st.dictionaries(_field, _json, max_size=4),
    raw=st.none() | st.binary(max_size=64),
)  # fmt: skip
def test_no_input_yields_a_500(
    api_client: Any, path: str, mutations: dict[str, Any], raw: Any
) -> None:
    with api_client(delay=0.0, deadline_ms=5.0) as (client, _harness):
        body: Any = {**transaction(), **mutations}
        if path.endswith("batch"):
            body = {"transactions": [body]}
        if raw is not None:
            response = client.post(
                path, content=raw, headers={**A, "Content-Type": "application/json"}
            )
        else:
            response = client.post(
                path, content=json.dumps(body), headers={**A, "Content-Type": "application/json"}
            )
        assert response.status_code < 500, response.text
