"""The review queue: ``GET /v1/reviews`` and ``POST /v1/reviews/{transaction_id}``."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, HTTPException, Path, Query

from api.deps import CallerDep, ServicesDep, single_valued_query
from api.routes.common import AUTH, BODY, INVALID, UNAVAILABLE, json_response, problem
from api.schemas import ReviewOut, ReviewPage, ReviewVerdictIn
from api.stream_link import LabelNotDeliveredError

# The only routes with query parameters: each must be given once (api.deps.single_valued_query).
router = APIRouter(prefix="/v1", tags=["reviews"], dependencies=[Depends(single_valued_query)])


@router.get(
    "/reviews",
    response_model=ReviewPage,
    summary="Decisions awaiting review",
    description="Your bank's transactions the stream decided `review` that have no analyst "
    "verdict yet, oldest decision first, with their reasons. Page with `cursor` (the "
    "`next_cursor` of the previous page). Each replica builds the queue from the `decisions` "
    "topic (since it started, plus `api.decision_window_s` read back) and learns verdicts from "
    "`labels`, so every replica lists the same queue once caught up.",
    responses={**AUTH, **INVALID},
)
async def list_reviews(
    caller: CallerDep,
    services: ServicesDep,
    limit: Annotated[int, Query(ge=1, le=100, description="Items per page.")] = 50,
    cursor: Annotated[
        str | None,
        Query(min_length=1, max_length=200, description="Where the previous page ended."),
    ] = None,
) -> Any:
    items, next_cursor = services.hub.reviews.page(caller.bank_id, cursor, limit)
    page = {
        "items": [
            {"transaction_id": tx_id, "decision": orjson.loads(value), "cursor": key}
            for tx_id, value, key in items
        ],
        "next_cursor": next_cursor,
    }
    return json_response(page)


@router.post(
    "/reviews/{transaction_id:anytext}",
    response_model=ReviewOut,
    summary="Record an analyst's verdict",
    description="The verdict becomes a label (`source: analyst`) on the `labels` topic and the "
    "transaction leaves the queue. Sending the same verdict again returns it again; the other "
    "verdict is a 409.",
    responses={
        404: problem("No transaction of your bank with this id is awaiting review."),
        409: problem("The transaction was already reviewed with the other verdict."),
        **AUTH,
        **BODY,
        **UNAVAILABLE,
    },
)
async def post_review(
    transaction_id: Annotated[str, Path(min_length=1, max_length=64)],
    verdict: ReviewVerdictIn,
    caller: CallerDep,
    services: ServicesDep,
) -> Any:
    try:
        label = await services.hub.review(caller.bank_id, transaction_id, verdict.is_fraud)
    except KeyError:
        raise HTTPException(
            404, "no transaction of your bank with this id is awaiting review"
        ) from None
    except LabelNotDeliveredError as exc:
        raise HTTPException(
            503, f"the verdict was not recorded ({exc}); retry", headers={"Retry-After": "1"}
        ) from None
    return json_response(
        {"transaction_id": transaction_id, "is_fraud": label["is_fraud"], "label": label}
    )
