"""The request validation Overseerr runs before any route (express-openapi-validator).

Overseerr validates every request against its OpenAPI document, so a client sees 400s a
lenient fake would never give (NOTES.md 3.1 and 3.2): unknown query parameters, wrong types,
values outside an enum, and, the common breakage, reserved characters in a string parameter
(``+`` for a space, unencoded ``'``, ``:``, ``!``...): the raw, undecoded query string is
checked, so ``query=star%20wars`` passes and ``query=star+wars`` does not. Errors are
``{"message": ..., "errors": [{"path": ".query.x", "message": ...}]}``. Validation runs
before authentication, as in Overseerr, so a malformed anonymous call gets 400, not 403.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

_RESERVED = re.compile(r"[:/?#\[\]@!$&'()*+,;=]")
_NUMBER = re.compile(r"^-?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?$")


@dataclass(frozen=True)
class Param:
    kind: str = "string"  # "string", "number" or "boolean"
    enum: tuple[str, ...] | None = None
    required: bool = False


def bad_request(message: str, path: str, detail: str | None = None) -> JSONResponse:
    errors = [{"path": path, "message": detail or message}]
    return JSONResponse({"message": message, "errors": errors}, status_code=400)


def _raw_pairs(query_string: str) -> list[tuple[str, str]]:
    pairs = []
    for part in query_string.split("&"):
        if part:
            key, _, value = part.partition("=")
            pairs.append((key, value))
    return pairs


def check_value(where: str, name: str, value: str, spec: Param) -> JSONResponse | None:
    """Type and enum check of one decoded value."""
    path = f".{where}.{name}"
    if spec.kind == "number" and not _NUMBER.match(value):
        return bad_request(f"request/{where}/{name} must be number", path, "must be number")
    if spec.enum is not None and value not in spec.enum:
        allowed = ", ".join(spec.enum)
        detail = f"must be equal to one of the allowed values: {allowed}"
        return bad_request(f"request/{where}/{name} {detail}", path, detail)
    return None


def check_query(request: Request, params: Mapping[str, Param]) -> JSONResponse | None:
    """Validate the query string against ``params``; None when it is acceptable."""
    raw = request.scope.get("query_string", b"").decode("latin-1")
    pairs = _raw_pairs(raw)
    for key, _ in pairs:
        if key not in params:
            message = f"Unknown query parameter '{key}'"
            return bad_request(message, f".query.{key}")
    for key, value in pairs:
        if params[key].kind == "string" and _RESERVED.search(value):
            message = (
                f"Parameter '{key}' must be url encoded. "
                "Its value may not contain reserved characters."
            )
            return bad_request(message, f".query.{key}")
    for name, spec in params.items():
        decoded = request.query_params.get(name)
        if decoded is None:
            if spec.required:
                detail = f"must have required property '{name}'"
                return bad_request(f"request/query {detail}", f".query.{name}", detail)
            continue
        error = check_value("query", name, decoded, spec)
        if error is not None:
            return error
    return None


def check_body(body: Any, fields: Mapping[str, Param]) -> JSONResponse | None:
    """Validate a JSON object body's required fields, types and enums."""
    if not isinstance(body, dict):
        return bad_request("request/body must be object", ".body", "must be object")
    for name, spec in fields.items():
        if name not in body:
            if spec.required:
                detail = f"must have required property '{name}'"
                return bad_request(f"request/body {detail}", f".body.{name}", detail)
            continue
        value = body[name]
        if spec.kind == "number" and (
            isinstance(value, bool) or not isinstance(value, int | float)
        ):
            return bad_request(
                f"request/body/{name} must be number", f".body.{name}", "must be number"
            )
        if spec.kind == "boolean" and not isinstance(value, bool):
            return bad_request(
                f"request/body/{name} must be boolean", f".body.{name}", "must be boolean"
            )
        if spec.kind == "string" and not isinstance(value, str):
            return bad_request(
                f"request/body/{name} must be string", f".body.{name}", "must be string"
            )
        if spec.enum is not None:
            error = check_value("body", name, str(value), spec)
            if error is not None:
                return error
    return None


def paging(request: Request, default_take: int) -> tuple[int, int]:
    take_raw = request.query_params.get("take")
    skip_raw = request.query_params.get("skip")
    take = int(float(take_raw)) if take_raw else default_take
    skip = int(float(skip_raw)) if skip_raw else 0
    return max(take, 0), max(skip, 0)


def page_info(total: int, take: int, skip: int) -> dict[str, int]:
    """Overseerr's pageInfo: ``results`` is the total, ``page`` derived from ``skip``."""
    pages = -(-total // take) if take else 0
    page = (-(-skip // take) if take else 0) + 1
    return {"pages": pages, "pageSize": take, "results": total, "page": page}
