"""``POST /v1/labels``: what the bank learned (fraud or genuine), forwarded to ``labels``."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
from fastapi import APIRouter, HTTPException

from api.deps import CallerDep, ServicesDep
from api.routes.common import AUTH, BODY, UNAVAILABLE, json_response
from api.schemas import LabelIn, LabelOut, parse_timestamp, rfc3339_ms
from api.stream_link import LabelNotDeliveredError

router = APIRouter(prefix="/v1", tags=["labels"])


@router.post(
    "/labels",
    status_code=202,
    response_model=LabelOut,
    summary="Report fraud or genuine",
    description="Puts the label on the `labels` topic with your bank's id; the stream's features "
    "and the training job use it from `reported_at` on. 202 means Kafka has it (acks=all). A "
    "label of a transaction the stream does not know (or another bank's) changes nothing.",
    responses={202: {"description": "The label as recorded."}, **AUTH, **BODY, **UNAVAILABLE},
)
async def post_label(label: LabelIn, caller: CallerDep, services: ServicesDep) -> Any:
    reported = parse_timestamp(label.reported_at) if label.reported_at else datetime.now(UTC)
    record: dict[str, Any] = {
        "transaction_id": label.transaction_id,
        "is_fraud": label.is_fraud,
        "reported_at": rfc3339_ms(reported),
        "bank_id": caller.bank_id,
    }
    if label.source is not None:
        record["source"] = label.source
    try:
        await services.link.send_label(label.transaction_id.encode(), orjson.dumps(record))
    except LabelNotDeliveredError as exc:
        raise HTTPException(
            503, f"the label was not recorded ({exc}); retry", headers={"Retry-After": "1"}
        ) from None
    return json_response(record, 202)
