"""The chat socket end to end (PROTOCOL.md §1-3): the full ASGI app, a real Redis for the
channel layer and presence, WebsocketCommunicator as the client.

Every test asserts the frames a socket gets, and where it matters that the sockets that
should get nothing (other rooms, the sender's other tabs) stay silent.
"""

from __future__ import annotations

import asyncio
import re

import pytest
from channels.db import database_sync_to_async
from django.db import OperationalError

from rooms import services
from rooms.models import Message, Room
from tests.conftest import TIMEOUT

pytestmark = pytest.mark.django_db(transaction=True)

adb = database_sync_to_async
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


# --- helpers -------------------------------------------------------------------------


def seed_room(slug: str, sender, count: int, *, is_public: bool = True, title: str = "") -> tuple[Room, list[int]]:
    """A room (created if needed) with ``count`` messages by ``sender``; returns their ids, oldest first."""
    room, _ = Room.objects.get_or_create(slug=slug, defaults={"title": title or slug, "is_public": is_public})
    rows = Message.objects.bulk_create([Message(room=room, sender=sender, body=f"m{i}") for i in range(count)])
    return room, [row.id for row in rows]


def room_message_count(**filters) -> int:
    return Message.objects.filter(**filters).count()


async def enter(client, room: str, **extra) -> dict:
    """Join as the user's first socket in the room: `joined`, then the user's own `presence` join."""
    joined = await client.join(room, **extra)
    presence = await client.recv_type("presence")
    assert presence == {"type": "presence", "room": room, "user": client.welcome["user"], "event": "join"}
    return joined


async def error(client, code: str, ref: str | None = None) -> dict:
    frame = await client.recv_type("error")
    assert frame["code"] == code, frame
    assert frame["ref"] == ref, frame
    assert isinstance(frame["message"], str) and frame["message"]
    return frame


async def still_open(client) -> None:
    """An error never closes the socket: it still answers ping."""
    await client.send(type="ping")
    assert await client.recv_type("pong") == {"type": "pong"}


async def close_frame(client) -> dict:
    message = await client.ws.receive_output(TIMEOUT)
    assert message["type"] == "websocket.close", message
    return message


def padded_ping(total_bytes: int) -> str:
    """A valid ping frame of exactly ``total_bytes`` UTF-8 bytes."""
    head, tail = '{"type":"ping","pad":"', '"}'
    return head + "x" * (total_bytes - len(head) - len(tail)) + tail


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch) -> FakeClock:
    """Freeze the consumer's clock, so token buckets refill only when a test says so."""
    from rooms import consumers

    fake = FakeClock()
    monkeypatch.setattr(consumers, "time", fake)
    return fake


# --- welcome, ping ---------------------------------------------------------------------


async def test_welcome_names_the_user_the_protocol_and_the_heartbeat(connect, create_users, settings):
    (alice,) = await create_users("alice")
    a = await connect(alice)
    assert a.welcome["user"] == "alice"
    assert a.welcome["protocol"] == 1
    assert a.welcome["heartbeat"] == settings.CHAT_HEARTBEAT
    assert isinstance(a.welcome["connection_id"], str) and a.welcome["connection_id"]
    b = await connect(alice)
    assert b.welcome["connection_id"] != a.welcome["connection_id"]


async def test_ping_is_answered_with_pong(connect, create_users):
    (alice,) = await create_users("alice")
    a = await connect(alice)
    await a.send(type="ping")
    assert await a.recv_type("pong") == {"type": "pong"}


# --- join -------------------------------------------------------------------------------


async def test_first_join_creates_a_public_room(connect, create_users):
    (alice,) = await create_users("alice")
    a = await connect(alice)
    joined = await enter(a, "general")
    assert joined == {"type": "joined", "room": "general", "online": ["alice"], "last_id": None, "more": False}
    room = await adb(Room.objects.select_related("created_by").get)(slug="general")
    assert room.is_public and room.created_by == alice and room.title == "general"


async def test_joining_a_room_again_is_harmless(connect, create_users):
    alice, bob = await create_users("alice", "bob")
    a, b = await connect(alice), await connect(bob)
    await enter(a, "general")
    await enter(b, "general")
    await a.recv_type("presence")  # bob's
    again = await a.join("general")
    assert again["online"] == ["alice", "bob"]
    assert await b.silent(), "a second join must not announce alice again"
    assert await adb(Room.objects.filter(slug="general").count)() == 1
    await b.send(type="chat", room="general", body="once")
    assert (await a.recv_type("chat"))["body"] == "once"
    assert await a.silent(), "a socket that joined twice still gets each message once"


@pytest.mark.parametrize(
    "room",
    ["", "General", "-general", "_general", "a" * 65, "gen eral", "général", "general\n", 42, None],
    ids=[
        "empty",
        "uppercase",
        "leading-dash",
        "leading-underscore",
        "65-chars",
        "space",
        "accent",
        "newline",
        "int",
        "null",
    ],
)
async def test_join_with_an_invalid_room_name_is_invalid(connect, create_users, room):
    (alice,) = await create_users("alice")
    a = await connect(alice)
    await a.send(type="join", room=room)
    await error(a, "invalid", ref="join")
    await still_open(a)
    assert await adb(Room.objects.count)() == 0


async def test_join_without_a_room_is_invalid(connect, create_users):
    (alice,) = await create_users("alice")
    a = await connect(alice)
    await a.send(type="join")
    await error(a, "invalid", ref="join")


