"""Parsing of client frames: each field either comes back checked or raises the error the
client will see."""

from __future__ import annotations

import pytest

from rooms import frames
from rooms.errors import ChatError


def raises(code: str, fn, *args, **kwargs) -> ChatError:
    with pytest.raises(ChatError) as caught:
        fn(*args, **kwargs)
    assert caught.value.code == code
    assert caught.value.message
    return caught.value


# --- decode ----------------------------------------------------------------------------------


def test_decode_returns_a_json_object_with_a_string_type():
    assert frames.decode('{"type": "chat", "room": "general", "body": "hi"}') == {
        "type": "chat",
        "room": "general",
        "body": "hi",
    }


@pytest.mark.parametrize("text", ["", "not json", "{", "{'type': 'ping'}", '{"type": "ping"} trailing'])
def test_decode_of_text_that_is_not_json_is_bad_json(text):
    raises("bad_json", frames.decode, text)


def test_decode_of_json_nested_too_deeply_is_bad_json():
    raises("bad_json", frames.decode, '{"type": "ping", "x": ' + "[" * 30_000 + "]" * 30_000 + "}")


def test_decode_of_a_number_too_long_to_convert_is_bad_json():
    raises("bad_json", frames.decode, '{"type": "ping", "n": ' + "1" * 5_000 + "}")


@pytest.mark.parametrize("text", ["[]", '["ping"]', "1", "null", '"ping"', "true"])
def test_decode_of_json_that_is_not_an_object_is_bad_json(text):
    raises("bad_json", frames.decode, text)


@pytest.mark.parametrize("text", ["{}", '{"type": 1}', '{"type": null}', '{"type": ["ping"]}', '{"kind": "ping"}'])
def test_decode_of_an_object_without_a_string_type_is_invalid(text):
    raises("invalid", frames.decode, text)


# --- ref ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("frame", "expected"),
    [
        ({"type": "chat", "client_id": "c1"}, "c1"),
        ({"type": "chat"}, "chat"),
        ({"type": "chat", "client_id": ""}, "chat"),
        ({"type": "chat", "client_id": 7}, "chat"),
        ({"type": "chat", "client_id": "c" * 100}, "c" * 64),
        ({"type": "t" * 100}, "t" * 64),
        ({"type": 5}, None),
        ({}, None),
        (None, None),
        (["chat"], None),
    ],
    ids=[
        "client-id",
        "type",
        "empty-client-id",
        "int-client-id",
        "long-client-id",
        "long-type",
        "int-type",
        "empty",
        "none",
        "list",
    ],
)
def test_ref_is_the_client_id_else_the_type_else_null(frame, expected):
    assert frames.ref(frame) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"type": "chat", "client_id": "c1"}', "c1"),
        ('{"type": "ping"}', "ping"),
        (None, None),
        ("not json", None),
        ("[1]", None),
        ('{"type": "ping", "x": ' + "[" * 30_000 + "]" * 30_000 + "}", None),
        ('{"type": "ping", "n": ' + "1" * 5_000 + "}", None),
    ],
    ids=["client-id", "type", "binary", "not-json", "not-an-object", "nested-too-deeply", "number-too-long"],
)
def test_ref_of_text_names_an_unhandled_frame_and_never_raises(text, expected):
    assert frames.ref_of_text(text) == expected


# --- fields ----------------------------------------------------------------------------------------


def test_room_slug_returns_a_valid_name():
    assert frames.room_slug({"room": "general"}) == "general"
    assert frames.room_slug({"to_room": "b"}, field="to_room") == "b"


@pytest.mark.parametrize(
    "frame", [{}, {"room": ""}, {"room": "General"}, {"room": "-x"}, {"room": "a" * 65}, {"room": 3}]
)
def test_room_slug_refuses_a_missing_or_invalid_name(frame):
    error = raises("invalid", frames.room_slug, frame)
    assert "room" in error.message


def test_body_is_trimmed():
    assert frames.body({"body": "  hi  "}) == "hi"


@pytest.mark.parametrize("frame", [{}, {"body": ""}, {"body": "  "}, {"body": "x" * 4001}, {"body": 1}], ids=repr)
def test_body_refuses_a_missing_blank_too_long_or_non_text_body(frame):
    raises("invalid", frames.body, frame)


def test_client_id_is_optional():
    assert frames.client_id({}) is None
    assert frames.client_id({"client_id": None}) is None
    assert frames.client_id({"client_id": "c" * 64}) == "c" * 64


@pytest.mark.parametrize("value", ["", "c" * 65, 5, ["c"]], ids=["empty", "65-chars", "int", "list"])
def test_client_id_refuses_a_bad_value(value):
    raises("invalid", frames.client_id, {"client_id": value})


def test_username_returns_the_name():
    assert frames.username({"to": "bob"}, "to") == "bob"
    assert frames.username({"with": "u" * 150}, "with") == "u" * 150


@pytest.mark.parametrize("frame", [{}, {"to": ""}, {"to": None}, {"to": 5}, {"to": "u" * 151}], ids=repr)
def test_username_refuses_a_missing_or_bad_name(frame):
    error = raises("invalid", frames.username, frame, "to")
    assert "'to'" in error.message


def test_optional_message_id_accepts_absent_null_and_non_negative_integers():
    assert frames.optional_message_id({}, "since") is None
    assert frames.optional_message_id({"since": None}, "since") is None
    assert frames.optional_message_id({"since": 0}, "since") == 0
    assert frames.optional_message_id({"before": 2**53}, "before") == 2**53


@pytest.mark.parametrize("value", [-1, 1.0, "5", True, False, [1]], ids=repr)
def test_optional_message_id_refuses_anything_else(value):
    raises("invalid", frames.optional_message_id, {"since": value}, "since")


def test_history_limit_defaults_to_50_and_accepts_1_to_100():
    assert frames.history_limit({}) == 50
    assert frames.history_limit({"limit": 1}) == 1
    assert frames.history_limit({"limit": 100}) == 100


@pytest.mark.parametrize("value", [0, 101, -5, "10", 10.0, True], ids=repr)
def test_history_limit_refuses_anything_else(value):
    raises("invalid", frames.history_limit, {"limit": value})
