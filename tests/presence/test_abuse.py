"""Reconnect-abuse flags, cool-downs, blocks and the sockets closed when credentials end."""

import contextlib

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth import get_user_model

from accounts.services import token_create
from chatsite.asgi import application
from presence.models import AbuseFlag, Block
from presence.services import moderation
from tests.conftest import TIMEOUT, Client, ws_headers

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
async def dial(transactional_db):
    """``await dial(token, ip=...)`` -> a Client if the handshake was accepted, else None."""
    opened = []

    async def attempt(token: str, *, ip: str = "203.0.113.7", user_agent: str = "pytest-agent"):
        headers = [*ws_headers(token=token), (b"user-agent", user_agent.encode())]
        communicator = WebsocketCommunicator(application, "/ws/chat/", headers=headers)
        communicator.scope["client"] = (ip, 40000)
        opened.append(communicator)
        connected, _ = await communicator.connect(timeout=TIMEOUT)
        if not connected:
            return None
        client = Client(communicator)
        client.welcome = await client.recv_type("welcome")
        return client

    yield attempt
    for communicator in opened:
        with contextlib.suppress(Exception):
            await communicator.disconnect()


async def user_and_token(name: str):
    user = await database_sync_to_async(get_user_model().objects.create_user)(name)
    _, raw = await database_sync_to_async(token_create)(user=user)
    return user, raw


async def test_user_reconnecting_too_often_is_flagged_and_cooled_down(dial, settings):
    settings.PRESENCE_ABUSE_USER_LIMIT = 3
    user, token = await user_and_token("flappy")
    for _ in range(3):
        client = await dial(token)
        assert client is not None
        await client.close()
    assert await dial(token) is None, "the 4th connect in the window is refused (cool-down)"
    flag = await database_sync_to_async(AbuseFlag.objects.get)()
    assert (flag.kind, flag.user_id, flag.connects, flag.window_seconds) == ("user", user.pk, 4, 60)
    assert flag.ips == ["203.0.113.7"] and flag.user_agents == ["pytest-agent"]
    assert flag.first_seen <= flag.last_seen
    assert await dial(token) is None, "refused handshakes keep it cooling down"


async def test_flagged_users_open_socket_gets_an_error_then_4029(dial, settings):
    settings.PRESENCE_ABUSE_USER_LIMIT = 2
    _, token = await user_and_token("flappy")
    first = await dial(token)
    await (await dial(token)).close()
    assert await dial(token) is None
    error = await first.recv_type("error")
    assert error["code"] == "forbidden" and "reconnecting too often" in error["message"]
    assert await first.ws.receive_output(timeout=TIMEOUT) == {"type": "websocket.close", "code": 4029}


async def test_cooldown_zero_flags_but_does_not_refuse(dial, settings):
    settings.PRESENCE_ABUSE_USER_LIMIT = 1
    settings.PRESENCE_ABUSE_COOLDOWN = 0
    _, token = await user_and_token("flappy")
    for _ in range(3):
        client = await dial(token)
        assert client is not None
        await client.close()
    assert await database_sync_to_async(AbuseFlag.objects.count)() == 1


async def test_many_users_behind_one_ip_trip_the_ip_limit_not_the_user_one(dial, settings):
    settings.PRESENCE_ABUSE_IP_LIMIT = 3
    tokens = [(await user_and_token(f"user{i}"))[1] for i in range(4)]
    accepted = [await dial(token, ip="198.51.100.1") for token in tokens]
    assert [client is not None for client in accepted] == [True, True, True, False]
    flag = await database_sync_to_async(AbuseFlag.objects.get)()
    assert (flag.kind, flag.ip, flag.user_id) == ("ip", "198.51.100.1", None)
    assert await dial(tokens[0], ip="198.51.100.2") is not None, "another address is unaffected"


async def test_exempt_networks_are_never_counted(dial, settings):
    settings.PRESENCE_ABUSE_USER_LIMIT = 1
    settings.PRESENCE_ABUSE_IP_LIMIT = 1
    settings.PRESENCE_ABUSE_EXEMPT_NETWORKS = ["127.0.0.0/8"]
    _, token = await user_and_token("bench")
    for _ in range(4):
        client = await dial(token, ip="127.0.0.1")
        assert client is not None
        await client.close()
    assert await database_sync_to_async(AbuseFlag.objects.count)() == 0