async def test_join_with_a_room_name_of_64_characters_is_accepted(connect, create_users):
    (alice,) = await create_users("alice")
    a = await connect(alice)
    name = "a" + "-_9z" * 15 + "abc"
    assert len(name) == 64
    assert (await a.join(name))["room"] == name


async def test_join_of_a_private_room_by_a_non_member_is_forbidden(connect, create_users):
    alice, bob = await create_users("alice", "bob")

    def private_room():
        room = Room.objects.create(slug="secret", title="Secret", is_public=False)
        room.members.add(bob)

    await adb(private_room)()
    a, b = await connect(alice), await connect(bob)
    await a.send(type="join", room="secret")
    await error(a, "forbidden", ref="join")
    await still_open(a)
    assert (await enter(b, "secret"))["online"] == ["bob"]
    assert await a.silent(), "a refused join must not subscribe to the room"


async def test_join_with_a_since_that_is_not_a_message_id_is_invalid(connect, create_users):
    (alice,) = await create_users("alice")
    a = await connect(alice)
    for since in (-1, "12", 1.5, True):
        await a.send(type="join", room="general", since=since)
        await error(a, "invalid", ref="join")


async def test_join_replies_with_the_newest_message_id(connect, create_users):
    (alice,) = await create_users("alice")
    _, ids = await adb(seed_room)("general", alice, 3)
    a = await connect(alice)
    joined = await enter(a, "general")
    assert joined["last_id"] == ids[-1]
    assert joined["more"] is False


# --- join with since: recovery ------------------------------------------------------------


async def test_join_with_since_sends_missed_messages_oldest_first_after_joined(connect, create_users):
    alice, bob = await create_users("alice", "bob")
    _, ids = await adb(seed_room)("general", bob, 4)
    a = await connect(alice)
    joined = await a.join("general", since=ids[1])
    assert joined == {"type": "joined", "room": "general", "online": ["alice"], "last_id": ids[3], "more": False}
    first, second = await a.recv_type("chat"), await a.recv_type("chat")
    assert [first["id"], second["id"]] == ids[2:]
    assert first["room"] == "general" and first["sender"] == "bob" and first["body"] == "m2"
    assert first["client_id"] is None and TIMESTAMP.match(first["created_at"])
    assert (await a.recv_type("presence"))["user"] == "alice"
    assert await a.silent()


async def test_join_with_since_the_newest_id_sends_nothing_more(connect, create_users):
    (alice,) = await create_users("alice")
    _, ids = await adb(seed_room)("general", alice, 3)
    a = await connect(alice)
    joined = await enter(a, "general", since=ids[-1])
    assert joined["last_id"] == ids[-1] and joined["more"] is False
    assert await a.silent()


async def test_join_with_since_past_the_recovery_limit_sends_the_limit_and_more(connect, create_users, settings):
    settings.CHAT_RECOVERY_LIMIT = 3
    alice, bob = await create_users("alice", "bob")
    room, ids = await adb(seed_room)("general", bob, 6)
    a = await connect(alice)
    joined = await a.join("general", since=ids[0])
    assert joined["more"] is True
    assert joined["last_id"] == ids[-1]
    recovered = [(await a.recv_type("chat"))["id"] for _ in range(3)]
    assert recovered == ids[1:4]
    assert (await a.recv_type("presence"))["user"] == "alice"
    assert await a.silent(), "exactly the limit is recovered"

    # Until the client joins again, live messages would skip the gap: none are sent.
    live, _ = await adb(services.room_message_create)(room=room, sender=bob, body="live", client_id=None)
    assert await a.silent()
    again = await a.join("general", since=recovered[-1])
    assert again["more"] is False and again["last_id"] == live["id"]
    rest = [await a.recv_type("chat") for _ in range(3)]
    assert [m["id"] for m in rest] == [*ids[4:], live["id"]]
    assert await a.silent()


async def test_a_message_committed_during_a_recovery_is_sent_once(connect, create_users, monkeypatch):
    alice, bob = await create_users("alice", "bob")
    room, ids = await adb(seed_room)("general", bob, 2)
    real_join_state = services.room_join_state
    during: dict = {}

    def join_state_racing_a_message(**kwargs):
        # Committed after the socket subscribed and before the recovery read: it is both
        # in the recovery and queued live.
        frame, _ = services.room_message_create(room=kwargs["room"], sender=bob, body="during", client_id=None)
        during.update(frame)
        return real_join_state(**kwargs)

    monkeypatch.setattr(services, "room_join_state", join_state_racing_a_message)
    a = await connect(alice)
    joined = await a.join("general", since=ids[0])
    assert joined["last_id"] == during["id"]
    assert (await a.recv_type("chat"))["id"] == ids[1]
    assert (await a.recv_type("chat")) == during
    assert (await a.recv_type("presence"))["user"] == "alice"

    after, _ = await adb(services.room_message_create)(room=room, sender=bob, body="after", client_id=None)
    assert await a.recv_type("chat") == after
    assert await a.silent(), "no message of the recovery arrives a second time"


# --- leave ----------------------------------------------------------------------------------


