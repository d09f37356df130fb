"""The moderators' admin: the connection changelist (filters, search, a bounded page with
10,000 open connections), each action's effect through admin_client (the service's
records and the events sent after commit), blocks, abuse flags, server processes, the
room and user actions, and the live dashboard page and socket."""

from __future__ import annotations

import time
import uuid
from datetime import timedelta

import pytest
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.urls import reverse
from django.utils import timezone

from accounts.services import token_create
from chatsite import realtime
from chatsite.asgi import application
from presence import store
from presence.models import AbuseFlag, Block, Connection, ModerationAction, ServerProcess
from rooms.events import CloseCode, LayerEvent
from rooms.models import Room
from tests.conftest import TIMEOUT, ws_headers

CONNECTIONS = reverse("admin:presence_connection_changelist")
BLOCKS = reverse("admin:presence_block_changelist")
FLAGS = reverse("admin:presence_abuseflag_changelist")
DASHBOARD = reverse("presence_dashboard")
# The user, the server and room filters' lookups, the paginator's count, the page of rows
# (5 measured; one more if the session falls back to the database), whatever the rows.
MAX_CHANGELIST_QUERIES = 6

User = get_user_model()


# --- fixtures and helpers --------------------------------------------------------------


def server_with_lease(name: str, *, alive: bool = True) -> ServerProcess:
    row = ServerProcess.objects.create(name=name, hostname=name.split("-")[0], pid=100, last_heartbeat=timezone.now())
    async_to_sync(store.server_lease)(server=name, ttl=60)
    if not alive:
        async_to_sync(store.server_release)(server=name)
    return row


@pytest.fixture
def server(db) -> ServerProcess:
    return server_with_lease("web1-100-abc")


def connection(user, server, *, rooms=(), ip="203.0.113.7", closed=False, ago=0.0, build=False) -> Connection:
    at = timezone.now() - timedelta(seconds=ago)
    row = Connection(
        id=uuid.uuid4().hex,
        user=user,
        server=server,
        channel_name=f"specific.{uuid.uuid4().hex}",
        ip=ip,
        user_agent="pytest",
        rooms=" " + " ".join(rooms) + " ",
        connected_at=at,
        last_seen=at,
        closed_at=at if closed else None,
        close_code=1000 if closed else None,
    )
    if not build:
        row.save(force_insert=True)
    return row


@pytest.fixture
def alice(make_user):
    return make_user("alice")


@pytest.fixture
def bob(make_user):
    return make_user("bob")


@pytest.fixture
def sent(monkeypatch) -> list[tuple[str, dict]]:
    """Events sent to single channels through the realtime seam: (channel, event)."""
    events: list[tuple[str, dict]] = []
    monkeypatch.setattr(realtime, "channel_send", lambda channel, event: events.append((channel, event)))
    return events


def rows(response) -> list:
    assert response.status_code == 200, response
    return list(response.context["cl"].result_list)


def act(client, url: str, action: str, objects, **data):
    """Post an action from the changelist, as the action bar does."""
    body = {"action": action, "index": 0, "select_across": 0, "_selected_action": [o.pk for o in objects], **data}
    return client.post(url, body, follow=True)


def messages_of(response) -> list[str]:
    return [str(m) for m in response.context["messages"]]


def denied(*, user_id=None, ip=None) -> str | None:
    return async_to_sync(store.denial)(user_id=user_id, ip=ip)


# --- the connection changelist ---------------------------------------------------------


def test_changelist_shows_open_connections_by_default(admin_client, server, alice, bob):
    live = connection(alice, server)
    connection(bob, server, closed=True)
    orphan = connection(bob, server_with_lease("web2-200-def", alive=False))

    assert rows(admin_client.get(CONNECTIONS)) == [live]
    assert set(rows(admin_client.get(CONNECTIONS, {"status": "closed"}))) == set(
        Connection.objects.filter(closed_at__isnull=False)
    )
    assert rows(admin_client.get(CONNECTIONS, {"status": "orphaned"})) == [orphan]
    assert len(rows(admin_client.get(CONNECTIONS, {"status": "all"}))) == 3


def test_changelist_is_newest_first_and_shows_short_ids(admin_client, server, alice):
    old = connection(alice, server, ago=60)
    new = connection(alice, server)
    response = admin_client.get(CONNECTIONS)
    assert rows(response) == [new, old]
    assert new.id[:8] in response.content.decode()


