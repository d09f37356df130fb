"""Pure decisions: no ORM, no clock. Inputs come as arguments."""

import re
from typing import NamedTuple

ROOM_SLUG_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"
_ROOM_SLUG = re.compile(ROOM_SLUG_PATTERN)

BODY_MAX_CHARS = 4000
CLIENT_ID_MAX_CHARS = 64


def room_slug_valid(*, slug: object) -> bool:
    return isinstance(slug, str) and _ROOM_SLUG.fullmatch(slug) is not None


def body_clean(*, body: object) -> str | None:
    """The trimmed body if it is 1 to 4,000 characters, else None."""
    if not isinstance(body, str):
        return None
    body = body.strip()
    return body if 1 <= len(body) <= BODY_MAX_CHARS else None


def client_id_valid(*, client_id: object) -> bool:
    return client_id is None or (isinstance(client_id, str) and 1 <= len(client_id) <= CLIENT_ID_MAX_CHARS)


def room_access(*, is_public: bool, is_member: bool, is_creator: bool) -> bool:
    return is_public or is_member or is_creator


class Bucket(NamedTuple):
    tokens: float
    updated: float


def rate_take(*, bucket: Bucket, now: float, rate: float, burst: int) -> tuple[bool, Bucket]:
    """Token bucket: refill at ``rate`` per second up to ``burst``, then take one token.
    Returns whether the frame is allowed and the new bucket."""
    tokens = min(float(burst), bucket.tokens + (now - bucket.updated) * rate)
    if tokens >= 1.0:
        return True, Bucket(tokens - 1.0, now)
    return False, Bucket(tokens, now)


def flood_close(*, strikes: int, limit: int) -> bool:
    """Close with 4008 once a client has sent ``limit`` frames past a rate_limited error."""
    return strikes > limit