async def test_leave_replies_left_and_stops_messages_from_that_room(connect, create_users):
    alice, bob = await create_users("alice", "bob")
    a, b = await connect(alice), await connect(bob)
    await enter(a, "general")
    await enter(a, "other")
    await enter(b, "general")
    await a.recv_type("presence")  # bob's
    await enter(b, "other")
    await a.recv_type("presence")  # bob's

    await a.send(type="leave", room="general")
    assert await a.recv_type("left") == {"type": "left", "room": "general"}
    assert await b.recv_type("presence") == {"type": "presence", "room": "general", "user": "alice", "event": "leave"}

    await b.send(type="chat", room="general", body="after alice left")
    assert (await b.recv_type("chat"))["room"] == "general"
    await b.send(type="chat", room="other", body="still here")
    assert (await a.recv_type("chat"))["body"] == "still here", "alice gets nothing more from general"

    await a.send(type="chat", room="general", body="no longer joined")
    await error(a, "forbidden", ref="chat")


# --- chat -----------------------------------------------------------------------------------


async def test_chat_is_persisted_then_broadcast_to_every_connection_in_the_room(connect, create_users):
    alice, bob, carol = await create_users("alice", "bob", "carol")
    a1, a2, b, c = await connect(alice), await connect(alice), await connect(bob), await connect(carol)
    await enter(a1, "general")
    await a2.join("general")
    await enter(b, "general")
    for socket in (a1, a2):
        await socket.recv_type("presence")  # bob's
    await enter(c, "other")

    await a1.send(type="chat", room="general", body="hello")
    got = [await socket.recv_type("chat") for socket in (a1, a2, b)]
    assert got[0] == got[1] == got[2]
    row = await adb(Message.objects.select_related("room", "sender").get)()
    assert got[0] == {
        "type": "chat",
        "id": row.id,
        "room": "general",
        "sender": "alice",
        "body": "hello",
        "created_at": got[0]["created_at"],
        "client_id": None,
    }
    assert TIMESTAMP.match(got[0]["created_at"])
    assert row.room.slug == "general" and row.sender == alice and row.body == "hello" and row.recipient_id is None
    assert await c.silent(), "another room receives nothing"


async def test_chat_to_a_room_not_joined_is_forbidden(connect, create_users):
    alice, bob = await create_users("alice", "bob")
    a, b = await connect(alice), await connect(bob)
    await enter(b, "general")
    await a.send(type="chat", room="general", body="let me in")
    await error(a, "forbidden", ref="chat")
    await still_open(a)
    assert await b.silent()
    assert await adb(room_message_count)() == 0


async def test_chat_body_is_trimmed(connect, create_users):
    (alice,) = await create_users("alice")
    a = await connect(alice)
    await enter(a, "general")
    await a.send(type="chat", room="general", body="  \n hi there \t ")
    assert (await a.recv_type("chat"))["body"] == "hi there"
    assert await adb(Message.objects.values_list("body", flat=True).get)() == "hi there"


async def test_chat_body_of_4000_characters_is_accepted(connect, create_users):
    (alice,) = await create_users("alice")
    a = await connect(alice)
    await enter(a, "general")
    await a.send(type="chat", room="general", body="  " + "x" * 4000 + "  ")
    assert (await a.recv_type("chat"))["body"] == "x" * 4000


@pytest.mark.parametrize(
    "body", ["", "   \n\t ", "x" * 4001, 5, None, ["x"]], ids=["empty", "blank", "4001-chars", "int", "null", "list"]
)
async def test_chat_body_that_is_empty_blank_or_too_long_is_invalid(connect, create_users, body):
    alice, bob = await create_users("alice", "bob")
    a, b = await connect(alice), await connect(bob)
    await enter(a, "general")
    await enter(b, "general")
    await a.recv_type("presence")  # bob's
    await a.send(type="chat", room="general", body=body, client_id="c-bad")
    await error(a, "invalid", ref="c-bad")
    assert await adb(room_message_count)() == 0
    await a.send(type="chat", room="general", body="valid")
    # Room broadcasts arrive in order: had the bad one gone out, bob would see it first.
    assert (await b.recv_type("chat"))["body"] == "valid"


async def test_chat_without_a_body_is_invalid_with_the_frame_type_as_ref(connect, create_users):
    (alice,) = await create_users("alice")
    a = await connect(alice)
    await enter(a, "general")
    await a.send(type="chat", room="general")
    await error(a, "invalid", ref="chat")


@pytest.mark.parametrize("client_id", ["", "x" * 65, 7, ["c1"]], ids=["empty", "65-chars", "int", "list"])
async def test_chat_with_a_bad_client_id_is_invalid(connect, create_users, client_id):
    (alice,) = await create_users("alice")
    a = await connect(alice)
    await enter(a, "general")
    await a.send(type="chat", room="general", body="hi", client_id=client_id)
    await error(a, "invalid", ref=client_id[:64] if isinstance(client_id, str) and client_id else "chat")
    assert await adb(room_message_count)() == 0


async def test_chat_with_a_client_id_of_64_characters_is_accepted(connect, create_users):
    (alice,) = await create_users("alice")
    a = await connect(alice)
    await enter(a, "general")
    await a.send(type="chat", room="general", body="hi", client_id="c" * 64)
    assert (await a.recv_type("chat"))["client_id"] == "c" * 64


# --- idempotent sends -----------------------------------------------------------------------


async def test_resending_a_client_id_returns_the_original_to_that_socket_only(connect, create_users):
    alice, bob = await create_users("alice", "bob")
    a, b = await connect(alice), await connect(bob)
    await enter(a, "general")
    await enter(b, "general")
    await a.recv_type("presence")  # bob's
    await a.send(type="chat", room="general", body="once", client_id="c1")
    original = await a.recv_type("chat")
    assert await b.recv_type("chat") == original
    assert original["client_id"] == "c1"

    await a.send(type="chat", room="general", body="once (retry)", client_id="c1")
    assert await a.recv_type("chat") == original
    assert await b.silent(), "the other members get nothing the second time"
    assert await adb(room_message_count)(client_id="c1") == 1


