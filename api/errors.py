"""Error responses: every 4xx says what is wrong in the API's JSON shape, and never echoes input.

FastAPI's default 422 body repeats each offending value (``input``) and its context (``ctx``); here
only ``loc``, ``msg`` and ``type`` are kept, so a refused card number never comes back in a
response (or a log that records responses). A location element that is itself user input (an
unexpected JSON key) is redacted when it looks like a card number.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.hub import ConflictError, ReviewConflictError
from api.metrics import route_template
from scoring.records import looks_like_pan

log = logging.getLogger("fraudstream.api")

FASTAPI_BODY_ERROR = "There was an error parsing the body"
BANK_ID_IN_BODY = (
    "bank_id is not part of the body: the bank is the one your API key belongs to; leave it out"
)
CARD_NUMBER_NOT_TOKENIZED = (
    "card_number is accepted only where the API tokenizes card numbers (a tokenization key is "
    "configured: FRAUD_API__TOKENIZATION_KEY); send a card_id token instead"
)


def field_problems(errors: Sequence[Any]) -> list[dict[str, Any]]:
    """loc/msg/type of each validation error; values and contexts dropped."""
    problems = []
    for error in errors:
        loc = [_safe_loc(part) for part in error.get("loc", ())]
        msg = str(error.get("msg", "invalid"))
        kind = str(error.get("type", "value_error"))
        if kind == "extra_forbidden" and loc[-1:] == ["bank_id"]:
            msg = BANK_ID_IN_BODY
        if kind == "extra_forbidden" and loc[-1:] == ["card_number"]:
            msg = CARD_NUMBER_NOT_TOKENIZED
        problems.append({"loc": loc, "msg": msg, "type": kind})
    return problems


def _safe_loc(part: Any) -> str | int:
    if isinstance(part, int) and not isinstance(part, bool):
        return part
    text = str(part)
    return "<redacted>" if looks_like_pan(text) else text


def install(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def validation_failed(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": field_problems(exc.errors())}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 400 and exc.detail == FASTAPI_BODY_ERROR:
            # FastAPI's 400 for a body it cannot decode at all (not UTF-8): as invalid as bad JSON.
            problem = {"loc": ["body"], "msg": "the body is not UTF-8 JSON", "type": "json_invalid"}
            return JSONResponse({"detail": [problem]}, status_code=422)
        return await http_exception_handler(request, exc)

    @app.exception_handler(ConflictError)
    async def conflict(_request: Request, exc: ConflictError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=409)

    @app.exception_handler(ReviewConflictError)
    async def review_conflict(_request: Request, exc: ReviewConflictError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=409)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        # A bug. Logged with the route and the stack but not the message or the request: either
        # may hold what the caller sent.
        route = route_template(request.scope)
        stack = "".join(traceback.format_tb(exc.__traceback__))
        log.error("unexpected %s in %s %s:\n%s", type(exc).__name__, request.method, route, stack)
        return JSONResponse({"detail": "internal error"}, status_code=500)
