"""Pure decisions: no database, no clock; every input is an argument."""

from __future__ import annotations

import pytest

from rooms.policies import (
    BODY_MAX_CHARS,
    Bucket,
    body_clean,
    client_id_valid,
    flood_close,
    rate_take,
    room_access,
    room_slug_valid,
)

# --- rate_take: a token bucket ----------------------------------------------------------


def test_a_full_bucket_allows_exactly_the_burst():
    bucket = Bucket(tokens=3.0, updated=100.0)
    results = []
    for _ in range(4):
        allowed, bucket = rate_take(bucket=bucket, now=100.0, rate=1.0, burst=3)
        results.append(allowed)
    assert results == [True, True, True, False]
    assert bucket == Bucket(tokens=0.0, updated=100.0)


def test_the_bucket_refills_at_the_rate():
    allowed, bucket = rate_take(bucket=Bucket(tokens=0.0, updated=100.0), now=100.4, rate=2.0, burst=5)
    assert allowed is False
    assert bucket.tokens == pytest.approx(0.8) and bucket.updated == 100.4
    allowed, bucket = rate_take(bucket=bucket, now=100.5, rate=2.0, burst=5)
    assert allowed is True
    assert bucket.tokens == pytest.approx(0.0)


def test_the_bucket_never_holds_more_than_the_burst():
    allowed, bucket = rate_take(bucket=Bucket(tokens=1.0, updated=0.0), now=3600.0, rate=10.0, burst=4)
    assert allowed is True
    assert bucket == Bucket(tokens=3.0, updated=3600.0)


def test_a_refused_frame_takes_no_token():
    allowed, bucket = rate_take(bucket=Bucket(tokens=0.5, updated=10.0), now=10.0, rate=1.0, burst=2)
    assert allowed is False and bucket.tokens == 0.5


def test_flood_close_only_past_the_strike_limit():
    assert [flood_close(strikes=n, limit=3) for n in (0, 1, 3, 4)] == [False, False, False, True]


# --- body_clean ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "cleaned"),
    [
        ("hi", "hi"),
        ("  hi \n", "hi"),
        ("a  b", "a  b"),
        ("x", "x"),
        ("x" * BODY_MAX_CHARS, "x" * BODY_MAX_CHARS),
        ("\t" + "x" * BODY_MAX_CHARS + "\n", "x" * BODY_MAX_CHARS),
        ("😀" * BODY_MAX_CHARS, "😀" * BODY_MAX_CHARS),
    ],
    ids=["plain", "trimmed", "inner-spaces-kept", "one-char", "4000", "4000-after-trim", "4000-emoji"],
)
def test_body_clean_accepts_1_to_4000_characters_after_trimming(body, cleaned):
    assert body_clean(body=body) == cleaned


@pytest.mark.parametrize(
    "body",
    ["", "   ", "\n\t ", "x" * (BODY_MAX_CHARS + 1), None, 42, ["hi"], b"hi"],
    ids=["empty", "spaces", "whitespace", "4001", "none", "int", "list", "bytes"],
)
def test_body_clean_refuses_empty_blank_too_long_or_non_text(body):
    assert body_clean(body=body) is None


# --- room_slug_valid ------------------------------------------------------------------------


@pytest.mark.parametrize("slug", ["a", "0", "general", "dev-ops", "dev_ops", "9lives", "a" * 64, "a-", "a_"])
def test_room_slug_valid_accepts(slug):
    assert room_slug_valid(slug=slug) is True


@pytest.mark.parametrize(
    "slug",
    [
        "",
        "a" * 65,
        "General",
        "gEneral",
        "-general",
        "_general",
        "gen eral",
        "général",
        "a.b",
        "a/b",
        "general\n",
        None,
        7,
    ],
    ids=[
        "empty",
        "65-chars",
        "uppercase",
        "inner-uppercase",
        "leading-dash",
        "leading-underscore",
        "space",
        "accent",
        "dot",
        "slash",
        "trailing-newline",
        "none",
        "int",
    ],
)
def test_room_slug_valid_refuses(slug):
    assert room_slug_valid(slug=slug) is False


# --- client_id_valid, room_access -------------------------------------------------------------


@pytest.mark.parametrize(
    ("client_id", "valid"), [(None, True), ("c", True), ("c" * 64, True), ("", False), ("c" * 65, False), (5, False)]
)
def test_client_id_valid_is_absent_or_1_to_64_characters(client_id, valid):
    assert client_id_valid(client_id=client_id) is valid


@pytest.mark.parametrize(
    ("is_public", "is_member", "is_creator", "allowed"),
    [
        (True, False, False, True),
        (False, True, False, True),
        (False, False, True, True),
        (False, False, False, False),
    ],
)
def test_room_access_public_or_member_or_creator(is_public, is_member, is_creator, allowed):
    assert room_access(is_public=is_public, is_member=is_member, is_creator=is_creator) is allowed