async def test_resending_a_client_id_after_a_reconnect_returns_the_original(connect, create_users):
    alice, bob = await create_users("alice", "bob")
    a, b = await connect(alice), await connect(bob)
    await enter(b, "general")
    await enter(a, "general")
    await b.recv_type("presence")  # alice's
    await a.send(type="chat", room="general", body="before the drop", client_id="c1")
    original = await a.recv_type("chat")
    assert await b.recv_type("chat") == original
    await a.close()
    assert (await b.recv_type("presence"))["event"] == "leave"

    again = await connect(alice)
    await enter(again, "general", since=original["id"])
    await b.recv_type("presence")  # alice's again
    await again.send(type="chat", room="general", body="before the drop", client_id="c1")
    assert await again.recv_type("chat") == original
    assert await b.silent()
    assert await adb(room_message_count)() == 1


async def test_the_same_client_id_from_two_users_makes_two_messages(connect, create_users):
    alice, bob = await create_users("alice", "bob")
    a, b = await connect(alice), await connect(bob)
    await enter(a, "general")
    await enter(b, "general")
    await a.recv_type("presence")  # bob's
    await a.send(type="chat", room="general", body="from alice", client_id="same")
    from_alice = await a.recv_type("chat")
    assert await b.recv_type("chat") == from_alice
    await b.send(type="chat", room="general", body="from bob", client_id="same")
    from_bob = await b.recv_type("chat")
    assert await a.recv_type("chat") == from_bob
    assert from_alice["id"] != from_bob["id"]
    assert await adb(room_message_count)(client_id="same") == 2


async def test_concurrent_resends_of_one_client_id_store_one_message(connect, create_users):
    alice, bob = await create_users("alice", "bob")
    a1, a2, b = await connect(alice), await connect(alice), await connect(bob)
    await enter(a1, "general")
    await a2.join("general")
    await enter(b, "general")
    for socket in (a1, a2):
        await socket.recv_type("presence")  # bob's

    await asyncio.gather(
        a1.send(type="chat", room="general", body="racing", client_id="c1"),
        a2.send(type="chat", room="general", body="racing", client_id="c1"),
    )
    broadcast = await b.recv_type("chat")
    assert await b.silent(), "one message is broadcast, once"
    assert await a1.recv_type("chat") == broadcast
    assert await a2.recv_type("chat") == broadcast
    assert await adb(room_message_count)() == 1


async def test_resending_a_private_client_id_returns_the_original_to_that_socket_only(connect, create_users):
    alice, bob = await create_users("alice", "bob")
    a1, a2, b = await connect(alice), await connect(alice), await connect(bob)
    await a1.send(type="private", to="bob", body="psst", client_id="p1")
    original = await a1.recv_type("private")
    assert await a2.recv_type("private") == original
    assert await b.recv_type("private") == original
    await a1.send(type="private", to="bob", body="psst", client_id="p1")
    assert await a1.recv_type("private") == original
    assert await a2.silent() and await b.silent()
    assert await adb(room_message_count)() == 1


# --- private ---------------------------------------------------------------------------------


async def test_private_message_reaches_every_connection_of_recipient_and_sender(connect, create_users):
    alice, bob, carol = await create_users("alice", "bob", "carol")
    a1, a2, b1, b2, c = [await connect(user) for user in (alice, alice, bob, bob, carol)]
    await a1.send(type="private", to="bob", body=" psst ", client_id="p1")
    got = [await socket.recv_type("private") for socket in (a1, a2, b1, b2)]
    assert got[0] == got[1] == got[2] == got[3]
    row = await adb(Message.objects.select_related("recipient").get)()
    assert got[0] == {
        "type": "private",
        "id": row.id,
        "sender": "alice",
        "to": "bob",
        "body": "psst",
        "created_at": got[0]["created_at"],
        "client_id": "p1",
    }
    assert row.recipient == bob and row.room_id is None and row.conversation_id is not None
    assert await c.silent()


async def test_private_message_to_an_unknown_user_is_not_found(connect, create_users):
    (alice,) = await create_users("alice")
    a = await connect(alice)
    await a.send(type="private", to="nobody", body="hello?")
    await error(a, "not_found", ref="private")
    await a.send(type="private", to="nobody", body="hello?", client_id="p9")
    await error(a, "not_found", ref="p9")
    await still_open(a)
    assert await adb(room_message_count)() == 0


async def test_private_message_to_an_inactive_user_is_not_found(connect, create_users):
    (alice,) = await create_users("alice")
    await create_users("gone", is_active=False)
    a = await connect(alice)
    await a.send(type="private", to="gone", body="hello?")
    await error(a, "not_found", ref="private")


@pytest.mark.parametrize("to", ["", None, 5, "x" * 151], ids=["empty", "null", "int", "151-chars"])
async def test_private_message_without_a_valid_recipient_is_invalid(connect, create_users, to):
    (alice,) = await create_users("alice")
    a = await connect(alice)
    await a.send(type="private", to=to, body="hello?")
    await error(a, "invalid", ref="private")