def test_room_filter_matches_whole_room_names(admin_client, server, alice, bob):
    both = connection(alice, server, rooms=["general", "random"])
    connection(bob, server, rooms=["general-2"])
    connection(bob, server, rooms=["secret"], closed=True)

    assert rows(admin_client.get(CONNECTIONS, {"room": "general"})) == [both]
    room_filter = next(
        f for f in admin_client.get(CONNECTIONS).context["cl"].filter_specs if f.parameter_name == "room"
    )
    # Offered: the rooms of open connections only.
    assert [slug for slug, _ in room_filter.lookup_choices] == ["general", "general-2", "random"]
    assert rows(admin_client.get(CONNECTIONS, {"room": "no such room!"})) == []


def test_server_filter_lists_running_processes(admin_client, server, alice, bob):
    other = server_with_lease("web3-300-ghi")
    mine = connection(alice, server)
    connection(bob, other)
    response = admin_client.get(CONNECTIONS, {"server": server.pk})
    assert rows(response) == [mine]
    server_filter = next(f for f in response.context["cl"].filter_specs if f.parameter_name == "server")
    assert {name for _, name in server_filter.lookup_choices} == {server.name, other.name}


def test_search_by_username_and_by_ip(admin_client, server, alice, bob):
    by_alice = connection(alice, server, ip="198.51.100.1")
    by_bob = connection(bob, server, ip="198.51.100.2")
    assert rows(admin_client.get(CONNECTIONS, {"q": "ali"})) == [by_alice]
    assert rows(admin_client.get(CONNECTIONS, {"q": "198.51.100.2"})) == [by_bob]
    assert rows(admin_client.get(CONNECTIONS, {"q": "198.51.100"})) == []  # IPs match exactly


def test_user_filter_by_username(admin_client, server, alice, bob):
    by_alice = connection(alice, server)
    connection(bob, server)
    response = admin_client.get(CONNECTIONS, {"user": "alice"})
    assert rows(response) == [by_alice]
    assert 'href="?user=alice"' in response.content.decode()  # the user column links to the filter


def test_connection_is_viewable_but_not_editable(admin_client, server, alice):
    row = connection(alice, server)
    url = reverse("admin:presence_connection_change", args=[row.pk])
    response = admin_client.get(url)
    assert response.status_code == 200
    assert row.channel_name in response.content.decode()
    assert 'name="_save"' not in response.content.decode()
    assert admin_client.get(reverse("admin:presence_connection_add")).status_code == 403


def test_changelist_with_10000_open_connections_is_bounded(admin_client, django_assert_max_num_queries, server, capsys):
    users = User.objects.bulk_create([User(username=f"user{i:03d}") for i in range(100)])
    rooms = [f"room-{i}" for i in range(20)]
    now = timezone.now()
    Connection.objects.bulk_create(
        [
            Connection(
                id=uuid.uuid4().hex,
                user=users[i % len(users)],
                server=server,
                channel_name=f"specific.{i}",
                ip=f"10.0.{i // 250}.{i % 250}",
                rooms=f" {rooms[i % 20]} {rooms[(i * 7 + 1) % 20]} ",
                connected_at=now - timedelta(seconds=i),
                last_seen=now,
            )
            for i in range(10_000)
        ],
        batch_size=1000,
    )
    admin_client.get(CONNECTIONS)  # warm up: session, content types, templates

    for params, expected in (({}, 10_000), ({"room": "room-3"}, 1000), ({"q": "user007"}, 100)):
        with django_assert_max_num_queries(MAX_CHANGELIST_QUERIES) as captured:
            started = time.perf_counter()
            response = admin_client.get(CONNECTIONS, params)
            elapsed = time.perf_counter() - started
        cl = response.context["cl"]
        assert response.status_code == 200
        assert cl.result_count == expected and len(cl.result_list) == min(expected, 100)
        with capsys.disabled():
            print(
                f"\n10,000 open connections, changelist {params or '(default)'}: "
                f"{elapsed * 1000:.0f} ms, {len(captured)} queries"
            )


# --- connection actions ------------------------------------------------------------------