async def test_blocked_user_is_refused_until_unblocked(dial):
    user, token = await user_and_token("troll")
    client = await dial(token)
    await database_sync_to_async(moderation.users_block)(users=[user], by=None, minutes=10, reason="trolling")
    assert (await client.recv_type("kicked"))["reason"] == "trolling"
    assert await dial(token) is None
    lifted = await database_sync_to_async(moderation.blocks_lift)(blocks=Block.objects.all(), by=None)
    assert lifted == 1
    assert await dial(token) is not None


async def test_blocked_ip_is_refused_before_authentication(dial):
    _, token = await user_and_token("someone")
    await database_sync_to_async(moderation.ips_block)(ips=["192.0.2.66"], by=None, minutes=5)
    assert await dial(token, ip="192.0.2.66") is None
    assert await dial("not-even-a-valid-token", ip="192.0.2.66") is None
    assert await dial(token, ip="192.0.2.67") is not None


async def test_clearing_a_flag_ends_the_cooldown(dial, settings):
    settings.PRESENCE_ABUSE_USER_LIMIT = 1
    _, token = await user_and_token("flappy")
    await (await dial(token)).close()
    assert await dial(token) is None
    assert await database_sync_to_async(moderation.flags_clear)(flags=AbuseFlag.objects.all(), by=None) == 1
    settings.PRESENCE_ABUSE_USER_LIMIT = 100
    assert await dial(token) is not None


async def test_trusted_proxy_forwarded_address_is_the_one_counted(dial, settings):
    settings.PRESENCE_TRUSTED_PROXIES = ["10.0.0.0/8"]
    settings.PRESENCE_ABUSE_IP_LIMIT = 1
    _, token = await user_and_token("behind-lb")

    async def via_proxy(forwarded: str):
        headers = [*ws_headers(token=token), (b"x-forwarded-for", forwarded.encode())]
        communicator = WebsocketCommunicator(application, "/ws/chat/", headers=headers)
        communicator.scope["client"] = ("10.1.2.3", 40000)
        connected, _ = await communicator.connect(timeout=TIMEOUT)
        if connected:
            await communicator.disconnect()
        return connected

    assert await via_proxy("203.0.113.50")
    assert not await via_proxy("203.0.113.50"), "the client address, not the proxy's, tripped the limit"
    assert await via_proxy("203.0.113.51")


async def test_logout_closes_the_users_sockets(connect, create_users, session_cookie):
    (alice,) = await create_users("alice")
    cookie = await database_sync_to_async(session_cookie)(alice)
    client = await connect(alice, cookie=cookie)
    from django.test import Client as DjangoClient

    def logout():
        browser = DjangoClient()
        browser.cookies.load(cookie)
        return browser.post("/accounts/logout/").status_code

    assert await database_sync_to_async(logout)() == 302
    assert (await client.recv_type("kicked"))["reason"] == "signed out"


@pytest.mark.parametrize(
    ("change", "reason"),
    [("password", "password changed"), ("deactivate", "account deactivated")],
)
async def test_credential_changes_close_the_users_sockets(connect, create_users, change, reason):
    (alice,) = await create_users("alice")
    client = await connect(alice)

    def apply():
        user = get_user_model().objects.get(pk=alice.pk)
        if change == "password":
            user.set_password("a-new-password-123")
        else:
            user.is_active = False
        user.save()

    await database_sync_to_async(apply)()
    assert (await client.recv_type("kicked"))["reason"] == reason


async def test_unrelated_user_saves_do_not_close_sockets(connect, create_users):
    (alice,) = await create_users("alice")
    client = await connect(alice)

    def touch():
        user = get_user_model().objects.get(pk=alice.pk)
        user.first_name = "Alice"
        user.save()

    await database_sync_to_async(touch)()
    await client.send(type="ping")
    await client.recv_type("pong")
