"""``POST /v1/transactions`` and ``POST /v1/transactions/batch``: decide synchronously.

(No ``from __future__ import annotations`` here: the batch body's model is made at run time, from
the ``api.max_batch`` setting, and FastAPI must see it as an object, not as a name.)
"""

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Body, HTTPException, Response

from api.deps import CallerDep, ServicesDep, StartedDep
from api.routes.common import AUTH, BODY, problem
from api.schemas import TRANSACTION_EXAMPLE, DecisionBatch, TransactionIn, batch_request_model
from api.security import retry_after
from scoring.records import Decision

REPLAYED = "Idempotent-Replayed"
DECISION_HEADERS = {
    REPLAYED: {
        "description": "`true` when this transaction_id was already sent with the same body: the "
        "decision is the one given then (no second decision is made).",
        "schema": {"type": "string", "enum": ["true"]},
    },
    "Server-Timing": {
        "description": "`decide;dur=<ms>`: time from the request's arrival to its decision.",
        "schema": {"type": "string"},
    },
}
CONFLICT = problem(
    "This transaction_id was already sent by your bank with a different body; the message names "
    "the fields that differ."
)

DECISION_DOC = """Score one transaction and return its Decision.

The transaction goes to the stream, which owns the card's history and decides. When the stream
does not answer within your bank's deadline (default 50 ms), your bank's fallback policy decides:
the decision then says `degraded: true`, and the stream's own decision is recorded when it comes
(`GET /v1/decisions/{transaction_id}` shows both).

Idempotent by `transaction_id`: the same id with the same body returns the same decision (also
while the first request is still waiting); the same id with a different body is a 409."""


def build_router(max_batch: int) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["transactions"])
    batch_model: Any = batch_request_model(max_batch)

    @router.post(
        "/transactions",
        response_model=Decision,
        summary="Decide one transaction",
        description=DECISION_DOC,
        responses={
            200: {"description": "The decision.", "headers": DECISION_HEADERS},
            409: CONFLICT,
            **AUTH,
            **BODY,
        },
    )
    async def decide_one(
        transaction: Annotated[
            TransactionIn,
            Body(
                openapi_examples={
                    "pos": {"summary": "A card-present purchase", "value": TRANSACTION_EXAMPLE},
                    "minimal": {
                        "summary": "Only the required fields",
                        "value": {
                            "transaction_id": "tx-000124",
                            "card_id": "card-9f2c1a",
                            "timestamp": "2026-05-04T12:00:05Z",
                            "amount": 12.0,
                        },
                    },
                }
            ),
        ],
        caller: CallerDep,
        services: ServicesDep,
        started: StartedDep,
    ) -> Response:
        ((future, replayed),) = services.hub.submit_many(caller.bank_id, [transaction], started)
        told = await asyncio.shield(future)
        return _decided(told, replayed, started)

    @router.post(
        "/transactions/batch",
        response_model=DecisionBatch,
        summary=f"Decide up to {max_batch} transactions",
        description="Like `POST /v1/transactions` for each transaction, all with the same "
        "deadline; decisions come back in request order. All or nothing for conflicts: when any "
        "transaction_id conflicts (with an earlier request, or within the batch) nothing is sent "
        "and the answer is 409. Each transaction counts against the rate limit.",
        responses={200: {"description": "The decisions."}, 409: CONFLICT, **AUTH, **BODY},
    )
    async def decide_batch(
        batch: Annotated[batch_model, Body()],
        caller: CallerDep,
        services: ServicesDep,
        started: StartedDep,
    ) -> Response:
        transactions: list[TransactionIn] = batch.transactions
        wait = services.limiter.take(caller.key_id, len(transactions) - 1)  # one taken already
        if wait > 0:
            raise HTTPException(
                429, "rate limit of this API key exceeded by this batch; retry later",
                headers={"Retry-After": retry_after(wait)},
            )  # fmt: skip
        submitted = services.hub.submit_many(caller.bank_id, transactions, started)
        told = await asyncio.gather(*(asyncio.shield(future) for future, _ in submitted))
        body = b'{"decisions":[' + b",".join(told) + b"]}"
        return Response(body, media_type="application/json", headers=_timing(started))

    return router


def _decided(told: bytes, replayed: bool, started: float) -> Response:
    headers = _timing(started)
    if replayed:
        headers[REPLAYED] = "true"
    return Response(told, media_type="application/json", headers=headers)


def _timing(started: float) -> dict[str, str]:
    elapsed_ms = (asyncio.get_running_loop().time() - started) * 1000.0
    return {"Server-Timing": f"decide;dur={elapsed_ms:.2f}"}