def test_kick_records_the_action_and_kicks_the_socket_after_commit(
    admin_client, admin_user, server, alice, sent, django_capture_on_commit_callbacks
):
    row = connection(alice, server)
    with django_capture_on_commit_callbacks(execute=True):
        response = act(admin_client, CONNECTIONS, "kick", [row])

    assert "Kicked 1 connection(s)." in messages_of(response)
    action = ModerationAction.objects.get()
    assert (action.kind, action.by, action.user, action.connection_id) == ("kick", admin_user, alice, row.id)
    assert action.reason == "disconnected by a moderator"
    assert sent == [(row.channel_name, {"type": LayerEvent.CONNECTION_KICK, "reason": "disconnected by a moderator"})]


def test_kicking_a_closed_connection_does_nothing(
    admin_client, server, alice, sent, django_capture_on_commit_callbacks
):
    row = connection(alice, server, closed=True)
    with django_capture_on_commit_callbacks(execute=True):
        response = act(admin_client, CONNECTIONS + "?status=all", "kick", [row])
    assert "Kicked 0 connection(s)." in messages_of(response)
    assert not ModerationAction.objects.exists() and sent == []


def test_kick_all_connections_of_these_users(
    admin_client, server, alice, bob, sent, django_capture_on_commit_callbacks
):
    first = connection(alice, server)
    second = connection(alice, server_with_lease("web2-200-def"))
    connection(bob, server)
    with django_capture_on_commit_callbacks(execute=True):
        response = act(admin_client, CONNECTIONS, "kick_users", [first])

    assert "Kicked 2 connection(s)." in messages_of(response)
    assert {c for c, _ in sent} == {first.channel_name, second.channel_name}
    assert set(ModerationAction.objects.values_list("user__username", flat=True)) == {"alice"}


def test_kick_and_block_asks_for_a_duration_then_blocks(
    admin_client, admin_user, server, alice, bob, sent, django_capture_on_commit_callbacks
):
    first, second = connection(alice, server), connection(alice, server)
    connection(bob, server)

    confirm = act(admin_client, CONNECTIONS, "kick_and_block", [first])
    assert confirm.status_code == 200
    assert [t.name for t in confirm.templates][0] == "admin/presence/connection/kick_and_block.html"
    page = confirm.content.decode()
    assert "7 days" in page and "alice" in page and "bob" not in page
    assert not Block.objects.exists()

    with django_capture_on_commit_callbacks(execute=True):
        done = admin_client.post(
            CONNECTIONS,
            {
                "action": "kick_and_block",
                "select_across": 0,
                "_selected_action": [first.pk],
                "apply": "yes",
                "minutes": 10,
                "reason": "spam",
            },
            follow=True,
        )
    assert "Blocked 1 user(s) for 10 minutes and kicked them." in messages_of(done)
    block = Block.objects.get()
    assert (block.user, block.created_by, block.reason) == (alice, admin_user, "spam")
    assert timedelta(minutes=9) < block.until - timezone.now() <= timedelta(minutes=10)
    assert {c for c, _ in sent} == {first.channel_name, second.channel_name}
    assert denied(user_id=alice.pk) == "spam"  # refused at the handshake from now on


def test_kick_and_block_across_all_pages_blocks_everyone_the_filter_matches(
    admin_client, server, alice, bob, make_user, django_capture_on_commit_callbacks
):
    carol = make_user("carol")
    first = connection(alice, server, rooms=["general"])
    connection(bob, server, rooms=["general", "random"])
    connection(carol, server, rooms=["random"])
    url = CONNECTIONS + "?room=general"
    body = {"action": "kick_and_block", "select_across": 1, "index": 0, "_selected_action": [first.pk]}
    confirm = admin_client.post(url, body)
    assert confirm.status_code == 200 and 'name="select_across" value="1"' in confirm.content.decode()
    assert confirm.context["users_total"] == 2

    body = {
        "action": "kick_and_block",
        "select_across": 1,
        "_selected_action": [first.pk],
        "apply": "yes",
        "minutes": 60,
    }
    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post(url, body)
    assert set(Block.objects.values_list("user__username", flat=True)) == {"alice", "bob"}


def test_kick_and_block_without_a_duration_shows_the_form_again(admin_client, server, alice):
    row = connection(alice, server)
    response = admin_client.post(
        CONNECTIONS, {"action": "kick_and_block", "_selected_action": [row.pk], "apply": "yes", "minutes": 3}
    )
    assert response.status_code == 200
    assert "errornote" in response.content.decode()
    assert not Block.objects.exists()


