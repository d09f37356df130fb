"""Log output (chatsite/logging.py): JSON lines, and credentials redacted in any format."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from chatsite import logging as chat_logging

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "ct_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8S9t0u1v"
SERVICE_KEY = "sk_" + "Z9y8X7w6V5u4T3s2R1q0P9o8N7m6L5k4J3i2H1g0f9e"


def record(msg: str, *args, exc_info=None, **extra) -> logging.LogRecord:
    return logging.getLogger("chat.test").makeRecord(
        "chat.test", logging.INFO, __file__, 1, msg, args, exc_info, extra=extra or None
    )


def emitted(rec: logging.LogRecord, *, redact: bool = True) -> dict:
    if redact:
        assert chat_logging.RedactFilter().filter(rec) is True
    return json.loads(chat_logging.JsonFormatter().format(rec))


@pytest.fixture
def server_name():
    chat_logging.server_set("test-server-1")
    yield "test-server-1"
    chat_logging.server_set(None)


def test_json_line_has_the_expected_fields(server_name):
    line = emitted(record("room %s: %d messages", "general", 3, connection="c1", count=3))
    assert line["message"] == "room general: 3 messages"
    assert line["level"] == "INFO"
    assert line["logger"] == "chat.test"
    assert line["pid"] == os.getpid()
    assert line["server"] == server_name
    assert line["time"].endswith("Z") and "T" in line["time"]
    assert line["connection"] == "c1" and line["count"] == 3


def test_json_line_is_one_line_even_for_a_multiline_message():
    text = chat_logging.JsonFormatter().format(record("first\nsecond"))
    assert "\n" not in text
    assert json.loads(text)["message"] == "first\nsecond"


def test_extra_fields_never_replace_the_standard_ones():
    line = emitted(record("hello", time="forged", server="forged", pid=0))
    assert line["time"] != "forged" and line["server"] != "forged" and line["pid"] == os.getpid()


def test_extra_values_that_are_not_json_become_strings():
    line = emitted(record("hello", when=object(), ids=(1, 2), nested={"a": [1, {"b": None}]}))
    assert line["when"].startswith("<object object")
    assert line["ids"] == [1, 2]
    assert line["nested"] == {"a": [1, {"b": None}]}


def test_json_line_carries_the_exception():
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        line = emitted(record("failed", exc_info=sys.exc_info()))
    assert "RuntimeError: boom" in line["exc"]


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        (f"login with {TOKEN} failed", TOKEN),
        (f"service key {SERVICE_KEY} used", SERVICE_KEY),
        (f"Authorization: Bearer {TOKEN}", TOKEN),
        ("{'Authorization': 'Basic dXNlcjpwYXNzd29yZA==', 'Host': 'x'}", "dXNlcjpwYXNzd29yZA=="),
        ("header was bearer abcdefghijklmnop", "abcdefghijklmnop"),
        ("GET /ws/chat/?token=hunter2hunter2&room=general", "hunter2hunter2"),
        ("Cookie: sessionid=abc123def456; csrftoken=zzz999", "abc123def456"),
    ],
)
def test_credentials_are_redacted(text, secret):
    assert secret not in chat_logging.redact(text)
    assert chat_logging.REDACTED in chat_logging.redact(text)


def test_key_prefix_shown_to_recognise_a_key_stays_readable():
    prefix = SERVICE_KEY[:10]
    assert chat_logging.redact(f"service key {prefix} revoked") == f"service key {prefix} revoked"


def test_ordinary_messages_are_unchanged():
    text = "swept server host-12-ab: 3 sockets in presence, 2 open in the registry; task_schedule_room_sweeper ok"
    assert chat_logging.redact(text) == text


def test_filter_redacts_arguments_extras_and_tracebacks():
    try:
        raise ValueError(f"bad token {TOKEN}")
    except ValueError:
        rec = record("auth %s", TOKEN, header=f"Bearer {TOKEN}", exc_info=sys.exc_info())
    line = emitted(rec)
    assert TOKEN not in json.dumps(line)
    assert line["message"] == f"auth ct_{chat_logging.REDACTED}"
    assert "ValueError: bad token" in line["exc"]


def test_json_formatter_redacts_even_without_the_filter():
    line = emitted(record("auth %s", TOKEN, headers={"Authorization": f"Bearer {TOKEN}"}), redact=False)
    assert TOKEN not in json.dumps(line)


def test_filter_leaves_a_malformed_call_for_the_handler_to_report():
    rec = record("%s and %s", "only one")
    assert chat_logging.RedactFilter().filter(rec) is True
    assert rec.args == ("only one",)


def test_settings_select_json_lines_and_redact(tmp_path):
    """DJANGO_LOG_FORMAT=json wires the formatter and the filter into the console handler."""
    code = (
        "import django, logging; django.setup(); "
        f"logging.getLogger('rooms.consumers').warning('closing %s', 'Bearer {TOKEN}', extra={{'connection': 'c1'}}); "
        # Django's default config has its own console handler for `django` under DEBUG.
        f"logging.getLogger('django.request').warning('Forbidden: /api/?token={TOKEN}')"
    )
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "chatsite.settings",
        "DJANGO_DEBUG": "true",
        "DJANGO_LOG_LEVEL": "INFO",
        "DJANGO_LOG_FORMAT": "json",
        "PRESENCE_SERVER_NAME": "proc-a",
    }
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stderr.splitlines()]  # every line is JSON
    assert [line["logger"] for line in lines] == ["rooms.consumers", "django.request"]
    assert lines[0]["server"] == "proc-a"
    assert lines[0]["connection"] == "c1"
    assert TOKEN not in result.stderr


def test_unknown_log_format_is_refused():
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "chatsite.settings", "DJANGO_LOG_FORMAT": "xml"}
    result = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert result.returncode != 0
    assert "DJANGO_LOG_FORMAT" in result.stderr
