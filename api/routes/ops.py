"""``/healthz``, ``/readyz`` and ``/metrics``: the paths every fraudstream service serves.

Not in the OpenAPI schema (they are for the platform, not for banks) and not authenticated (the
chart's probes and ServiceMonitor call them; they reveal no bank's data).
"""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.deps import ServicesDep
from api.routes.common import json_response

router = APIRouter(include_in_schema=False)


@router.get("/healthz")
async def healthz(services: ServicesDep) -> Response:
    ok, detail = services.link.alive()
    return json_response({"ok": ok, "detail": detail}, 200 if ok else 503)


@router.get("/readyz")
async def readyz(services: ServicesDep) -> Response:
    checks = [services.link.status(), services.models.status()]
    ok = all(passed for passed, _ in checks)
    detail = "; ".join(why for _, why in checks)
    return json_response({"ok": ok, "detail": detail}, 200 if ok else 503)


@router.get("/metrics")
def metrics(services: ServicesDep) -> Response:
    registry = services.hub.metrics.registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
