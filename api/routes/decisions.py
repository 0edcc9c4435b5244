"""``GET /v1/decisions/{transaction_id}``: a recent decision of the caller's bank."""

from __future__ import annotations

from typing import Annotated

import orjson
from fastapi import APIRouter, HTTPException, Path, Response

from api.deps import CallerDep, ServicesDep
from api.routes.common import AUTH, INVALID, problem
from api.schemas import StoredDecision

router = APIRouter(prefix="/v1", tags=["decisions"])


@router.get(
    # :path lets ids that contain "/" (sent as %2F) be looked up too.
    "/decisions/{transaction_id:anytext}",
    response_model=StoredDecision,
    summary="A past decision of your bank",
    description="The decision your bank was told for this transaction. When that was a degraded "
    "(fallback) decision, `stream_decision` holds the stream's own decision once it arrived. "
    "Decisions are kept for `api.decision_window_s` (default one hour); a transaction of another "
    "bank is a 404, exactly like an unknown one.",
    responses={
        404: problem("No recent decision of your bank has this transaction_id."),
        **AUTH,
        **INVALID,
    },
)
async def get_decision(
    transaction_id: Annotated[str, Path(min_length=1, max_length=64)],
    caller: CallerDep,
    services: ServicesDep,
) -> Response:
    entry = services.hub.stored(caller.bank_id, transaction_id)
    if entry is None or entry.told is None:
        raise HTTPException(404, "no recent decision of your bank has this transaction_id")
    told = orjson.loads(entry.told)
    late = entry.stream if entry.degraded else None
    told["stream_decision"] = orjson.loads(late) if late is not None else None
    return Response(orjson.dumps(told), media_type="application/json")