async def test_private_message_to_an_offline_user_is_kept_for_history(connect, create_users):
    alice, bob = await create_users("alice", "bob")
    a = await connect(alice)
    await a.send(type="private", to="bob", body="while you were out")
    sent = await a.recv_type("private")

    b = await connect(bob)
    await b.send(type="private", to="alice", body="back now")
    reply = await b.recv_type("private")
    assert await a.recv_type("private") == reply
    await b.send(type="history", **{"with": "alice"})
    history = await b.recv_type("history")
    assert history == {"type": "history", "with": "alice", "messages": [sent, reply], "has_more": False}


# --- history ---------------------------------------------------------------------------------


async def test_history_of_a_room_returns_messages_oldest_first(connect, create_users):
    alice, bob = await create_users("alice", "bob")
    a = await connect(alice)
    await enter(a, "general")
    for body in ("one", "two"):
        await a.send(type="chat", room="general", body=body)
    sent = [await a.recv_type("chat") for _ in range(2)]
    b = await connect(bob)
    await b.send(type="history", room="general")
    assert await b.recv_type("history") == {"type": "history", "room": "general", "messages": sent, "has_more": False}


async def test_history_defaults_to_the_newest_50_messages(connect, create_users):
    (alice,) = await create_users("alice")
    _, ids = await adb(seed_room)("general", alice, 51)
    a = await connect(alice)
    await a.send(type="history", room="general")
    history = await a.recv_type("history")
    assert [m["id"] for m in history["messages"]] == ids[1:]
    assert history["has_more"] is True


@pytest.mark.parametrize(
    ("stored", "limit", "returned", "has_more"),
    [(3, 3, 3, False), (4, 3, 3, True), (0, 3, 0, False), (1, 1, 1, False), (2, 1, 1, True)],
    ids=["exactly-limit", "limit-plus-one", "empty-room", "limit-1", "limit-1-plus-one"],
)
async def test_history_has_more_only_when_older_messages_exist(
    connect, create_users, stored, limit, returned, has_more
):
    (alice,) = await create_users("alice")
    _, ids = await adb(seed_room)("general", alice, stored)
    a = await connect(alice)
    await a.send(type="history", room="general", limit=limit)
    history = await a.recv_type("history")
    assert [m["id"] for m in history["messages"]] == ids[len(ids) - returned :]
    assert history["has_more"] is has_more


async def test_history_of_100_is_accepted(connect, create_users):
    (alice,) = await create_users("alice")
    _, ids = await adb(seed_room)("general", alice, 101)
    a = await connect(alice)
    await a.send(type="history", room="general", limit=100)
    history = await a.recv_type("history")
    assert [m["id"] for m in history["messages"]] == ids[1:] and history["has_more"] is True


async def test_history_before_returns_only_older_messages(connect, create_users):
    (alice,) = await create_users("alice")
    _, ids = await adb(seed_room)("general", alice, 5)
    a = await connect(alice)
    await a.send(type="history", room="general", before=ids[3], limit=2)
    history = await a.recv_type("history")
    assert [m["id"] for m in history["messages"]] == ids[1:3]
    assert history["has_more"] is True
    await a.send(type="history", room="general", before=ids[2], limit=2)
    history = await a.recv_type("history")
    assert [m["id"] for m in history["messages"]] == ids[:2]
    assert history["has_more"] is False


async def test_history_before_the_first_message_is_empty(connect, create_users):
    (alice,) = await create_users("alice")
    _, ids = await adb(seed_room)("general", alice, 3)
    a = await connect(alice)
    await a.send(type="history", room="general", before=ids[0])
    assert await a.recv_type("history") == {"type": "history", "room": "general", "messages": [], "has_more": False}


@pytest.mark.parametrize("limit", [0, 101, -1, "10", 1.5, True], ids=repr)
async def test_history_limit_outside_1_to_100_is_invalid(connect, create_users, limit):
    (alice,) = await create_users("alice")
    await adb(seed_room)("general", alice, 1)
    a = await connect(alice)
    await a.send(type="history", room="general", limit=limit)
    await error(a, "invalid", ref="history")
    await still_open(a)


@pytest.mark.parametrize("before", [-1, "10", 1.5, False], ids=repr)
async def test_history_before_that_is_not_a_message_id_is_invalid(connect, create_users, before):
    (alice,) = await create_users("alice")
    a = await connect(alice)
    await a.send(type="history", room="general", before=before)
    await error(a, "invalid", ref="history")


async def test_history_needs_exactly_one_of_room_or_with(connect, create_users):
    alice, _ = await create_users("alice", "bob")
    await adb(seed_room)("general", alice, 1)
    a = await connect(alice)
    await a.send(type="history", room="general", **{"with": "bob"})
    await error(a, "invalid", ref="history")
    await a.send(type="history")
    await error(a, "invalid", ref="history")
    await still_open(a)


async def test_history_of_an_unknown_room_or_user_is_not_found(connect, create_users):
    (alice,) = await create_users("alice")
    a = await connect(alice)
    await a.send(type="history", room="nowhere")
    await error(a, "not_found", ref="history")
    await a.send(type="history", **{"with": "nobody"})
    await error(a, "not_found", ref="history")
    await still_open(a)


async def test_history_with_a_user_never_written_to_is_empty(connect, create_users):
    alice, _ = await create_users("alice", "bob")
    a = await connect(alice)
    await a.send(type="history", **{"with": "bob"})
    assert await a.recv_type("history") == {"type": "history", "with": "bob", "messages": [], "has_more": False}