def test_actions_need_their_own_permission(client, make_user, server, alice, sent):
    viewer = make_user("viewer", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_connection"))
    client.force_login(viewer)
    row = connection(alice, server)

    response = client.get(CONNECTIONS)
    assert response.status_code == 200
    assert response.context["action_form"] is None or not [
        name for name, _ in response.context["action_form"].fields["action"].choices if name
    ]
    act(client, CONNECTIONS, "kick", [row])
    assert not ModerationAction.objects.exists()

    viewer.user_permissions.add(Permission.objects.get(codename="change_connection"))
    choices = [name for name, _ in client.get(CONNECTIONS).context["action_form"].fields["action"].choices]
    assert "kick" in choices and "kick_users" in choices and "kick_and_block" not in choices


# --- blocks ------------------------------------------------------------------------------


def test_adding_a_user_block_goes_through_the_service(
    admin_client, admin_user, server, alice, sent, django_capture_on_commit_callbacks
):
    live = connection(alice, server)
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            reverse("admin:presence_block_add"),
            {"user": alice.pk, "ip": "", "minutes": 60, "reason": "abuse"},
            follow=True,
        )
    assert response.status_code == 200
    block = Block.objects.get()
    assert (block.user, block.created_by, block.reason) == (alice, admin_user, "abuse")
    assert ModerationAction.objects.filter(kind="block", user=alice).exists()
    assert [c for c, _ in sent] == [live.channel_name]
    assert denied(user_id=alice.pk) == "abuse"
    assert any("was added successfully" in m for m in messages_of(response))


