"""``POST /v1/transactions`` and ``POST /v1/transactions/batch``: decide synchronously.

(No ``from __future__ import annotations`` here: the batch body's model is made at run time, from
the ``api.max_batch`` setting, and FastAPI must see it as an object, not as a name.)
"""

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Body, HTTPException, Request, Response

from api.deps import CallerDep, request_started, services_of
from api.routes.common import AUTH, BODY, problem
from api.schemas import (
    TRANSACTION_EXAMPLE,
    DecisionBatch,
    TokenizingTransactionIn,
    TransactionIn,
    batch_request_model,
)
from api.security import retry_after
from scoring.records import Decision
from scoring.tokenize import CardTokenizer

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

TOKENIZING_DOC = """

This deployment tokenizes card numbers: instead of `card_id` you may send the raw card number in
`card_number`; it is replaced on arrival by `card_id = tok_<key id>_<HMAC>` (the same card always
gets the same token) and never stored, logged or forwarded. Idempotency compares the tokenized
transaction."""


BATCH_TOKENIZING_DOC = " Card numbers may be sent in `card_number` (see the single route)."


def build_router(max_batch: int, tokenizer: CardTokenizer | None = None) -> APIRouter:
    """The routes; with a ``tokenizer`` the bodies also accept ``card_number``."""
    router = APIRouter(prefix="/v1", tags=["transactions"])
    body_model: Any = TokenizingTransactionIn if tokenizer is not None else TransactionIn
    batch_model: Any = batch_request_model(max_batch, body_model)
    description = DECISION_DOC + (TOKENIZING_DOC if tokenizer is not None else "")

    def tokenized(transaction: TransactionIn) -> TransactionIn:
        # The card number is replaced here, before the hub (idempotency store, Kafka) sees it.
        if isinstance(transaction, TokenizingTransactionIn):
            assert tokenizer is not None
            card_id = transaction.card_id
            if transaction.card_number is not None:
                card_id = tokenizer.tokenize(transaction.card_number)
            assert card_id is not None
            return transaction.with_card_id(card_id)
        return transaction

    @router.post(
        "/transactions",
        response_model=Decision,
        summary="Decide one transaction",
        description=description,
        responses={
            200: {"description": "The decision.", "headers": DECISION_HEADERS},
            409: CONFLICT,
            **AUTH,
            **BODY,
        },
    )
    async def decide_one(
        transaction: Annotated[
            body_model,
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
        request: Request,
    ) -> Response:
        # The hot path: services and arrival come from the request rather than from two more
        # dependencies for FastAPI to resolve (~15 µs each a request).
        started = request_started(request)
        ((future, replayed),) = services_of(request).hub.submit_many(
            caller.bank_id, [tokenized(transaction)], started
        )
        told = await asyncio.shield(future)
        return _decided(told, replayed, started)

    @router.post(
        "/transactions/batch",
        response_model=DecisionBatch,
        summary=f"Decide up to {max_batch} transactions",
        description="Like `POST /v1/transactions` for each transaction, all with the same "
        "deadline; decisions come back in request order. All or nothing for conflicts: when any "
        "transaction_id conflicts (with an earlier request, or within the batch) nothing is sent "
        "and the answer is 409. Each transaction counts against the rate limit."
        + (
            " Card numbers may be sent in `card_number` (see the single route)."
            if tokenizer
            else ""
        ),
        responses={200: {"description": "The decisions."}, 409: CONFLICT, **AUTH, **BODY},
    )
    async def decide_batch(
        batch: Annotated[batch_model, Body()],
        caller: CallerDep,
        request: Request,
    ) -> Response:
        started = request_started(request)
        services = services_of(request)
        transactions = [tokenized(t) for t in batch.transactions]
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