async def test_history_with_a_user_pages_like_a_room(connect, create_users):
    alice, bob, carol = await create_users("alice", "bob", "carol")

    def converse():
        for i in range(4):
            sender, to = (alice, "bob") if i % 2 == 0 else (bob, "alice")
            services.private_message_create(sender=sender, to=to, body=f"p{i}", client_id=None)
        services.private_message_create(sender=carol, to="alice", body="not with bob", client_id=None)
        return list(Message.objects.filter(body__startswith="p").order_by("id").values_list("id", flat=True))

    ids = await adb(converse)()
    b = await connect(bob)
    await b.send(type="history", limit=2, **{"with": "alice"})
    history = await b.recv_type("history")
    assert [m["id"] for m in history["messages"]] == ids[2:] and history["has_more"] is True
    assert [(m["sender"], m["to"]) for m in history["messages"]] == [("alice", "bob"), ("bob", "alice")]
    await b.send(type="history", before=ids[2], **{"with": "alice"})
    history = await b.recv_type("history")
    assert [m["id"] for m in history["messages"]] == ids[:2] and history["has_more"] is False


async def test_history_of_a_private_room_is_forbidden_to_non_members(connect, create_users):
    alice, bob = await create_users("alice", "bob")

    def private_room():
        room, _ = seed_room("secret", bob, 2, is_public=False)
        room.members.add(bob)

    await adb(private_room)()
    a, b = await connect(alice), await connect(bob)
    await a.send(type="history", room="secret")
    await error(a, "forbidden", ref="history")
    await b.send(type="history", room="secret")
    assert len((await b.recv_type("history"))["messages"]) == 2


# --- rooms -----------------------------------------------------------------------------------


async def test_rooms_lists_visible_rooms_with_titles_and_online_counts(connect, create_users):
    alice, bob = await create_users("alice", "bob")

    def rooms():
        Room.objects.create(slug="lobby", title="The Lobby")
        Room.objects.create(slug="secret", title="Secret", is_public=False).members.add(bob)

    await adb(rooms)()
    a, b = await connect(alice), await connect(bob)

    async def listing(client) -> list[dict]:
        await client.send(type="rooms")
        return (await client.recv_type("rooms"))["rooms"]

    assert await listing(a) == [{"room": "lobby", "title": "The Lobby", "online": 0}]
    assert await listing(b) == [
        {"room": "lobby", "title": "The Lobby", "online": 0},
        {"room": "secret", "title": "Secret", "online": 0},
    ]
    await enter(a, "lobby")
    await enter(a, "general")
    assert await listing(a) == [
        {"room": "general", "title": "general", "online": 1},
        {"room": "lobby", "title": "The Lobby", "online": 1},
    ]
    await enter(b, "lobby")
    await a.recv_type("presence")  # bob's
    assert (await listing(a))[1] == {"room": "lobby", "title": "The Lobby", "online": 2}
    await b.send(type="leave", room="lobby")
    await b.recv_type("left")
    await a.recv_type("presence")  # bob left
    assert (await listing(a))[1] == {"room": "lobby", "title": "The Lobby", "online": 1}


# --- typing ----------------------------------------------------------------------------------


async def test_typing_reaches_others_in_the_room_only(connect, create_users):
    alice, bob, carol = await create_users("alice", "bob", "carol")
    a1, a2, b, c = await connect(alice), await connect(alice), await connect(bob), await connect(carol)
    await enter(a1, "general")
    await a2.join("general")
    await enter(b, "general")
    for socket in (a1, a2):
        await socket.recv_type("presence")  # bob's
    await enter(c, "other")

    await a1.send(type="typing", room="general")
    assert await b.recv_type("typing") == {"type": "typing", "room": "general", "user": "alice"}
    assert await a1.silent() and await a2.silent(), "the typist's own sockets get nothing"
    assert await c.silent(), "another room gets nothing"
    assert await adb(room_message_count)() == 0


async def test_typing_in_a_room_not_joined_is_forbidden(connect, create_users):
    alice, bob = await create_users("alice", "bob")
    a, b = await connect(alice), await connect(bob)
    await enter(b, "general")
    await a.send(type="typing", room="general")
    await error(a, "forbidden", ref="typing")
    assert await b.silent()


# --- presence --------------------------------------------------------------------------------


async def test_first_connection_into_a_room_emits_presence_join(connect, create_users):
    alice, bob, carol = await create_users("alice", "bob", "carol")
    a, b, c = await connect(alice), await connect(bob), await connect(carol)
    await enter(b, "general")
    await enter(c, "other")
    await enter(a, "general")
    assert await b.recv_type("presence") == {"type": "presence", "room": "general", "user": "alice", "event": "join"}
    assert await c.silent()


async def test_joined_lists_the_users_online(connect, create_users):
    alice, bob, carol = await create_users("alice", "bob", "carol")
    a, b, c = await connect(alice), await connect(bob), await connect(carol)
    await enter(c, "general")
    await enter(b, "general")
    joined = await a.join("general")
    assert joined["online"] == ["alice", "bob", "carol"]


async def test_second_tab_does_not_emit_presence(connect, create_users):
    alice, bob = await create_users("alice", "bob")
    a1, b = await connect(alice), await connect(bob)
    await enter(a1, "general")
    await enter(b, "general")
    await a1.recv_type("presence")  # bob's
    a2 = await connect(alice)
    joined = await a2.join("general")
    assert joined["online"] == ["alice", "bob"]
    assert await b.silent() and await a1.silent() and await a2.silent()


