"""Transaction ids in paths are taken whole: a final newline is part of the id (Starlette's
``{x:path}`` dropped it, so ``a%0A`` answered for ``a``; found by benchmarks/api_fuzz.py)."""

from __future__ import annotations

from typing import Any

from tests.api.conftest import A, transaction


def test_a_final_newline_is_part_of_the_id(api_client: Any) -> None:
    with api_client(delay=0.0) as (client, _harness):
        assert client.post("/v1/transactions", json=transaction("a"), headers=A).status_code == 200
        assert client.get("/v1/decisions/a", headers=A).status_code == 200
        for path in ("/v1/decisions/a%0A", "/v1/decisions/%0A", "/v1/decisions/a%0D%0A"):
            response = client.get(path, headers=A)
            assert response.status_code == 404, (path, response.text)
        review = client.post("/v1/reviews/%0A", json={"is_fraud": False}, headers=A)
        assert review.status_code == 404, review.text
        # an id that really ends with a newline is found under its own path
        assert (
            client.post("/v1/transactions", json=transaction("b\n"), headers=A).status_code == 200
        )
        assert client.get("/v1/decisions/b%0A", headers=A).json()["transaction_id"] == "b\n"
        assert client.get("/v1/decisions/b", headers=A).status_code == 404
