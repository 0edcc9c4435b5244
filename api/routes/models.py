"""``GET /v1/models``: the served, champion and challenger model versions."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from api.deps import CallerDep, ServicesDep
from api.routes.common import AUTH
from api.schemas import ModelsOut

router = APIRouter(prefix="/v1", tags=["models"])


@router.get(
    "/models",
    response_model=ModelsOut,
    summary="Model versions, training windows, metrics",
    description="`serving`: the version this replica loaded (and hot-swaps on promotions); "
    "`champion` and `challenger`: what the registry's aliases point at now. Each with its "
    "training window and offline metrics.",
    responses={**AUTH},
)
def get_models(_caller: CallerDep, services: ServicesDep) -> Any:
    # A plain function: FastAPI runs it on a worker thread, so registry reads never block the loop.
    return services.models.describe()