async def test_closing_one_of_two_tabs_does_not_emit_presence(connect, create_users):
    alice, bob = await create_users("alice", "bob")
    a1, a2, b = await connect(alice), await connect(alice), await connect(bob)
    await enter(a1, "general")
    await a2.join("general")
    await enter(b, "general")
    await a1.recv_type("presence")  # bob's
    await a2.recv_type("presence")  # bob's
    await a2.close()
    assert await b.silent() and await a1.silent()
    await b.send(type="rooms")
    assert (await b.recv_type("rooms"))["rooms"] == [{"room": "general", "title": "general", "online": 2}]


async def test_closing_the_last_tab_emits_presence_leave(connect, create_users):
    alice, bob = await create_users("alice", "bob")
    a1, a2, b = await connect(alice), await connect(alice), await connect(bob)
    await enter(a1, "general")
    await a2.join("general")
    await enter(b, "general")
    await a2.close()
    await a1.close()
    assert await b.recv_type("presence") == {"type": "presence", "room": "general", "user": "alice", "event": "leave"}
    await b.send(type="rooms")
    assert (await b.recv_type("rooms"))["rooms"] == [{"room": "general", "title": "general", "online": 1}]


# --- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["not json", "{", '{"type": "ping",}'], ids=repr)
async def test_a_frame_that_is_not_json_is_bad_json(connect, create_users, text):
    (alice,) = await create_users("alice")
    a = await connect(alice)
    await a.send_raw(text)
    await error(a, "bad_json", ref=None)
    await still_open(a)


@pytest.mark.parametrize(
    "text",
    ['{"type":"ping","x":' + "[" * 30_000 + "]" * 30_000 + "}", '{"type":"ping","n":' + "1" * 5_000 + "}"],
    ids=["nested-too-deeply", "number-too-long"],
)
async def test_json_that_python_cannot_decode_is_bad_json_not_a_server_error(connect, create_users, text):
    (alice,) = await create_users("alice")
    a = await connect(alice)
    await a.send_raw(text)
    await error(a, "bad_json", ref=None)
    await still_open(a)


@pytest.mark.parametrize("text", ['["ping"]', "42", "null", '"ping"', "true"])
async def test_json_that_is_not_an_object_is_bad_json(connect, create_users, text):
    (alice,) = await create_users("alice")
    a = await connect(alice)
    await a.send_raw(text)
    await error(a, "bad_json", ref=None)
    await still_open(a)


async def test_a_binary_frame_is_bad_json(connect, create_users):
    (alice,) = await create_users("alice")
    a = await connect(alice)
    await a.ws.send_to(bytes_data=b'{"type":"ping"}')
    await error(a, "bad_json", ref=None)
    await still_open(a)


async def test_an_unknown_frame_type_is_unknown_type(connect, create_users):
    (alice,) = await create_users("alice")
    a = await connect(alice)
    await a.send(type="dance")
    await error(a, "unknown_type", ref="dance")
    await a.send(type="welcome")  # a server frame type is not a client frame type
    await error(a, "unknown_type", ref="welcome")
    await still_open(a)


@pytest.mark.parametrize("frame", ["{}", '{"room":"general"}', '{"type":5}', '{"type":null}'])
async def test_a_frame_without_a_string_type_is_invalid(connect, create_users, frame):
    (alice,) = await create_users("alice")
    a = await connect(alice)
    await a.send_raw(frame)
    await error(a, "invalid", ref=None)
    await still_open(a)


async def test_frames_past_the_burst_are_rate_limited_and_the_socket_stays_open(connect, create_users, settings, clock):
    settings.CHAT_RATE_BURST = 3
    settings.CHAT_RATE_PER_SECOND = 2.0
    (alice,) = await create_users("alice")
    a = await connect(alice)
    for _ in range(3):
        await a.send(type="ping")
        await a.recv_type("pong")
    await a.send(type="chat", room="general", body="hi", client_id="c-limited")
    await error(a, "rate_limited", ref="c-limited")  # the ref names the dropped frame
    await a.send(type="ping")
    assert await a.silent(), "a limited frame is dropped"
    clock.now += 0.5  # one token back
    await still_open(a)
    await a.send(type="ping")
    await error(a, "rate_limited", ref="ping")


@pytest.mark.parametrize(
    "text",
    ["not json", '{"type":"ping","x":' + "[" * 30_000 + "]" * 30_000 + "}", '{"type":"ping","n":' + "1" * 5_000 + "}"],
    ids=["not-json", "nested-too-deeply", "number-too-long"],
)
async def test_a_rate_limited_frame_that_cannot_be_decoded_is_rate_limited_with_no_ref(
    connect, create_users, settings, clock, text
):
    settings.CHAT_RATE_BURST = 1
    settings.CHAT_RATE_PER_SECOND = 1.0
    (alice,) = await create_users("alice")
    a = await connect(alice)
    await a.send(type="ping")
    await a.recv_type("pong")
    await a.send_raw(text)
    await error(a, "rate_limited", ref=None)
    clock.now += 1.0
    await still_open(a)


