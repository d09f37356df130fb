"""HTTP plumbing of the service API (PROTOCOL.md §5): the error shape, the bearer key,
and parsing of request bodies and parameters into checked values.

Every problem is ``{"error": {"code", "message"}}`` with a 4xx status: views raise
ApiError and ``presence.views.ApiView`` turns it into the response.
"""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Any

from django.http import HttpRequest, JsonResponse

from presence.services.push import TARGETS
from rooms.policies import room_slug_valid

BODY_MAX_BYTES = 64 * 1024
TOPIC_MAX_CHARS = 100
USERNAME_MAX_CHARS = 150
CONNECTION_ID_MAX_CHARS = 64


class ApiErrorCode(StrEnum):
    """The `error.code` values of the HTTP API; the first four are the protocol's own."""

    BAD_JSON = "bad_json"  # 400: not JSON, not UTF-8, or not an object
    INVALID = "invalid"  # 400: JSON of the wrong shape
    NOT_FOUND = "not_found"  # 404: unknown user, room, connection or path
    FORBIDDEN = "forbidden"  # 403: reserved; not used yet
    TOO_LARGE = "too_large"  # 400: a body over 64 KiB
    UNAUTHORIZED = "unauthorized"  # 401: no, unknown or revoked service key
    METHOD_NOT_ALLOWED = "method_not_allowed"  # 405
    INTERNAL = "internal"  # 500: a server fault, logged; never caused by the request's content


class ApiError(Exception):
    def __init__(self, status: int, code: ApiErrorCode, message: str):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def error_response(*, status: int, code: str, message: str) -> JsonResponse:
    response = JsonResponse({"error": {"code": str(code), "message": message}}, status=status)
    if status == 401:
        response["WWW-Authenticate"] = 'Bearer realm="api"'
    return response


def invalid(message: str) -> ApiError:
    return ApiError(400, ApiErrorCode.INVALID, message)


def bearer_key(request: HttpRequest) -> str | None:
    """The key of an ``Authorization: Bearer <key>`` header, or None."""
    scheme, _, key = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        return None
    return key.strip()


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def body_object(request: HttpRequest) -> dict[str, Any]:
    """The request body as a JSON object of at most 64 KiB, or ApiError(400)."""
    try:
        declared = int(request.headers.get("Content-Length") or 0)
    except ValueError:
        declared = 0
    if declared > BODY_MAX_BYTES or len(request.body) > BODY_MAX_BYTES:
        raise ApiError(400, ApiErrorCode.TOO_LARGE, f"the body is over {BODY_MAX_BYTES} bytes")
    try:
        # NaN and Infinity would be forwarded to browsers as invalid JSON: refused.
        body = json.loads(request.body.decode("utf-8"), parse_constant=_no_constants)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise ApiError(400, ApiErrorCode.BAD_JSON, "the body is not valid UTF-8 JSON") from None
    if not isinstance(body, dict):
        raise ApiError(400, ApiErrorCode.BAD_JSON, "the body must be a JSON object")
    return body


def notify_fields(body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """``topic`` (1 to 100 characters, not blank) and ``data`` (a JSON object), checked."""
    topic = body.get("topic")
    if not isinstance(topic, str) or not topic.strip() or len(topic) > TOPIC_MAX_CHARS:
        raise invalid(f"'topic' must be a non-blank string of at most {TOPIC_MAX_CHARS} characters")
    data = body.get("data")
    if not isinstance(data, dict):
        raise invalid("'data' must be a JSON object")
    return topic, data


def push_fields(body: dict[str, Any]) -> tuple[dict[str, str], str, dict[str, Any]]:
    """``to`` (exactly one of user, room, connection), ``topic`` and ``data``, checked."""
    to = body.get("to")
    if not isinstance(to, dict) or len(to) != 1 or next(iter(to)) not in TARGETS:
        raise invalid("'to' must be an object with exactly one of 'user', 'room' or 'connection'")
    kind, value = next(iter(to.items()))
    if kind == "user":
        username(value, "to.user")
    elif kind == "room" and not room_slug_valid(slug=value):
        raise invalid("'to.room' must be a room name (^[a-z0-9][a-z0-9_-]{0,63}$)")
    elif kind == "connection" and (not isinstance(value, str) or not 1 <= len(value) <= CONNECTION_ID_MAX_CHARS):
        raise invalid("'to.connection' must be a connection id (a string)")
    topic, data = notify_fields(body)
    return {kind: value}, topic, data


def username(value: object, field: str) -> str:
    if not isinstance(value, str) or not 1 <= len(value) <= USERNAME_MAX_CHARS or not value.isprintable():
        raise invalid(f"'{field}' must be a username (1 to {USERNAME_MAX_CHARS} printable characters)")
    return value


def username_param(request: HttpRequest) -> str | None:
    """The optional ``user`` query parameter, given at most once, checked."""
    values = request.GET.getlist("user")
    if not values:
        return None
    if len(values) > 1:
        raise invalid("give 'user' at most once")
    return username(values[0], "user")
