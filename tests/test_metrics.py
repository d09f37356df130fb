"""GET /metrics (who may read it, what it serves) and the counting functions the chat
consumer calls on its per-frame path (chatsite/metrics.py)."""

from __future__ import annotations

import os
import urllib.request

import pytest
from django.test import Client as DjangoClient
from prometheus_client.parser import text_string_to_metric_families

from chatsite import logging as chat_logging
from chatsite import metrics
from chatsite.views_metrics import metrics_access
from rooms import events

OUTSIDER = "203.0.113.5"
CHAT_METRICS = [
    "chat_server_info",
    "chat_connections_open",
    "chat_connects_total",
    "chat_disconnects_total",
    "chat_frames_in_total",
    "chat_frames_out_total",
    "chat_errors_total",
    "chat_delivery_latency_seconds_bucket",
    "chat_delivery_latency_seconds_count",
    "chat_delivery_latency_seconds_sum",
    "process_resident_memory_bytes",
    "process_cpu_seconds_total",
]


def value(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


def samples(text: str) -> dict[tuple[str, tuple], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


@pytest.fixture
def registered_as():
    """``registered_as(name)`` does what the process does when it registers in presence."""
    yield lambda name: metrics.server_info(name=name)
    chat_logging.server_set(None)


# --- Access --------------------------------------------------------------------------


def test_metrics_are_served_to_localhost(client):
    response = client.get("/metrics")  # the test client's REMOTE_ADDR is 127.0.0.1
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")


def test_metrics_are_refused_to_other_addresses(client):
    response = client.get("/metrics", REMOTE_ADDR=OUTSIDER)
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "forbidden"


def test_metrics_key_admits_any_address(client, settings):
    settings.CHAT_METRICS_KEY = "metrics-key-for-tests"
    response = client.get("/metrics", REMOTE_ADDR=OUTSIDER, HTTP_AUTHORIZATION="Bearer metrics-key-for-tests")
    assert response.status_code == 200


def test_wrong_metrics_key_is_refused(client, settings):
    settings.CHAT_METRICS_KEY = "metrics-key-for-tests"
    response = client.get("/metrics", REMOTE_ADDR=OUTSIDER, HTTP_AUTHORIZATION="Bearer metrics-key-for-test")
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "forbidden"


def test_empty_metrics_key_turns_key_access_off(client, settings):
    settings.CHAT_METRICS_KEY = ""
    assert client.get("/metrics", REMOTE_ADDR=OUTSIDER, HTTP_AUTHORIZATION="Bearer ").status_code == 403
    assert client.get("/metrics", REMOTE_ADDR=OUTSIDER, HTTP_AUTHORIZATION="Bearer x").status_code == 403


def test_metrics_networks_are_read_at_request_time(client, settings):
    settings.CHAT_METRICS_NETWORKS = ["203.0.113.0/24"]
    assert client.get("/metrics", REMOTE_ADDR=OUTSIDER).status_code == 200
    assert client.get("/metrics").status_code == 403


@pytest.mark.parametrize("header", ["HTTP_X_FORWARDED_FOR", "HTTP_X_REAL_IP"])
def test_metrics_through_a_proxy_need_the_key(client, settings, header):
    """The balancer on this host reaches daphne from 127.0.0.1; the client behind it must
    not inherit that address (nor choose one with X-Real-IP)."""
    settings.CHAT_METRICS_KEY = "metrics-key-for-tests"
    assert client.get("/metrics", **{header: "127.0.0.1"}).status_code == 403
    response = client.get("/metrics", HTTP_AUTHORIZATION="Bearer metrics-key-for-tests", **{header: "198.51.100.7"})
    assert response.status_code == 200


def test_ipv4_mapped_peer_matches_ipv4_network():
    assert metrics_access(ip="::ffff:127.0.0.1", key=None, networks=["127.0.0.1/32"], expected_key="")
    assert metrics_access(ip="::1", key=None, networks=["::1/128"], expected_key="")
    assert not metrics_access(ip="::ffff:203.0.113.5", key=None, networks=["127.0.0.1/32"], expected_key="")
    assert not metrics_access(ip=None, key=None, networks=["0.0.0.0/0"], expected_key="")


def test_malformed_metrics_network_admits_by_key_only():
    assert not metrics_access(ip="127.0.0.1", key=None, networks=["not-a-network"], expected_key="k")
    assert metrics_access(ip="127.0.0.1", key="k", networks=["not-a-network"], expected_key="k")


def test_metrics_refuse_other_methods():
    response = DjangoClient(enforce_csrf_checks=True).post("/metrics")
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"


# --- What is served ------------------------------------------------------------------


def test_metrics_output_parses_and_names_every_metric(client, registered_as):
    registered_as("test-server")
    response = client.get("/metrics")
    parsed = samples(response.content.decode())
    names = {name for name, _ in parsed}
    assert set(CHAT_METRICS) <= names
    assert parsed[("chat_server_info", (("pid", str(os.getpid())), ("server", "test-server")))] == 1.0


def test_server_info_names_the_configured_server_before_registration(client, settings):
    settings.PRESENCE_SERVER_NAME = "configured-name"
    parsed = samples(client.get("/metrics").content.decode())
    assert parsed[("chat_server_info", (("pid", str(os.getpid())), ("server", "configured-name")))] == 1.0


def test_labelled_series_exist_before_first_use(client):
    parsed = samples(client.get("/metrics").content.decode())
    for kind in events.ClientFrame:
        assert ("chat_frames_in_total", (("type", str(kind)),)) in parsed
    for kind in events.ServerFrame:
        assert ("chat_frames_out_total", (("type", str(kind)),)) in parsed
    for code in events.ErrorCode:
        assert ("chat_errors_total", (("code", str(code)),)) in parsed
    for code in events.CloseCode:
        assert ("chat_disconnects_total", (("code", str(int(code))),)) in parsed
    assert ("chat_connects_total", (("outcome", "refused"),)) in parsed


# --- The counting functions -----------------------------------------------------------


def test_frame_in_counts_by_type():
    before = value("chat_frames_in_total", type="chat")
    metrics.frame_in(events.ClientFrame.CHAT)
    metrics.frame_in("chat")
    assert value("chat_frames_in_total", type="chat") == before + 2


def test_unknown_frame_type_counts_as_other_and_creates_no_series():
    before = value("chat_frames_in_total", type="other")
    metrics.frame_in("made-up-by-a-client")
    assert value("chat_frames_in_total", type="other") == before + 1
    assert metrics.REGISTRY.get_sample_value("chat_frames_in_total", {"type": "made-up-by-a-client"}) is None


def test_frame_out_counts_n_frames():
    before = value("chat_frames_out_total", type="chat")
    metrics.frame_out(events.ServerFrame.CHAT, n=3)
    assert value("chat_frames_out_total", type="chat") == before + 3


@pytest.mark.parametrize(
    "frame",
    [
        events.welcome_frame(connection_id="c", user="u", heartbeat=20),
        events.joined_frame(room="r", online=[], last_id=None, more=False),
        events.left_frame(room="r"),
        events.history_frame(key="room", value="r", messages=[], has_more=False),
        events.rooms_frame(rooms=[]),
        events.presence_frame(room="r", user="u", event="join"),
        events.typing_frame(room="r", user="u"),
        events.pong_frame(),
        events.notify_frame(topic="t", data={"type": "nested"}),
        events.kicked_frame(reason="r"),
        events.error_frame(code=events.ErrorCode.INVALID, message="m", ref=None),
    ],
    ids=lambda frame: frame["type"],
)
def test_frame_out_text_reads_the_type_of_an_encoded_frame(frame):
    before = value("chat_frames_out_total", type=frame["type"])
    metrics.frame_out_text(events.encode(frame))
    assert value("chat_frames_out_total", type=frame["type"]) == before + 1


def test_frame_out_text_of_unrecognised_text_counts_as_other():
    before = value("chat_frames_out_total", type="other")
    for text in ['{"id":1,"type":"chat"}', '{"type":"not-a-frame"}', "", '{"type":"', "[]"]:
        metrics.frame_out_text(text)
    assert value("chat_frames_out_total", type="other") == before + 5


def test_error_connect_and_disconnect_count_by_label():
    errors = value("chat_errors_total", code="rate_limited")
    refused = value("chat_connects_total", outcome="refused")
    accepted = value("chat_connects_total", outcome="accepted")
    kicked = value("chat_disconnects_total", code="4003")
    none = value("chat_disconnects_total", code="none")
    other = value("chat_disconnects_total", code="other")
    metrics.error(events.ErrorCode.RATE_LIMITED)
    metrics.connect(False)
    metrics.connect(True)
    metrics.disconnect(events.CloseCode.KICKED)
    metrics.disconnect(None)
    metrics.disconnect(3999)  # any code a client picks: one series for all of them
    assert value("chat_errors_total", code="rate_limited") == errors + 1
    assert value("chat_connects_total", outcome="refused") == refused + 1
    assert value("chat_connects_total", outcome="accepted") == accepted + 1
    assert value("chat_disconnects_total", code="4003") == kicked + 1
    assert value("chat_disconnects_total", code="none") == none + 1
    assert value("chat_disconnects_total", code="other") == other + 1
    assert metrics.REGISTRY.get_sample_value("chat_disconnects_total", {"code": "3999"}) is None


def test_connections_open_moves_both_ways():
    before = value("chat_connections_open")
    metrics.connections_open(1)
    metrics.connections_open(1)
    metrics.connections_open(-1)
    assert value("chat_connections_open") == before + 1
    metrics.connections_open(-1)


def test_delivery_latency_lands_in_its_bucket():
    le_5ms = value("chat_delivery_latency_seconds_bucket", le="0.005")
    le_2_5ms = value("chat_delivery_latency_seconds_bucket", le="0.0025")
    count = value("chat_delivery_latency_seconds_count")
    metrics.delivery_latency(0.004)
    metrics.delivery_latency(-0.5)  # clock skew between hosts: counted as 0
    assert value("chat_delivery_latency_seconds_bucket", le="0.005") == le_5ms + 2
    assert value("chat_delivery_latency_seconds_bucket", le="0.0025") == le_2_5ms + 1
    assert value("chat_delivery_latency_seconds_count") == count + 2


def test_stamped_event_is_observed_on_delivery_and_the_original_is_untouched():
    event = events.room_message_event(room_id=1, message_id=2, text="{}")
    stamped = metrics.event_stamp(event)
    assert metrics.PUBLISHED_AT not in event
    count = value("chat_delivery_latency_seconds_count")
    metrics.event_delivered(stamped)
    metrics.event_delivered(event)  # unstamped: ignored
    assert value("chat_delivery_latency_seconds_count") == count + 1
    assert value("chat_delivery_latency_seconds_bucket", le="1.0") >= 1


def test_frame_in_is_cheap_enough_for_the_per_frame_path():
    import timeit

    n = 20_000
    per_call = min(timeit.repeat(lambda: metrics.frame_in("chat"), number=n, repeat=3)) / n
    assert per_call < 20e-6  # about 0.3 µs here; generous for slow CI machines


@pytest.mark.live
def test_a_daphne_process_serves_its_own_metrics(daphne_server):
    with urllib.request.urlopen(daphne_server.url + "/metrics", timeout=5) as response:
        parsed = samples(response.read().decode())
    assert parsed[("chat_connections_open", ())] == 0.0
    assert parsed[("process_resident_memory_bytes", ())] > 0