async def test_a_client_that_keeps_sending_after_rate_limited_is_closed_with_4008(
    connect, create_users, settings, clock
):
    settings.CHAT_RATE_BURST = 2
    settings.CHAT_RATE_PER_SECOND = 1.0
    settings.CHAT_FLOOD_STRIKES = 3
    (alice,) = await create_users("alice")
    a = await connect(alice)
    for _ in range(2):
        await a.send(type="ping")
        await a.recv_type("pong")
    await a.send(type="ping")
    await error(a, "rate_limited", ref="ping")
    for _ in range(settings.CHAT_FLOOD_STRIKES - 1):
        await a.send(type="ping")
    assert await a.silent(), "not closed before CHAT_FLOOD_STRIKES more frames"
    await a.send(type="ping")
    assert (await close_frame(a))["code"] == 4008


async def test_a_client_that_slows_down_after_rate_limited_is_not_closed(connect, create_users, settings, clock):
    settings.CHAT_RATE_BURST = 1
    settings.CHAT_RATE_PER_SECOND = 1.0
    settings.CHAT_FLOOD_STRIKES = 2
    (alice,) = await create_users("alice")
    a = await connect(alice)
    for _ in range(3):
        await a.send(type="ping")
        await a.recv_type("pong")
        await a.send(type="ping")
        await error(a, "rate_limited", ref="ping")
        await a.send(type="ping")  # CHAT_FLOOD_STRIKES strikes in all, none past the limit
        clock.now += 1.0  # the client waits: an allowed frame forgives the strikes
    await still_open(a)


async def test_a_frame_over_64_kib_closes_the_socket_with_1009(connect, create_users, settings):
    (alice,) = await create_users("alice")
    a = await connect(alice)
    await a.send_raw(padded_ping(settings.CHAT_MAX_FRAME_BYTES + 1))
    assert (await close_frame(a))["code"] == 1009


async def test_a_frame_of_exactly_64_kib_is_accepted(connect, create_users, settings):
    assert settings.CHAT_MAX_FRAME_BYTES == 64 * 1024
    (alice,) = await create_users("alice")
    a = await connect(alice)
    await a.send_raw(padded_ping(64 * 1024))
    await a.recv_type("pong")


async def test_a_frame_over_64_kib_in_utf8_bytes_closes_the_socket_with_1009(connect, create_users):
    (alice,) = await create_users("alice")
    a = await connect(alice)
    text = '{"type":"ping","pad":"' + "é" * 33_000 + '"}'  # fewer than 64 Ki characters, more than 64 KiB
    assert len(text) < 64 * 1024 < len(text.encode())
    await a.send_raw(text)
    assert (await close_frame(a))["code"] == 1009


async def test_a_binary_frame_over_64_kib_closes_the_socket_with_1009(connect, create_users):
    (alice,) = await create_users("alice")
    a = await connect(alice)
    await a.ws.send_to(bytes_data=b"x" * (64 * 1024 + 1))
    assert (await close_frame(a))["code"] == 1009


# --- liveness of idle sockets -----------------------------------------------------------------


@pytest.mark.slow
async def test_a_socket_idle_for_more_than_10_seconds_still_receives_messages(connect, create_users):
    alice, bob = await create_users("alice", "bob")
    a, b = await connect(alice), await connect(bob)
    await enter(a, "general")
    await enter(b, "general")
    await a.recv_type("presence")  # bob's
    # Deliberate idleness, not a wait for an event: redis-py 8's default 5 s socket_timeout
    # silently kills idle channel-layer connections (PITFALLS.md, channels_redis#422).
    assert await b.silent(timeout=11)
    await a.send(type="chat", room="general", body="still there?")
    assert (await b.recv_type("chat"))["body"] == "still there?"
    await b.close()
    assert (await a.recv_type("chat"))["body"] == "still there?"
    assert (await a.recv_type("presence"))["event"] == "leave"


# --- chat writes are pipelined (rooms/consumers.py on_chat, chatsite/batching.py) -------------


async def test_a_burst_from_one_sender_is_stored_and_delivered_in_order_in_shared_batches(connect, create_users):
    from rooms.consumers import room_messages

    alice, bob = await create_users("alice", "bob")
    a, b = await connect(alice), await connect(bob)
    await enter(a, "general")
    await enter(b, "general")
    await a.recv_type("presence")  # bob's
    batches = room_messages().batches
    for n in range(20):
        await a.send(type="chat", room="general", body=f"n{n}", client_id=f"c{n}")
    got = [await b.recv_type("chat") for _ in range(20)]
    assert [m["body"] for m in got] == [f"n{n}" for n in range(20)]
    assert [m["id"] for m in got] == sorted(m["id"] for m in got)
    assert [(await a.recv_type("chat"))["id"] for _ in range(20)] == [m["id"] for m in got]
    assert room_messages().batches - batches < 20, "the sender's frames did not wait for each other's writes"


async def test_a_failed_write_answers_internal_with_the_ref_and_the_socket_goes_on(connect, create_users, monkeypatch):
    alice, bob = await create_users("alice", "bob")
    a, b = await connect(alice), await connect(bob)
    await enter(a, "general")
    await enter(b, "general")
    await a.recv_type("presence")  # bob's
    real = services.room_messages_create

    def failing(chats):
        raise OperationalError("database is locked")

    monkeypatch.setattr(services, "room_messages_create", failing)
    await a.send(type="chat", room="general", body="lost?", client_id="c1")
    assert await error(a, "internal", ref="c1")
    assert await b.silent()
    monkeypatch.setattr(services, "room_messages_create", real)
    await a.send(type="chat", room="general", body="retried", client_id="c1")
    assert (await b.recv_type("chat"))["body"] == "retried"
