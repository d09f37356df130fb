"""The chat socket's counts, end to end (needs the consumer's metric calls)."""

from __future__ import annotations

from chatsite import metrics


def value(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


async def test_a_chat_session_is_counted(create_users, connect):
    (alice,) = await create_users("alice")
    before = {
        "open": value("chat_connections_open"),
        "accepted": value("chat_connects_total", outcome="accepted"),
        "join": value("chat_frames_in_total", type="join"),
        "chat_in": value("chat_frames_in_total", type="chat"),
        "chat_out": value("chat_frames_out_total", type="chat"),
        "welcome": value("chat_frames_out_total", type="welcome"),
        "unknown": value("chat_errors_total", code="unknown_type"),
        "latency": value("chat_delivery_latency_seconds_count"),
        "normal": value("chat_disconnects_total", code="1000"),
    }
    client = await connect(alice)
    assert value("chat_connections_open") == before["open"] + 1
    await client.join("general")
    await client.send(type="chat", room="general", body="hello", client_id="c1")
    await client.until("chat")
    await client.send(type="nonsense")
    await client.recv_type("error")
    await client.close()
    assert value("chat_connects_total", outcome="accepted") == before["accepted"] + 1
    assert value("chat_frames_in_total", type="join") == before["join"] + 1
    assert value("chat_frames_in_total", type="chat") == before["chat_in"] + 1
    assert value("chat_frames_out_total", type="chat") == before["chat_out"] + 1
    assert value("chat_frames_out_total", type="welcome") == before["welcome"] + 1
    assert value("chat_errors_total", code="unknown_type") == before["unknown"] + 1
    assert value("chat_delivery_latency_seconds_count") == before["latency"] + 1
    assert value("chat_connections_open") == before["open"]
    assert value("chat_disconnects_total", code="1000") == before["normal"] + 1


async def test_a_refused_handshake_is_counted(handshake):
    before = value("chat_connects_total", outcome="refused")
    assert not await handshake(token="ct_not-a-real-token")
    assert value("chat_connects_total", outcome="refused") == before + 1
