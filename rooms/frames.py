"""Parsing of client frames into checked values; raises ChatError with a clear message."""

import json
from typing import Any

from rooms import policies
from rooms.errors import ChatError, invalid
from rooms.events import ErrorCode

HISTORY_DEFAULT_LIMIT = 50
HISTORY_MAX_LIMIT = 100
USERNAME_MAX_CHARS = 150


def decode(text: str) -> dict[str, Any]:
    """A frame must be one JSON object with a string `type`."""
    try:
        frame = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ChatError(ErrorCode.BAD_JSON, f"frame is not valid JSON: {exc.msg}") from None
    except (ValueError, RecursionError):
        # Valid JSON that Python refuses: a number of over 4,300 digits, or nesting deeper
        # than the recursion limit. The client's fault, so bad_json, not a server error.
        raise ChatError(
            ErrorCode.BAD_JSON, "frame cannot be decoded: nested too deeply, or a number too long"
        ) from None
    if not isinstance(frame, dict):
        raise ChatError(ErrorCode.BAD_JSON, "frame must be a JSON object")
    if not isinstance(frame.get("type"), str):
        raise invalid("frame needs a string 'type'")
    return frame


def ref(frame: object) -> str | None:
    """What an error refers to: the frame's client_id, else its type, else null."""
    if not isinstance(frame, dict):
        return None
    client_id = frame.get("client_id")
    if isinstance(client_id, str) and client_id:
        return client_id[: policies.CLIENT_ID_MAX_CHARS]
    kind = frame.get("type")
    return kind[:64] if isinstance(kind, str) else None


def ref_of_text(text: str | None) -> str | None:
    """The ref of a frame that was not handled (rate limited): parsed only for the error."""
    if text is None:
        return None
    try:
        return ref(json.loads(text))
    except (ValueError, RecursionError):  # as in decode(): a raise here would crash the socket
        return None


def room_slug(frame: dict, field: str = "room") -> str:
    slug = frame.get(field)
    if not policies.room_slug_valid(slug=slug):
        raise invalid(f"'{field}' must match ^[a-z0-9][a-z0-9_-]{{0,63}}$")
    return slug


def body(frame: dict) -> str:
    cleaned = policies.body_clean(body=frame.get("body"))
    if cleaned is None:
        raise invalid(f"'body' must be 1 to {policies.BODY_MAX_CHARS} characters after trimming")
    return cleaned


def client_id(frame: dict) -> str | None:
    value = frame.get("client_id")
    if not policies.client_id_valid(client_id=value):
        raise invalid(f"'client_id' must be a string of 1 to {policies.CLIENT_ID_MAX_CHARS} characters")
    return value


def username(frame: dict, field: str) -> str:
    value = frame.get(field)
    if not isinstance(value, str) or not 1 <= len(value) <= USERNAME_MAX_CHARS:
        raise invalid(f"'{field}' must be a username")
    return value


def optional_message_id(frame: dict, field: str) -> int | None:
    value = frame.get(field)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise invalid(f"'{field}' must be a message id (a non-negative integer)")
    return value


def history_limit(frame: dict) -> int:
    value = frame.get("limit", HISTORY_DEFAULT_LIMIT)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= HISTORY_MAX_LIMIT:
        raise invalid(f"'limit' must be an integer from 1 to {HISTORY_MAX_LIMIT}")
    return value


def optional_rtt(frame: dict) -> int | None:
    """`ping.rtt` (extension): the client's last measured round trip in ms, 0..600000."""
    value = frame.get("rtt")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 600_000:
        raise invalid("'rtt' must be the last round trip in milliseconds (0 to 600000)")
    return int(value)
