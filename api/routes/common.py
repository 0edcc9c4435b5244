"""Response documentation shared by the routes, and small response helpers."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import Response
from starlette.convertors import Convertor, register_url_convertor

from api.schemas import Problem, ValidationProblem


def problem(description: str) -> dict[str, Any]:
    return {"model": Problem, "description": description}


AUTH: dict[int | str, dict[str, Any]] = {
    401: problem("Missing or invalid API key."),
    429: {
        "model": Problem,
        "description": "This API key's rate limit is exceeded (per replica).",
        "headers": {
            "Retry-After": {
                "description": "Seconds to wait before retrying.",
                "schema": {"type": "integer", "minimum": 1},
            }
        },
    },
}
INVALID: dict[int | str, dict[str, Any]] = {
    422: {
        "model": ValidationProblem,
        "description": "Invalid input, field by field (values are never echoed).",
    }
}
BODY: dict[int | str, dict[str, Any]] = {
    **INVALID,
    413: problem("The body is larger than the configured limit."),
}
UNAVAILABLE: dict[int | str, dict[str, Any]] = {
    503: problem("Kafka did not take the record in time; nothing was recorded. Retry."),
}


def json_response(content: Any, status_code: int = 200, **headers: str) -> Response:
    return Response(
        orjson.dumps(content), status_code=status_code, media_type="application/json",
        headers=headers or None,
    )  # fmt: skip


class AnyTextConvertor(Convertor[str]):
    """A path parameter that is the whole rest of the path, newlines included.

    Starlette's ``{x:path}`` is ``.*`` followed by ``$``, and in Python ``$`` also matches before a
    final newline: ``/v1/decisions/a%0A`` matched ``a`` (another transaction) and ``.../%0A`` an
    empty id. Found by schemathesis' long profile (benchmarks/api_fuzz.py).
    """

    regex = "(?s:.*)"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("anytext", AnyTextConvertor())
