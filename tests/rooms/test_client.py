"""The terminal client: the pure reconnect policy, ChatClient against a scripted
in-process WebSocket server (exact frames and waits), then ChatClient and
`manage.py chat` against a real daphne (marked live)."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import time
import urllib.request

import pytest
from websockets.asyncio.server import ServerConnection, serve

from rooms.client import (
    BACKOFF_CAP,
    ChatClient,
    ClientStopped,
    HandshakeRefused,
    ServerError,
    reconnect_delay,
)
from rooms.management.commands.chat import clean, render
from tests.live import ROOT, new_live_server

TIMEOUT = 10  # seconds to wait for anything expected

# --- reconnect_delay: the protocol's client table ------------------------------------


def fixed(value: float):
    return lambda: value


@pytest.mark.parametrize("code", [4003, 4029])
def test_kicked_or_blocked_client_never_reconnects_by_itself(code):
    assert reconnect_delay(code, 0, fixed(0.5)) is None
    assert reconnect_delay(code, 9, fixed(0.0)) is None


def test_flood_close_waits_at_least_ten_seconds():
    assert reconnect_delay(4008, 0, fixed(0.0)) == 10.0
    assert 10.0 <= reconnect_delay(4008, 5, fixed(0.999)) < 15.0


@pytest.mark.parametrize("code", [1012, 1001])
def test_restart_or_going_away_reconnects_within_a_random_five_seconds(code):
    assert reconnect_delay(code, 0, fixed(0.0)) == 0.0
    assert reconnect_delay(code, 0, fixed(0.5)) == 2.5
    assert reconnect_delay(code, 12, fixed(0.999)) < 5.0  # does not grow with failures


@pytest.mark.parametrize("code", [None, 1000, 1006, 1009, 1011, 4000])
def test_other_closes_back_off_from_half_a_second_doubling(code):
    upper = [reconnect_delay(code, attempt, fixed(1.0)) for attempt in range(8)]
    assert upper == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]


def test_backoff_is_capped_at_thirty_seconds():
    assert BACKOFF_CAP == 30.0
    assert reconnect_delay(None, 10_000, fixed(1.0)) == 30.0


def test_backoff_has_full_jitter_between_zero_and_the_bound():
    assert reconnect_delay(None, 3, fixed(0.0)) == 0.0
    assert reconnect_delay(None, 3, fixed(0.25)) == 1.0
    assert reconnect_delay(None, 3, fixed(0.999)) < 4.0


# --- rendering -------------------------------------------------------------------------


def test_chat_and_private_frames_render_as_readable_lines():
    chat = {"type": "chat", "id": 1, "room": "general", "sender": "alice", "body": "hello", "created_at": ""}
    assert re.fullmatch(r"\[general\] --:-- alice: hello", render(chat, "bob")[0])
    at = "2026-01-02T10:33:00.000Z"
    mine = {"type": "private", "id": 2, "sender": "alice", "to": "bob", "body": "hi", "created_at": at}
    assert re.fullmatch(r"\[@bob\] \d\d:\d\d alice: hi", render(mine, "alice")[0])
    assert render(mine, "bob")[0].startswith("[@alice] ")
    presence = {"type": "presence", "room": "general", "user": "bob", "event": "join"}
    assert render(presence, "alice") == ["* bob joined general"] and render(presence, "bob") == []
    error = {"type": "error", "code": "invalid", "message": "bad", "ref": "c0ffee"}
    assert render(error, "a") == ["! error invalid: bad"]
    assert render(dict(error, ref="history"), "a") == ["! error invalid: bad (re history)"]
    assert render({"type": "pong"}, "a") == []


def test_other_users_text_cannot_send_terminal_escapes():
    assert clean("red\x1b[31m\x07 text") == "red?[31m? text"
    assert clean("two\nlines") == "two\n    lines"


# --- ChatClient against a scripted server ----------------------------------------------


class Peer:
    """The server side of one client socket."""

    def __init__(self, ws: ServerConnection):
        self.ws = ws

    async def send(self, **frame) -> None:
        await self.ws.send(json.dumps(frame))

    async def recv(self) -> dict:
        return json.loads(await asyncio.wait_for(self.ws.recv(), TIMEOUT))

    async def close(self, code: int, reason: str = "") -> None:
        await self.ws.close(code, reason)


class FakeServer:
    """An in-process WebSocket server: each accept() sends `welcome` on the next socket
    and hands it to the test; ``refuse`` holds HTTP statuses for the next handshakes."""

    def __init__(self):
        self.sockets: asyncio.Queue[ServerConnection] = asyncio.Queue()
        self.refuse: list[int] = []

    def _process_request(self, connection, request):
        if self.refuse:
            return connection.respond(self.refuse.pop(0), "refused\n")
        return None

    async def _handler(self, ws: ServerConnection) -> None:
        await self.sockets.put(ws)
        await ws.wait_closed()

    async def __aenter__(self) -> FakeServer:
        self.server = await serve(self._handler, "127.0.0.1", 0, process_request=self._process_request)
        self.url = f"ws://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/ws/chat/"
        return self

    async def __aexit__(self, *exc_info) -> None:
        self.server.close()
        await self.server.wait_closed()

    async def accept(self, user: str = "alice") -> Peer:
        ws = await asyncio.wait_for(self.sockets.get(), TIMEOUT)
        peer = Peer(ws)
        await peer.send(type="welcome", protocol=1, connection_id="c1", user=user, heartbeat=20)
        return peer


class Sleeps:
    """An injected sleep that records each reconnect delay and returns at once."""

    def __init__(self):
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


class Frames:
    """An on_frame/on_state recorder with waits that time out."""

    def __init__(self):
        self.frames: list[dict] = []
        self.states: list[tuple[str, dict]] = []
        self._changed = asyncio.Event()

    def __call__(self, frame: dict) -> None:
        self.frames.append(frame)
        self._changed.set()

    def state(self, state: str, detail: dict) -> None:
        self.states.append((state, detail))
        self._changed.set()

    async def until(self, predicate, timeout: float = TIMEOUT):
        """The first recorded frame matching ``predicate``, waiting for it if need be."""
        async with asyncio.timeout(timeout):
            while True:
                found = [f for f in self.frames if predicate(f)]
                if found:
                    return found[0]
                self._changed.clear()
                await self._changed.wait()

    async def until_state(self, name: str, count: int = 1, timeout: float = TIMEOUT) -> dict:
        async with asyncio.timeout(timeout):
            while True:
                found = [d for s, d in self.states if s == name]
                if len(found) >= count:
                    return found[count - 1]
                self._changed.clear()
                await self._changed.wait()

    def ids(self) -> list[int]:
        return [f["id"] for f in self.frames if f["type"] in ("chat", "private")]


def chat(id_: int, body: str = "x", sender: str = "bob", client_id: str | None = None) -> dict:
    return {
        "type": "chat",
        "id": id_,
        "room": "general",
        "sender": sender,
        "body": body,
        "created_at": "2026-01-02T10:33:00.000Z",
        "client_id": client_id,
    }


async def joined_client(server: FakeServer, frames: Frames, **kwargs) -> tuple[ChatClient, Peer]:
    """A client connected to ``server`` and joined to general (newest id 7)."""
    client = ChatClient(server.url, "token", on_frame=frames, on_state=frames.state, **kwargs)
    peer, _ = await asyncio.gather(server.accept(), client.connect())
    joining = asyncio.create_task(client.join("general"))
    assert await peer.recv() == {"type": "join", "room": "general"}
    await peer.send(type="joined", room="general", online=["alice"], last_id=7, more=False)
    await joining
    return client, peer


async def test_refused_first_connect_raises_at_once_without_retrying():
    async with FakeServer() as server:
        server.refuse = [403]
        sleeps = Sleeps()
        client = ChatClient(server.url, "wrong", sleep=sleeps)
        with pytest.raises(HandshakeRefused, match="HTTP 403") as refused:
            await client.connect()
        assert refused.value.status == 403 and sleeps.delays == []


async def test_kicked_client_stops_says_why_and_does_not_reconnect():
    async with FakeServer() as server:
        frames, sleeps = Frames(), Sleeps()
        client, peer = await joined_client(server, frames, sleep=sleeps)
        await peer.send(type="kicked", reason="spamming")
        await peer.close(4003, "kicked")
        stopped = await asyncio.wait_for(client.wait_stopped(), TIMEOUT)
        assert stopped.code == 4003 and stopped.reason == "kicked by a moderator: spamming"
        assert sleeps.delays == [] and server.sockets.empty()
        assert [s for s, _ in frames.states] == ["connected", "stopped"]
        with pytest.raises(ClientStopped):
            await client.rooms()
        await client.close()


async def test_client_blocked_for_reconnect_abuse_stops_with_the_servers_message():
    async with FakeServer() as server:
        frames, sleeps = Frames(), Sleeps()
        client, peer = await joined_client(server, frames, sleep=sleeps)
        await peer.send(type="error", code="forbidden", message="too many reconnects; wait a minute", ref=None)
        await peer.close(4029)
        stopped = await asyncio.wait_for(client.wait_stopped(), TIMEOUT)
        assert stopped.code == 4029 and "too many reconnects" in stopped.reason
        assert sleeps.delays == []
        await client.close()


@pytest.mark.parametrize(("code", "delay"), [(1012, 2.5), (1001, 2.5), (4008, 12.5), (1000, 0.25), (1011, 0.25)])
async def test_after_a_close_the_client_waits_rejoins_with_since_and_resends_unacknowledged(code, delay):
    async with FakeServer() as server:
        frames, sleeps = Frames(), Sleeps()
        client, peer = await joined_client(server, frames, sleep=sleeps, rand=fixed(0.5))
        await peer.send(**chat(8))
        await frames.until(lambda f: f.get("id") == 8)
        client_id = await client.chat("general", "hi")
        assert (await peer.recv())["client_id"] == client_id
        await peer.close(code, "bye")  # before the echo: the message stays unacknowledged

        peer = await server.accept()
        assert sleeps.delays == [delay]
        assert await peer.recv() == {"type": "join", "room": "general", "since": 8}
        assert await peer.recv() == {"type": "chat", "room": "general", "body": "hi", "client_id": client_id}
        await peer.send(type="joined", room="general", online=["alice"], last_id=8, more=False)
        await peer.send(**chat(9, "hi", sender="alice", client_id=client_id))
        assert (await client.wait_ack(client_id))["id"] == 9
        assert client.outbox == {} and client.joined == {"general": 9} and client.reconnects == 1
        await client.close()


async def test_recovery_with_more_joins_again_from_the_newest_id_received():
    async with FakeServer() as server:
        frames = Frames()
        client, peer = await joined_client(server, frames, sleep=Sleeps())
        await peer.close(1012)
        peer = await server.accept()
        assert await peer.recv() == {"type": "join", "room": "general", "since": 7}
        await peer.send(type="joined", room="general", online=["alice"], last_id=20, more=True)
        await peer.send(**chat(8))
        await peer.send(**chat(9))
        # The ping marks the end of the recovered batch: its pong comes after them.
        assert await peer.recv() == {"type": "ping"}
        await peer.send(type="pong")
        assert await peer.recv() == {"type": "join", "room": "general", "since": 9}
        await peer.send(type="joined", room="general", online=["alice"], last_id=10, more=False)
        await peer.send(**chat(10))
        await frames.until(lambda f: f.get("id") == 10)
        assert frames.ids() == [8, 9, 10] and client.joined["general"] == 10
        await client.close()


async def test_a_message_id_is_delivered_once_and_an_error_acknowledges_its_message():
    async with FakeServer() as server:
        frames = Frames()
        client, peer = await joined_client(server, frames)
        await peer.send(**chat(8))
        await peer.send(type="chat", room="general")  # malformed: no id; ignored, not fatal
        await peer.send(**chat(8))
        client_id = await client.chat("general", "x" * 5000)
        await peer.recv()
        await peer.send(type="error", code="invalid", message="'body' is too long", ref=client_id)
        with pytest.raises(ServerError, match="invalid"):
            await client.wait_ack(client_id)
        assert frames.ids() == [8] and client.duplicates_dropped == 1 and client.outbox == {}
        await client.close()


async def test_lost_connection_backs_off_doubling_and_resets_after_a_successful_connect():
    async with FakeServer() as server:
        frames, sleeps = Frames(), Sleeps()
        client, peer = await joined_client(server, frames, sleep=sleeps, rand=fixed(1.0))
        server.refuse = [503, 503]
        peer.ws.transport.abort()  # no close frame: a lost network
        peer = await server.accept()
        assert sleeps.delays == [0.5, 1.0, 2.0]
        peer.ws.transport.abort()
        peer = await server.accept()
        assert sleeps.delays == [0.5, 1.0, 2.0, 0.5]
        assert [d["code"] for s, d in frames.states if s == "disconnected"] == [None, None, None, None]
        await client.close()


async def test_repeated_403_on_reconnect_stops_the_client():
    async with FakeServer() as server:
        frames, sleeps = Frames(), Sleeps()
        client, peer = await joined_client(server, frames, sleep=sleeps, max_refusals=2)
        server.refuse = [403, 403]
        await peer.close(1012)
        stopped = await asyncio.wait_for(client.wait_stopped(), TIMEOUT)
        assert "HTTP 403" in stopped.reason and len(sleeps.delays) == 2
        await client.close()


# --- live: ChatClient against a real daphne ----------------------------------------------


def token_for(server, username: str) -> str:
    return server.manage("create_token", username, "--create-user").strip().splitlines()[-1]


@pytest.fixture
async def open_client(daphne_server):
    """``client, frames = await open_client("alice", **kwargs)``: a connected ChatClient
    on daphne_server (or ``server=``) with fast reconnect waits, closed after the test."""
    clients: list[ChatClient] = []

    async def open_(username: str, server=daphne_server, **kwargs) -> tuple[ChatClient, Frames]:
        token = await asyncio.to_thread(token_for, server, username)
        frames = Frames()
        kwargs.setdefault("delay_scale", 0.05)
        client = ChatClient(server.ws_url, token, on_frame=frames, on_state=frames.state, **kwargs)
        await client.connect()
        clients.append(client)
        return client, frames

    yield open_
    for client in clients:
        await client.close()


class Gate:
    """An injected reconnect sleep that holds the client away until opened."""

    def __init__(self):
        self.opened = asyncio.Event()
        self.waiting = asyncio.Event()
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        self.waiting.set()
        await self.opened.wait()


@pytest.mark.live
async def test_two_clients_chat_in_a_room(open_client):
    alice, alice_frames = await open_client("alice")
    bob, bob_frames = await open_client("bob")
    await alice.join("general")
    joined = await bob.join("general")
    assert sorted(joined["online"]) == ["alice", "bob"]
    await alice_frames.until(lambda f: f["type"] == "presence" and f["user"] == "bob")

    client_id = await alice.chat("general", "hello bob")
    echo = await alice.wait_ack(client_id)
    got = await bob_frames.until(lambda f: f["type"] == "chat")
    assert got == echo
    assert (got["sender"], got["body"], got["client_id"]) == ("alice", "hello bob", client_id)
    assert alice.outbox == {} and alice.joined["general"] == echo["id"] and bob.joined["general"] == echo["id"]

    await bob.typing("general")
    assert (await alice_frames.until(lambda f: f["type"] == "typing"))["user"] == "bob"
    assert [r["room"] for r in await alice.rooms()] == ["general"]
    await bob.leave("general")
    await alice_frames.until(lambda f: f["type"] == "presence" and f["event"] == "leave")
    assert alice.online["general"] == {"alice"} and "general" not in bob.joined


@pytest.mark.live
async def test_private_message_reaches_both_sides_and_its_history(open_client):
    alice, _ = await open_client("alice")
    bob, bob_frames = await open_client("bob")
    client_id = await alice.private("bob", "psst")
    echo = await alice.wait_ack(client_id)
    got = await bob_frames.until(lambda f: f["type"] == "private")
    assert got == echo and (got["sender"], got["to"], got["body"]) == ("alice", "bob", "psst")
    page = await bob.history(with_="alice")
    assert [m["body"] for m in page["messages"]] == ["psst"] and page["with"] == "alice"

    nobody = await alice.private("nobody-here", "hello?")
    with pytest.raises(ServerError) as error:
        await alice.wait_ack(nobody)
    assert error.value.code == "not_found" and alice.outbox == {}


@pytest.mark.live
async def test_history_pages_back_from_the_newest(open_client):
    alice, _ = await open_client("alice")
    await alice.join("general")
    ids = [(await alice.wait_ack(await alice.chat("general", f"m{n}")))["id"] for n in range(5)]
    page = await alice.history(room="general", limit=2)
    assert [m["id"] for m in page["messages"]] == ids[3:] and page["has_more"]
    page = await alice.history(room="general", before=page["messages"][0]["id"], limit=2)
    assert [m["body"] for m in page["messages"]] == ["m1", "m2"] and page["has_more"]
    page = await alice.history(room="general", before=page["messages"][0]["id"], limit=2)
    assert [m["id"] for m in page["messages"]] == ids[:1] and not page["has_more"]


WRITE_WHILE_DOWN = """
from django.contrib.auth import get_user_model
from rooms.models import Room
from rooms.services import room_message_create
users = get_user_model().objects
room = Room.objects.get(slug="general")
room_message_create(room=room, sender=users.get(username="bob"), body="written while alice was away", client_id=None)
room_message_create(room=room, sender=users.get(username="alice"), body="stored, echo lost", client_id="lost-echo-1")
"""


@pytest.mark.live
async def test_after_a_server_restart_the_client_recovers_and_delivers_the_queued_message_once(
    daphne_server, open_client
):
    alice, alice_frames = await open_client("alice")
    bob, bob_frames = await open_client("bob")
    await alice.join("general")
    await bob.join("general")
    await alice.wait_ack(await alice.chat("general", "before the restart"))

    await asyncio.to_thread(daphne_server.stop)
    await alice_frames.until_state("disconnected")
    await bob_frames.until_state("disconnected")
    queued = await alice.chat("general", "queued while the server was down")
    assert not alice.connected and queued in alice.outbox
    # While the server is down: a message alice missed, and one of hers that was stored
    # but whose echo was lost (she still holds it unacknowledged, under the same client_id).
    await asyncio.to_thread(daphne_server.manage, "shell", "-c", WRITE_WHILE_DOWN)
    lost = await alice.chat("general", "stored, echo lost", client_id="lost-echo-1")
    await asyncio.to_thread(daphne_server.start)

    echo = await alice.wait_ack(queued)
    assert (await alice.wait_ack(lost))["client_id"] == "lost-echo-1"
    await alice_frames.until(lambda f: f.get("body") == "written while alice was away")
    await bob_frames.until(lambda f: f.get("client_id") == queued)
    await alice.rooms()  # answered after everything the resume sent: any duplicate is in by now
    await bob.rooms()
    for frames in (alice_frames, bob_frames):
        ids = frames.ids()
        assert len(ids) == len(set(ids)) == 4, frames.frames
        assert echo["id"] in ids
    assert alice.duplicates_dropped == 1  # the resent "lost-echo-1" came back as the original
    assert alice.reconnects == 1 and bob.reconnects == 1 and alice.outbox == {}
    assert alice.joined["general"] == bob.joined["general"] == max(alice_frames.ids())


@pytest.mark.live
async def test_a_client_away_for_more_than_the_recovery_limit_catches_up_in_order(live_root, open_client):
    server = new_live_server(live_root / "recovery-limit", CHAT_RECOVERY_LIMIT="2").start()
    try:
        gate = Gate()
        alice, alice_frames = await open_client("alice", server=server, sleep=gate)
        bob, _ = await open_client("bob", server=server)
        await alice.join("general")
        await bob.join("general")
        alice.abort()
        await asyncio.wait_for(gate.waiting.wait(), TIMEOUT)
        sent = [(await bob.wait_ack(await bob.chat("general", f"missed {n}")))["id"] for n in range(5)]
        gate.opened.set()
        await alice_frames.until(lambda f: f.get("id") == sent[-1])
        later = await bob.wait_ack(await bob.chat("general", "live again"))
        await alice_frames.until(lambda f: f.get("id") == later["id"])
        assert alice_frames.ids() == [*sent, later["id"]]
        assert [f["more"] for f in alice_frames.frames if f["type"] == "joined"] == [False, True, True, False]
    finally:
        await asyncio.to_thread(server.stop)


def kick(server, connection_id: str) -> int:
    """DELETE /api/connections/<id> with a new service key; returns the HTTP status."""
    key = server.manage("create_service_key", f"kicker-{connection_id[:8]}").strip().splitlines()[-1]
    request = urllib.request.Request(
        f"{server.url}/api/connections/{connection_id}", method="DELETE", headers={"Authorization": f"Bearer {key}"}
    )
    with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
        return response.status


@pytest.mark.live
async def test_a_client_kicked_through_the_api_stops_and_does_not_reconnect(daphne_server, open_client):
    sleeps = Sleeps()
    alice, frames = await open_client("alice", sleep=sleeps)
    await alice.join("general")
    status = await asyncio.to_thread(kick, daphne_server, alice.welcome["connection_id"])
    stopped = await asyncio.wait_for(alice.wait_stopped(), TIMEOUT)
    assert status == 204 and stopped.code == 4003 and stopped.reason.startswith("kicked by a moderator")
    assert any(f["type"] == "kicked" for f in frames.frames)
    assert sleeps.delays == [] and not alice.connected and alice.reconnects == 0


@pytest.mark.live
async def test_a_wrong_token_is_refused_with_403_and_no_retry(daphne_server):
    sleeps = Sleeps()
    client = ChatClient(daphne_server.ws_url, "not-a-token", sleep=sleeps)
    with pytest.raises(HandshakeRefused) as refused:
        await client.connect()
    assert refused.value.status == 403 and sleeps.delays == []


# --- live: manage.py chat -----------------------------------------------------------------


def run_chat(server, *args: str, token: str | None = None, stdin: str | None = None) -> subprocess.CompletedProcess:
    env = dict(server.env)
    if token is not None:
        env["CHAT_TOKEN"] = token
    return subprocess.run(
        [sys.executable, "manage.py", "chat", "--url", server.ws_url, *args],
        env=env,
        cwd=ROOT,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.mark.live
def test_chat_command_sends_lists_rooms_and_prints_history(daphne_server):
    token = token_for(daphne_server, "alice")
    sent = run_chat(daphne_server, "--join", "general", "--send", "hello from a script", token=token)
    assert sent.returncode == 0, sent.stderr
    assert re.fullmatch(r"\[general\] \d\d:\d\d alice: hello from a script\n", sent.stdout)

    rooms = run_chat(daphne_server, "--token", token, "--rooms")
    assert rooms.returncode == 0, rooms.stderr
    assert re.fullmatch(r"general\s+0 online\s+general\n", rooms.stdout)

    history = run_chat(daphne_server, "--history", "general", token=token)
    assert history.returncode == 0, history.stderr
    assert history.stdout.splitlines()[-1].endswith("alice: hello from a script")


@pytest.mark.live
def test_chat_command_with_a_wrong_token_fails_fast_with_a_clear_error(daphne_server):
    started = time.monotonic()
    result = run_chat(daphne_server, "--rooms", token="not-a-token")
    assert result.returncode == 2 and "HTTP 403" in result.stderr
    assert time.monotonic() - started < 15


@pytest.mark.live
def test_interactive_chat_reads_commands_and_messages_from_stdin(daphne_server):
    token = token_for(daphne_server, "alice")
    script = "/join general\nhello typed in\n/who\n/msg alice note to self\n/history\n/bogus\n/quit\n"
    result = run_chat(daphne_server, token=token, stdin=script)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "* connected to " in out and "* joined general: 1 online (alice)" in out
    assert re.search(r"^\[general\] \d\d:\d\d alice: hello typed in$", out, re.M)
    assert "* online in general: alice" in out
    assert re.search(r"^\[@alice\] \d\d:\d\d alice: note to self$", out, re.M)
    assert "! unknown command or wrong arguments: /bogus" in out