def test_adding_an_ip_block(admin_client, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post(reverse("admin:presence_block_add"), {"ip": "192.0.2.9", "minutes": 10, "reason": ""})
    block = Block.objects.get()
    assert block.ip == "192.0.2.9" and block.user is None
    assert denied(ip="192.0.2.9")


def test_a_block_needs_exactly_one_subject(admin_client, alice):
    response = admin_client.post(
        reverse("admin:presence_block_add"), {"user": alice.pk, "ip": "192.0.2.9", "minutes": 10}
    )
    assert response.status_code == 200 and "either a user or an IP" in response.content.decode()
    response = admin_client.post(reverse("admin:presence_block_add"), {"minutes": 10})
    assert response.status_code == 200 and not Block.objects.exists()


def test_unblock_lifts_active_blocks(admin_client, alice, django_capture_on_commit_callbacks):
    from presence.services.moderation import users_block

    with django_capture_on_commit_callbacks(execute=True):
        users_block(users=[alice], by=None, minutes=60, reason="x")
    block = Block.objects.get()
    assert rows(admin_client.get(BLOCKS)) == [block]  # active by default
    with django_capture_on_commit_callbacks(execute=True):
        response = act(admin_client, BLOCKS, "unblock", [block])
    assert "Lifted 1 block(s)." in messages_of(response)
    block.refresh_from_db()
    assert block.lifted_at is not None
    assert denied(user_id=alice.pk) is None
    assert rows(admin_client.get(BLOCKS)) == []
    assert rows(admin_client.get(BLOCKS, {"status": "lifted"})) == [block]


# --- abuse flags -------------------------------------------------------------------------


def flag(*, user=None, ip=None, cleared=False) -> AbuseFlag:
    now = timezone.now()
    return AbuseFlag.objects.create(
        kind=AbuseFlag.Kind.USER if user else AbuseFlag.Kind.IP,
        user=user,
        ip=ip,
        connects=42,
        window_seconds=60,
        first_seen=now - timedelta(seconds=50),
        last_seen=now,
        ips=["203.0.113.7", "203.0.113.8"],
        user_agents=["curl/8.0"],
        cleared_at=now if cleared else None,
    )


def test_flag_changelist_shows_open_flags_by_default_and_searches(admin_client, alice, bob):
    open_flag = flag(user=alice)
    ip_flag = flag(ip="198.51.100.9")
    flag(user=bob, cleared=True)
    assert set(rows(admin_client.get(FLAGS))) == {open_flag, ip_flag}
    assert rows(admin_client.get(FLAGS, {"status": "cleared"})) == [AbuseFlag.objects.get(user=bob)]
    assert rows(admin_client.get(FLAGS, {"q": "alice"})) == [open_flag]
    assert rows(admin_client.get(FLAGS, {"q": "198.51.100.9"})) == [ip_flag]
    assert rows(admin_client.get(FLAGS, {"kind__exact": "ip"})) == [ip_flag]
    page = admin_client.get(FLAGS).content.decode()
    assert "203.0.113.7, 203.0.113.8" in page and "curl/8.0" in page


def test_clear_closes_flags_and_ends_the_cooldown(admin_client, admin_user, alice):
    row = flag(user=alice)
    async_to_sync(store.deny)(kind="user", key=str(alice.pk), reason="cool-down", seconds=60)
    response = act(admin_client, FLAGS, "clear", [row])
    assert "Cleared 1 flag(s)." in messages_of(response)
    row.refresh_from_db()
    assert row.cleared_at is not None and row.cleared_by == admin_user
    assert denied(user_id=alice.pk) is None


@pytest.mark.parametrize(("action", "minutes"), [("block_10m", 10), ("block_1h", 60), ("block_24h", 1440)])
def test_flag_block_actions_block_the_subjects(
    admin_client, server, alice, sent, django_capture_on_commit_callbacks, action, minutes
):
    live = connection(alice, server)
    user_flag, ip_flag = flag(user=alice), flag(ip="198.51.100.9")
    with django_capture_on_commit_callbacks(execute=True):
        response = act(admin_client, FLAGS, action, [user_flag, ip_flag])
    assert any(m.startswith("Blocked 2 user(s) or IP(s)") for m in messages_of(response))
    assert Block.objects.filter(user=alice).exists() and Block.objects.filter(ip="198.51.100.9").exists()
    until = Block.objects.get(user=alice).until
    assert timedelta(minutes=minutes - 1) < until - timezone.now() <= timedelta(minutes=minutes)
    assert [c for c, _ in sent] == [live.channel_name]
    assert denied(user_id=alice.pk) and denied(ip="198.51.100.9")


def test_flag_unblock_lifts_the_subjects_blocks(admin_client, alice, django_capture_on_commit_callbacks):
    row = flag(user=alice)
    with django_capture_on_commit_callbacks(execute=True):
        act(admin_client, FLAGS, "block_1h", [row])
    with django_capture_on_commit_callbacks(execute=True):
        response = act(admin_client, FLAGS, "unblock", [row])
    assert "Lifted 1 block(s)." in messages_of(response)
    assert Block.objects.get().lifted_at is not None
    assert denied(user_id=alice.pk) is None


def test_flags_are_read_only(admin_client, alice):
    row = flag(user=alice)
    response = admin_client.get(reverse("admin:presence_abuseflag_change", args=[row.pk]))
    assert response.status_code == 200 and 'name="_save"' not in response.content.decode()
    assert admin_client.get(reverse("admin:presence_abuseflag_add")).status_code == 403


# --- moderation log and server processes ------------------------------------------------------


def test_moderation_log_is_read_only_and_searchable(admin_client, admin_user, alice, bob):
    ModerationAction.objects.create(kind="kick", by=admin_user, user=alice, reason="r1")
    ModerationAction.objects.create(kind="block", by=admin_user, ip="192.0.2.1", reason="r2")
    url = reverse("admin:presence_moderationaction_changelist")
    assert len(rows(admin_client.get(url))) == 2
    assert [a.reason for a in rows(admin_client.get(url, {"q": "alice"}))] == ["r1"]
    assert [a.reason for a in rows(admin_client.get(url, {"q": "192.0.2.1"}))] == ["r2"]
    assert [a.reason for a in rows(admin_client.get(url, {"kind__exact": "block"}))] == ["r2"]
    assert admin_client.get(reverse("admin:presence_moderationaction_add")).status_code == 403


def test_server_processes_show_open_counts_without_a_query_per_row(admin_client, alice, django_assert_max_num_queries):
    servers = [server_with_lease(f"web{i}-{i}-abc") for i in range(5)]
    lapsed = server_with_lease("web9-9-zzz", alive=False)
    for index, row in enumerate(servers):
        for _ in range(index):
            connection(alice, row)
    connection(alice, servers[1], closed=True)
    admin_client.get(reverse("admin:presence_serverprocess_changelist"))
    with django_assert_max_num_queries(6):
        response = admin_client.get(reverse("admin:presence_serverprocess_changelist"))
    by_name = {s.name: s for s in rows(response)}
    assert [by_name[s.name].open_count for s in servers] == [0, 1, 2, 3, 4]
    assert by_name[servers[0].name].lease_alive and not by_name[lapsed.name].lease_alive


# --- rooms and users ---------------------------------------------------------------------------


def test_kick_everyone_in_a_room(
    admin_client, monkeypatch, server, alice, bob, sent, django_capture_on_commit_callbacks
):
    general = Room.objects.create(slug="general")
    Room.objects.create(slug="other")
    inside, outside = connection(alice, server, rooms=["general"]), connection(bob, server, rooms=["other"])

    async def room_channels(*, room_id: int) -> list[str]:  # presence as Redis knows it
        return [inside.channel_name] if room_id == general.pk else [outside.channel_name]

    monkeypatch.setattr(store, "room_channels", room_channels)
    with django_capture_on_commit_callbacks(execute=True):
        response = act(admin_client, reverse("admin:rooms_room_changelist"), "kick_everyone", [general])
    assert "Kicked 1 connection(s)." in messages_of(response)
    assert [c for c, _ in sent] == [inside.channel_name]


def test_user_admin_keeps_the_stock_pages_and_adds_kick_and_block(
    admin_client, server, alice, sent, django_capture_on_commit_callbacks
):
    users = reverse("admin:auth_user_changelist")
    assert admin_client.get(reverse("admin:auth_user_change", args=[alice.pk])).status_code == 200
    assert admin_client.get(reverse("admin:auth_user_password_change", args=[alice.pk])).status_code == 200
    assert rows(admin_client.get(users, {"q": "alice"})) == [alice]

    live = connection(alice, server)
    with django_capture_on_commit_callbacks(execute=True):
        response = act(admin_client, users, "kick_connections", [alice])
    assert "Kicked 1 connection(s)." in messages_of(response)
    assert [c for c, _ in sent] == [live.channel_name]

    with django_capture_on_commit_callbacks(execute=True):
        response = act(admin_client, users, "block_1h", [alice])
    assert "Blocked 1 user(s) for 1 hour; their connections were kicked." in messages_of(response)
    assert Block.objects.get(user=alice).until > timezone.now() + timedelta(minutes=59)


# --- the live dashboard ------------------------------------------------------------------------


def test_dashboard_needs_staff(client, make_user):
    assert client.get(DASHBOARD).status_code == 302
    client.force_login(make_user("plain"))
    response = client.get(DASHBOARD)
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_dashboard_renders_for_staff_and_is_linked_from_the_index(admin_client, server, alice, bob):
    connection(alice, server, rooms=["general"])
    connection(alice, server, rooms=["general", "random"])
    connection(bob, server)
    flag(user=bob)
    response = admin_client.get(DASHBOARD)
    assert response.status_code == 200
    page = response.content.decode()
    assert 'id="live-users">2<' in page and 'id="live-connections"' in page and ">3</a>" in page
    assert "#general" in page and server.name in page
    assert f'href="{FLAGS}"' in page and 'aria-live="polite"' in page and "<caption>" in page
    assert DASHBOARD in admin_client.get(reverse("admin:index")).content.decode()
    assert DASHBOARD in admin_client.get(CONNECTIONS).content.decode()


async def dashboard_socket(cookie: str | None, origin: str | None = "http://localhost") -> WebsocketCommunicator:
    return WebsocketCommunicator(application, "/ws/admin/dashboard/", headers=ws_headers(cookie=cookie, origin=origin))


@pytest.mark.django_db(transaction=True)
async def test_dashboard_socket_refuses_anyone_but_staff(make_user, session_cookie):
    plain = await database_sync_to_async(make_user)("plain")
    for cookie in (None, await database_sync_to_async(session_cookie)(plain)):
        socket = await dashboard_socket(cookie)
        connected, _ = await socket.connect(timeout=TIMEOUT)
        assert not connected
    staff = await database_sync_to_async(make_user)("mod", is_staff=True)
    socket = await dashboard_socket(await database_sync_to_async(session_cookie)(staff), origin="http://evil.example")
    connected, _ = await socket.connect(timeout=TIMEOUT)
    assert not connected  # a cookie from another site's page: cross-site socket hijacking


@pytest.mark.django_db(transaction=True)
async def test_dashboard_socket_sends_snapshots_to_staff(make_user, session_cookie, monkeypatch):
    from presence import consumers

    monkeypatch.setattr(consumers.DashboardConsumer, "interval", 0.05)
    monkeypatch.setattr(consumers, "_shared", {"at": float("-inf"), "snapshot": None})
    staff = await database_sync_to_async(make_user)("mod", is_staff=True)
    srv = await database_sync_to_async(server_with_lease)("web1-100-abc")
    await database_sync_to_async(connection)(staff, srv, rooms=["general"])

    socket = await dashboard_socket(await database_sync_to_async(session_cookie)(staff))
    connected, _ = await socket.connect(timeout=TIMEOUT)
    assert connected
    snapshot = await socket.receive_json_from(timeout=TIMEOUT)
    assert snapshot["type"] == "snapshot"
    assert (snapshot["users_online"], snapshot["connections_open"]) == (1, 1)
    assert snapshot["rooms"] == [{"room": "general", "connections": 1}]
    await database_sync_to_async(connection)(staff, srv)
    while (await socket.receive_json_from(timeout=TIMEOUT))["connections_open"] != 2:
        pass  # the next snapshots catch up with the new row

    # No longer staff: the next tick closes the socket with 4003.
    staff.is_staff = False
    await database_sync_to_async(staff.save)(update_fields=["is_staff"])
    while True:
        output = await socket.receive_output(timeout=TIMEOUT)
        if output["type"] == "websocket.close":
            break
    assert output["code"] == CloseCode.KICKED
    await socket.disconnect()


def test_dashboard_sockets_of_one_process_share_a_snapshot(monkeypatch, make_user):
    from presence import consumers

    computed = []
    monkeypatch.setattr(consumers, "_shared", {"at": float("-inf"), "snapshot": None})
    monkeypatch.setattr(consumers, "dashboard_snapshot", lambda: computed.append(1) or {"n": len(computed)})
    staff, other = make_user("mod", is_staff=True), make_user("mod2", is_staff=True)
    assert consumers._staff_snapshot(user_id=staff.pk, max_age=60) == {"n": 1}
    assert consumers._staff_snapshot(user_id=other.pk, max_age=60) == {"n": 1}  # a second tab: no new snapshot
    assert consumers._staff_snapshot(user_id=other.pk, max_age=0) == {"n": 2}
    assert consumers._staff_snapshot(user_id=make_user("plain").pk, max_age=60) is None


# --- end to end: real sockets, the real channel layer ---------------------------------------


@pytest.fixture
async def moderator_client(async_client, transactional_db):
    boss = await database_sync_to_async(User.objects.create_superuser)("boss", password="pw-for-tests-123")
    await async_client.aforce_login(boss)
    return async_client


async def test_kick_from_the_admin_reaches_the_socket(connect, create_users, moderator_client):
    (alice,) = await create_users("alice")
    target, sibling = await connect(alice), await connect(alice)
    response = await moderator_client.post(
        CONNECTIONS,
        {"action": "kick", "index": 0, "select_across": 0, "_selected_action": [target.welcome["connection_id"]]},
    )
    assert response.status_code == 302
    assert await target.recv_type("kicked") == {"type": "kicked", "reason": "disconnected by a moderator"}
    assert await target.ws.receive_output(timeout=TIMEOUT) == {"type": "websocket.close", "code": CloseCode.KICKED}
    await target.close()
    assert await sibling.silent()


async def test_kick_and_block_from_the_admin_closes_and_refuses_the_user(
    connect, create_users, moderator_client, handshake
):
    alice, bob = await create_users("alice", "bob")
    target, bystander = await connect(alice), await connect(bob)
    response = await moderator_client.post(
        CONNECTIONS,
        {
            "action": "kick_and_block",
            "select_across": 0,
            "_selected_action": [target.welcome["connection_id"]],
            "apply": "yes",
            "minutes": 10,
            "reason": "spam",
        },
    )
    assert response.status_code == 302
    assert await target.recv_type("kicked") == {"type": "kicked", "reason": "spam"}
    assert await target.ws.receive_output(timeout=TIMEOUT) == {"type": "websocket.close", "code": CloseCode.KICKED}
    await target.close()
    assert await bystander.silent()
    _, token = await database_sync_to_async(token_create)(user=alice)
    assert not await handshake(token=token)  # blocked: refused at the handshake
