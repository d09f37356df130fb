"""The HTTP API for backend services (PROTOCOL.md §5): every endpoint, every error status.

The first part reads and writes registry rows directly and captures the realtime seam;
the second connects real sockets (the real channel layer) and checks what they receive.
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from django.utils import timezone

from chatsite import realtime
from presence import runtime, store, views
from presence.models import Connection, ModerationAction, ServerProcess, ServiceKey
from presence.services.keys import service_key_create, service_keys_revoke
from rooms.events import LayerEvent
from rooms.models import Room

TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


# --- fixtures and helpers --------------------------------------------------------------


@pytest.fixture
def key(db) -> str:
    return service_key_create(name="tests")[1]


def auth(key: str) -> dict:
    return {"HTTP_AUTHORIZATION": f"Bearer {key}"}


def post(client, path: str, body, key: str | None, **extra):
    data = body if isinstance(body, str | bytes) else json.dumps(body)
    headers = auth(key) if key else {}
    return client.post(path, data, content_type="application/json", **headers, **extra)


def assert_error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.content
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    assert body["error"]["code"] == code and body["error"]["message"]
    return body["error"]


@pytest.fixture
def server(db) -> ServerProcess:
    """A process whose lease is alive."""
    row = ServerProcess.objects.create(name="web-1-100-abc", hostname="web-1", pid=100)
    async_to_sync(store.server_lease)(server=row.name, ttl=60)
    return row


@pytest.fixture
def dead_server(db) -> ServerProcess:
    """A process that held a lease which lapsed, not yet swept: its rows are still open."""
    row = ServerProcess.objects.create(name="web-2-200-def", hostname="web-2", pid=200)
    async_to_sync(store.server_lease)(server=row.name, ttl=60)
    async_to_sync(store.server_release)(server=row.name)
    return row


def open_connection(user, server, *, closed: bool = False, rooms=(), ago: float = 0, **fields) -> Connection:
    now = timezone.now() - timedelta(seconds=ago)
    return Connection.objects.create(
        id=uuid.uuid4().hex,
        user=user,
        server=server,
        channel_name=f"specific.{uuid.uuid4().hex}!{uuid.uuid4().hex[:8]}",
        ip=fields.pop("ip", "203.0.113.7"),
        user_agent=fields.pop("user_agent", "svc-tests/1.0"),
        rooms=" " + " ".join(rooms) + " ",
        connected_at=now,
        last_seen=now,
        closed_at=now if closed else None,
        **fields,
    )


@pytest.fixture
def sent(monkeypatch) -> list[tuple[str, str, dict]]:
    """Everything sent through the realtime seam: (kind, group or channel, event)."""
    events: list[tuple[str, str, dict]] = []
    monkeypatch.setattr(realtime, "group_send", lambda group, event: events.append(("group", group, event)))
    monkeypatch.setattr(realtime, "channel_send", lambda channel, event: events.append(("channel", channel, event)))
    return events


def notify_of(event: dict) -> dict:
    return json.loads(event["text"])


# --- authentication ----------------------------------------------------------------------


PUSH = {"to": {"user": "alice"}, "topic": "job", "data": {"progress": 0.5}}


def test_no_authorization_header_is_401(client, make_user):
    make_user("alice")
    response = post(client, "/api/push", PUSH, key=None)
    assert_error(response, 401, "unauthorized")
    assert response["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize("header", ["Bearer sk_not-a-real-key", "Bearer ", "Basic c2s6eA==", "sk_without_scheme"])
def test_a_wrong_key_or_scheme_is_401(client, key, header):
    response = client.get("/api/connections", HTTP_AUTHORIZATION=header)
    assert_error(response, 401, "unauthorized")


def test_a_user_api_token_is_not_a_service_key(client, make_user):
    from accounts.services import token_create

    _, token = token_create(user=make_user("alice"))
    assert_error(client.get("/api/connections", **auth(token)), 401, "unauthorized")


def test_a_revoked_key_is_401(client, key):
    assert client.get("/api/connections", **auth(key)).status_code == 200
    service_keys_revoke(keys=ServiceKey.objects.all())
    assert_error(client.get("/api/connections", **auth(key)), 401, "unauthorized")


def test_a_request_marks_the_key_used(client, key):
    client.get("/api/connections", **auth(key))
    assert ServiceKey.objects.get().last_used_at is not None


def test_the_api_needs_no_csrf_token(key, make_user, sent):
    from django.test import Client

    make_user("alice")
    strict = Client(enforce_csrf_checks=True)
    assert post(strict, "/api/push", PUSH, key).status_code == 202
    assert_error(post(strict, "/api/nope", PUSH, key), 404, "not_found")


def test_authentication_comes_before_the_method_check(client):
    assert_error(client.put("/api/push"), 401, "unauthorized")


# --- routing: 404 and 405 are JSON too ----------------------------------------------------


@pytest.mark.parametrize("path", ["/api/", "/api/nope", "/api/push/", "/api/connections/abc/extra", "/api/admin/"])
def test_unknown_api_paths_are_a_json_404(client, key, path):
    assert_error(client.get(path, **auth(key)), 404, "not_found")
    assert_error(post(client, path, PUSH, key), 404, "not_found")


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("get", "/api/push", "POST"),
        ("put", "/api/push", "POST"),
        ("delete", "/api/push", "POST"),
        ("post", "/api/connections", "GET"),
        ("delete", "/api/connections", "GET"),
        ("put", "/api/connections/abc", "DELETE"),
        ("patch", "/api/connections/abc", "DELETE"),
    ],
)
def test_a_wrong_method_is_a_json_405_with_allow(client, key, method, path, allow):
    response = getattr(client, method)(path, **auth(key))
    assert_error(response, 405, "method_not_allowed")
    assert allow in response["Allow"]


def test_an_unexpected_fault_is_a_json_500_without_details(client, key, make_user, monkeypatch):
    make_user("alice")

    def broken(**kwargs):
        raise RuntimeError("secret internals")

    monkeypatch.setattr(views, "push_send", broken)
    response = post(client, "/api/push", PUSH, key)
    error = assert_error(response, 500, "internal")
    assert "secret" not in error["message"]


# --- POST /api/push: validation -------------------------------------------------------------


@pytest.mark.parametrize(
    "body", ["{not json", "", b"\xff\xfe{}", '{"to": NaN}', '{"data": {"x": Infinity}}', "[" * 60_000]
)
def test_push_body_that_is_not_json_is_400_bad_json(client, key, body):
    assert_error(post(client, "/api/push", body, key), 400, "bad_json")


@pytest.mark.parametrize("body", ["[]", '"text"', "42", "null"])
def test_push_body_that_is_not_an_object_is_400_bad_json(client, key, body):
    assert_error(post(client, "/api/push", body, key), 400, "bad_json")


def test_push_body_over_64_kib_is_400_too_large(client, key, make_user):
    make_user("alice")
    body = dict(PUSH, data={"blob": "x" * (64 * 1024)})
    assert_error(post(client, "/api/push", body, key), 400, "too_large")


def test_push_body_just_under_64_kib_is_accepted(client, key, make_user, sent):
    make_user("alice")
    body = dict(PUSH, data={"blob": ""})
    body["data"]["blob"] = "x" * (64 * 1024 - len(json.dumps(body)))
    assert len(json.dumps(body)) == 64 * 1024
    assert post(client, "/api/push", body, key).status_code == 202


@pytest.mark.parametrize(
    "to",
    [
        None,
        "alice",
        [],
        {},
        {"user": "alice", "room": "general"},
        {"group": "alice"},
        {"user": ""},
        {"user": 42},
        {"user": "a" * 151},
        {"user": "bad\nname"},
        {"room": "Not A Room"},
        {"room": 7},
        {"connection": 7},
        {"connection": ""},
    ],
)
def test_push_to_of_the_wrong_shape_is_400_invalid(client, key, to):
    body = dict(PUSH) if to is None else dict(PUSH, to=to)
    if to is None:
        del body["to"]
    assert_error(post(client, "/api/push", body, key), 400, "invalid")


@pytest.mark.parametrize("topic", [None, "", "   ", 5, ["job"], "t" * 101])
def test_push_topic_must_be_a_short_non_blank_string(client, key, make_user, topic):
    make_user("alice")
    body = dict(PUSH, topic=topic)
    if topic is None:
        del body["topic"]
    assert_error(post(client, "/api/push", body, key), 400, "invalid")


@pytest.mark.parametrize("data", [None, "done", 1, [1, 2], True])
def test_push_data_must_be_an_object(client, key, make_user, data):
    make_user("alice")
    body = dict(PUSH, data=data)
    if data is None:
        del body["data"]
    assert_error(post(client, "/api/push", body, key), 400, "invalid")


def test_push_to_an_unknown_or_inactive_user_is_404(client, key, make_user, sent):
    assert_error(post(client, "/api/push", PUSH, key), 404, "not_found")
    make_user("alice", is_active=False)
    assert_error(post(client, "/api/push", PUSH, key), 404, "not_found")
    assert sent == []


def test_push_to_an_unknown_room_is_404(client, key, sent):
    assert_error(post(client, "/api/push", dict(PUSH, to={"room": "nowhere"}), key), 404, "not_found")
    assert sent == []


def test_push_to_an_unknown_closed_or_orphaned_connection_is_404(client, key, make_user, server, dead_server, sent):
    alice = make_user("alice")
    closed = open_connection(alice, server, closed=True)
    orphan = open_connection(alice, dead_server)
    for connection_id in ["0" * 32, closed.id, orphan.id]:
        response = post(client, "/api/push", dict(PUSH, to={"connection": connection_id}), key)
        assert_error(response, 404, "not_found")
    assert sent == []


# --- POST /api/push: what is sent ---------------------------------------------------------


def test_push_to_a_user_counts_their_open_connections_and_sends_once_to_their_group(
    client, key, make_user, server, dead_server, sent
):
    alice, bob = make_user("alice"), make_user("bob")
    open_connection(alice, server)
    open_connection(alice, server)
    open_connection(alice, server, closed=True)
    open_connection(alice, dead_server)  # its process died: not counted
    open_connection(bob, server)
    response = post(client, "/api/push", PUSH, key)
    assert response.status_code == 202
    assert response.json() == {"delivered": 2, "offline": []}
    ((kind, group, event),) = sent
    assert (kind, group, event["type"]) == ("group", realtime.user_group(alice.pk), LayerEvent.USER_FRAME)
    assert notify_of(event) == {"type": "notify", "topic": "job", "data": {"progress": 0.5}}


def test_push_to_a_user_with_no_open_connection_reports_them_offline(client, key, make_user, server, sent):
    alice = make_user("alice")
    open_connection(alice, server, closed=True)
    response = post(client, "/api/push", PUSH, key)
    assert response.status_code == 202
    assert response.json() == {"delivered": 0, "offline": ["alice"]}
    assert len(sent) == 1  # sent all the same: a socket opening right now still gets it


def test_push_to_a_room_sends_once_to_the_room_group(client, key, sent):
    room = Room.objects.create(slug="ops")
    response = post(client, "/api/push", dict(PUSH, to={"room": "ops"}), key)
    assert response.status_code == 202
    assert response.json() == {"delivered": 0, "offline": []}
    ((kind, group, event),) = sent
    assert (kind, group, event["type"]) == ("group", realtime.room_group(room.pk), LayerEvent.ROOM_FRAME)
    assert event["room_id"] == room.pk and notify_of(event)["topic"] == "job"


def test_push_to_a_connection_sends_to_its_channel_only(client, key, make_user, server, sent):
    alice = make_user("alice")
    target = open_connection(alice, server)
    open_connection(alice, server)
    response = post(client, "/api/push", dict(PUSH, to={"connection": target.id}), key)
    assert response.status_code == 202
    assert response.json() == {"delivered": 1, "offline": []}
    assert [(kind, name, event["type"]) for kind, name, event in sent] == [
        ("channel", target.channel_name, LayerEvent.USER_FRAME)
    ]


def test_push_keeps_unicode_and_nested_data_intact(client, key, make_user, server, sent):
    make_user("alice")
    data = {"title": "Café ✓", "steps": [1, {"done": True, "note": None}], "ratio": 0.25}
    assert post(client, "/api/push", dict(PUSH, data=data), key).status_code == 202
    assert notify_of(sent[0][2])["data"] == data


# --- GET /api/connections -------------------------------------------------------------------


def test_list_shows_open_connections_newest_first_with_every_field(client, key, make_user, server, dead_server):
    alice, bob = make_user("alice"), make_user("bob")
    older = open_connection(alice, server, rooms=["general", "ops"], ago=60, ip="2001:db8::1", user_agent="cli/2")
    newer = open_connection(bob, server, ip=None, user_agent="")
    open_connection(alice, server, closed=True)
    open_connection(alice, dead_server)
    response = client.get("/api/connections", **auth(key))
    assert response.status_code == 200
    body = response.json()
    assert body["more"] is False
    assert [c["id"] for c in body["connections"]] == [newer.id, older.id]
    first = body["connections"][1]
    assert first == {
        "id": older.id,
        "user": "alice",
        "ip": "2001:db8::1",
        "user_agent": "cli/2",
        "rooms": ["general", "ops"],
        "connected_at": first["connected_at"],
        "last_seen": first["last_seen"],
        "server": "web-1-100-abc",
    }
    assert TIMESTAMP.match(first["connected_at"]) and TIMESTAMP.match(first["last_seen"])
    parsed = datetime.fromisoformat(first["connected_at"].replace("Z", "+00:00"))
    assert abs(parsed - older.connected_at.astimezone(UTC)) < timedelta(milliseconds=1)
    assert body["connections"][0]["ip"] is None and body["connections"][0]["rooms"] == []


def test_list_filters_by_user(client, key, make_user, server):
    alice, bob = make_user("alice"), make_user("bob")
    mine = open_connection(alice, server)
    open_connection(bob, server)
    response = client.get("/api/connections", {"user": "alice"}, **auth(key))
    assert [c["id"] for c in response.json()["connections"]] == [mine.id]


def test_list_of_a_user_with_no_connection_is_empty(client, key, make_user):
    make_user("alice")
    response = client.get("/api/connections", {"user": "alice"}, **auth(key))
    assert response.status_code == 200 and response.json() == {"connections": [], "more": False}


def test_list_of_an_unknown_user_is_404(client, key):
    assert_error(client.get("/api/connections", {"user": "ghost"}, **auth(key)), 404, "not_found")


@pytest.mark.parametrize("query", ["user=", "user=alice&user=bob", "user=" + "a" * 151, "user=a%00b"])
def test_list_with_a_bad_user_parameter_is_400(client, key, make_user, query):
    make_user("alice")
    assert_error(client.get(f"/api/connections?{query}", **auth(key)), 400, "invalid")


def test_list_is_capped_and_says_there_are_more(client, key, make_user, server, monkeypatch):
    monkeypatch.setattr(views, "CONNECTIONS_LIST_LIMIT", 2)
    alice = make_user("alice")
    for _ in range(3):
        open_connection(alice, server)
    body = client.get("/api/connections", **auth(key)).json()
    assert len(body["connections"]) == 2 and body["more"] is True


def test_list_costs_a_fixed_number_of_queries(client, key, make_user, server, django_assert_num_queries):
    alice = make_user("alice")
    for _ in range(5):
        open_connection(alice, server)
    client.get("/api/connections", **auth(key))  # the key's first use writes last_used_at
    with django_assert_num_queries(3):  # key, user, connections
        response = client.get("/api/connections", {"user": "alice"}, **auth(key))
    assert len(response.json()["connections"]) == 5


# --- /api/connections/<id> ------------------------------------------------------------------


def test_get_one_connection(client, key, make_user, server):
    connection = open_connection(make_user("alice"), server, rooms=["general"])
    response = client.get(f"/api/connections/{connection.id}", **auth(key))
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"id", "user", "ip", "user_agent", "rooms", "connected_at", "last_seen", "server"}
    assert (body["id"], body["user"], body["rooms"], body["server"]) == (
        connection.id,
        "alice",
        ["general"],
        server.name,
    )


def test_get_an_unknown_closed_or_orphaned_connection_is_404(client, key, make_user, server, dead_server):
    alice = make_user("alice")
    for connection_id in [
        "nope",
        open_connection(alice, server, closed=True).id,
        open_connection(alice, dead_server).id,
    ]:
        assert_error(client.get(f"/api/connections/{connection_id}", **auth(key)), 404, "not_found")


def test_post_to_a_connection_notifies_that_connection(client, key, make_user, server, sent):
    connection = open_connection(make_user("alice"), server)
    response = post(client, f"/api/connections/{connection.id}", {"topic": "job", "data": {"step": 3}}, key)
    assert response.status_code == 202 and response.json() == {"delivered": 1, "offline": []}
    ((kind, channel, event),) = sent
    assert (kind, channel) == ("channel", connection.channel_name)
    assert notify_of(event) == {"type": "notify", "topic": "job", "data": {"step": 3}}


@pytest.mark.parametrize(
    "body", ["nope", "[]", {"topic": "", "data": {}}, {"topic": "job"}, {"topic": "job", "data": 3}]
)
def test_post_to_a_connection_with_a_bad_body_is_400(client, key, make_user, server, body, sent):
    connection = open_connection(make_user("alice"), server)
    response = post(client, f"/api/connections/{connection.id}", body, key)
    assert response.status_code == 400 and response.json()["error"]["code"] in {"bad_json", "invalid"}
    assert sent == []


def test_post_to_an_unknown_connection_is_404(client, key):
    assert_error(post(client, "/api/connections/nope", {"topic": "job", "data": {}}, key), 404, "not_found")


def test_delete_kicks_the_connection_and_records_it(
    client, key, make_user, server, sent, django_capture_on_commit_callbacks
):
    connection = open_connection(make_user("alice"), server)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.delete(f"/api/connections/{connection.id}", **auth(key))
    assert response.status_code == 204 and response.content == b""
    ((kind, channel, event),) = sent
    assert (kind, channel, event["type"]) == ("channel", connection.channel_name, LayerEvent.CONNECTION_KICK)
    action = ModerationAction.objects.get()
    assert action.kind == "kick" and action.by is None and action.connection_id == connection.id
    assert action.reason == "disconnected by a service"


def test_delete_of_an_unknown_closed_or_orphaned_connection_is_404(client, key, make_user, server, dead_server, sent):
    alice = make_user("alice")
    for connection_id in [
        "nope",
        open_connection(alice, server, closed=True).id,
        open_connection(alice, dead_server).id,
    ]:
        assert_error(client.delete(f"/api/connections/{connection_id}", **auth(key)), 404, "not_found")
    assert sent == [] and not ModerationAction.objects.exists()


# --- with real sockets and the real channel layer ------------------------------------------


def api_headers(raw: str) -> dict:
    return {"Authorization": f"Bearer {raw}"}


@pytest.fixture
async def akey(transactional_db) -> str:
    return (await database_sync_to_async(service_key_create)(name="tests"))[1]


@pytest.mark.django_db(transaction=True)
async def test_push_to_a_user_reaches_each_of_their_sockets_and_no_one_else(connect, create_users, async_client, akey):
    alice, bob = await create_users("alice", "bob")
    first, second, other = await connect(alice), await connect(alice), await connect(bob)
    response = await async_client.post(
        "/api/push",
        {"to": {"user": "alice"}, "topic": "job", "data": {"job_id": 7, "progress": 1.0}},
        content_type="application/json",
        headers=api_headers(akey),
    )
    assert response.status_code == 202
    assert response.json() == {"delivered": 2, "offline": []}
    expected = {"type": "notify", "topic": "job", "data": {"job_id": 7, "progress": 1.0}}
    assert await first.recv_type("notify") == expected
    assert await second.recv_type("notify") == expected
    assert await other.silent()


@pytest.mark.django_db(transaction=True)
async def test_push_to_an_offline_user_reports_them_and_reaches_no_socket(connect, create_users, async_client, akey):
    alice, bob = await create_users("alice", "bob")
    other = await connect(bob)
    response = await async_client.post(
        "/api/push",
        {"to": {"user": "alice"}, "topic": "mail", "data": {}},
        content_type="application/json",
        headers=api_headers(akey),
    )
    assert response.status_code == 202 and response.json() == {"delivered": 0, "offline": ["alice"]}
    assert await other.silent()


@pytest.mark.django_db(transaction=True)
async def test_push_to_a_room_reaches_joined_sockets_only(connect, create_users, async_client, akey):
    alice, bob, carol = await create_users("alice", "bob", "carol")
    in_room, also_in_room, elsewhere = await connect(alice), await connect(bob), await connect(carol)
    await in_room.join("ops")
    await also_in_room.join("ops")
    await elsewhere.join("general")
    await elsewhere.until("presence")  # its own join, so nothing else is pending
    response = await async_client.post(
        "/api/push",
        {"to": {"room": "ops"}, "topic": "deploy", "data": {"version": "1.2"}},
        content_type="application/json",
        headers=api_headers(akey),
    )
    assert response.status_code == 202 and response.json() == {"delivered": 2, "offline": []}
    expected = {"type": "notify", "topic": "deploy", "data": {"version": "1.2"}}
    assert await in_room.until("notify") == expected
    assert await also_in_room.until("notify") == expected
    assert await elsewhere.silent()


@pytest.mark.django_db(transaction=True)
async def test_connections_endpoint_lists_real_sockets_with_their_rooms(connect, create_users, async_client, akey):
    alice, bob = await create_users("alice", "bob")
    first, second = await connect(alice), await connect(alice)
    await connect(bob)
    await first.join("general")
    await (await runtime.current()).flush()  # rooms reach the registry once per heartbeat
    response = await async_client.get("/api/connections", {"user": "alice"}, headers=api_headers(akey))
    assert response.status_code == 200
    listed = {c["id"]: c for c in response.json()["connections"]}
    assert set(listed) == {first.welcome["connection_id"], second.welcome["connection_id"]}
    mine = listed[first.welcome["connection_id"]]
    assert mine["user"] == "alice" and mine["rooms"] == ["general"]
    assert mine["server"] == (await runtime.current()).name
    detail = await async_client.get(f"/api/connections/{mine['id']}", headers=api_headers(akey))
    assert detail.json() == mine


@pytest.mark.django_db(transaction=True)
async def test_a_closed_socket_leaves_the_api(connect, create_users, async_client, akey):
    (alice,) = await create_users("alice")
    client = await connect(alice)
    await client.close()
    response = await async_client.get(f"/api/connections/{client.welcome['connection_id']}", headers=api_headers(akey))
    assert response.status_code == 404
    response = await async_client.get("/api/connections", {"user": "alice"}, headers=api_headers(akey))
    assert response.json()["connections"] == []


@pytest.mark.django_db(transaction=True)
async def test_post_to_a_connection_reaches_that_socket_only(connect, create_users, async_client, akey):
    (alice,) = await create_users("alice")
    target, sibling = await connect(alice), await connect(alice)
    response = await async_client.post(
        f"/api/connections/{target.welcome['connection_id']}",
        {"topic": "job", "data": {"progress": 0.3}},
        content_type="application/json",
        headers=api_headers(akey),
    )
    assert response.status_code == 202 and response.json() == {"delivered": 1, "offline": []}
    assert await target.recv_type("notify") == {"type": "notify", "topic": "job", "data": {"progress": 0.3}}
    assert await sibling.silent()


@pytest.mark.django_db(transaction=True)
async def test_delete_kicks_the_socket_with_4003_and_then_it_is_gone(connect, create_users, async_client, akey):
    (alice,) = await create_users("alice")
    target, sibling = await connect(alice), await connect(alice)
    connection_id = target.welcome["connection_id"]
    response = await async_client.delete(f"/api/connections/{connection_id}", headers=api_headers(akey))
    assert response.status_code == 204
    assert await target.recv_type("kicked") == {"type": "kicked", "reason": "disconnected by a service"}
    assert await target.ws.receive_output(timeout=5) == {"type": "websocket.close", "code": 4003}
    await target.close()  # the test client's side of the close: the consumer forgets the socket
    assert await sibling.silent()
    response = await async_client.delete(f"/api/connections/{connection_id}", headers=api_headers(akey))
    assert response.status_code == 404
