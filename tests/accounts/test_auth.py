"""The handshake (PROTOCOL.md §1): who may open the chat socket, by token or by session
cookie, and from which Origin. A refused handshake is a close before accept (HTTP 403)."""

from __future__ import annotations

import asyncio

import pytest
from channels.db import database_sync_to_async
from django.utils import timezone

from accounts.models import ApiToken
from accounts.services import token_create
from tests.conftest import orm_thread_busy

pytestmark = pytest.mark.django_db(transaction=True)

adb = database_sync_to_async
EVIL = "http://evil.example"


async def new_token(user) -> str:
    _, raw = await adb(token_create)(user=user)
    return raw


# --- tokens -----------------------------------------------------------------------------------


async def test_a_valid_bearer_token_opens_the_socket_as_its_user(connect, create_users):
    (alice,) = await create_users("alice")
    socket = await connect(alice, token=await new_token(alice))
    assert socket.welcome["user"] == "alice"


async def test_a_handshake_without_credentials_is_refused(handshake):
    assert await handshake() is False


@pytest.mark.parametrize("token", ["ct_not-a-real-token", "", "x" * 500])
async def test_a_bad_bearer_token_is_refused(handshake, create_users, token):
    await create_users("alice")
    assert await handshake(token=token) is False


async def test_a_revoked_token_is_refused(handshake, create_users):
    (alice,) = await create_users("alice")
    raw = await new_token(alice)
    assert await handshake(token=raw) is True
    await adb(ApiToken.objects.update)(revoked_at=timezone.now())
    assert await handshake(token=raw) is False


async def test_an_inactive_users_token_is_refused(handshake, create_users):
    (alice,) = await create_users("alice")
    raw = await new_token(alice)
    alice.is_active = False
    await adb(alice.save)()
    assert await handshake(token=raw) is False


async def test_an_authorization_header_of_another_scheme_authenticates_nobody(create_users, session_cookie):
    from channels.testing import WebsocketCommunicator

    from chatsite.asgi import application

    (alice,) = await create_users("alice")
    cookie = await adb(session_cookie)(alice)
    headers = [
        (b"origin", b"http://localhost"),
        (b"cookie", cookie.encode()),
        (b"authorization", b"Basic YWxpY2U6cHc="),
    ]
    communicator = WebsocketCommunicator(application, "/ws/chat/", headers=headers)
    connected, _ = await communicator.connect()
    assert connected is False, "an Authorization header decides, even beside a valid session cookie"


async def test_a_token_handshake_without_origin_is_accepted(connect, create_users):
    (alice,) = await create_users("alice")
    socket = await connect(alice, token=await new_token(alice), origin=None)
    assert socket.welcome["user"] == "alice"


async def test_a_token_handshake_from_a_disallowed_origin_is_refused(handshake, create_users):
    (alice,) = await create_users("alice")
    assert await handshake(token=await new_token(alice), origin=EVIL) is False


# --- session cookies ------------------------------------------------------------------------------


async def test_a_valid_session_cookie_opens_the_socket_as_its_user(connect, create_users, session_cookie):
    (alice,) = await create_users("alice")
    cookie = await adb(session_cookie)(alice)
    socket = await connect(alice, cookie=cookie)
    assert socket.welcome["user"] == "alice"
    await socket.send(type="ping")
    await socket.recv_type("pong")


@pytest.mark.parametrize("origin", ["http://localhost:8000", "http://127.0.0.1:8000", "https://localhost"])
async def test_a_cookie_handshake_from_an_allowed_host_on_any_port_is_accepted(
    handshake, create_users, session_cookie, origin
):
    (alice,) = await create_users("alice")
    cookie = await adb(session_cookie)(alice)
    assert await handshake(cookie=cookie, origin=origin) is True


async def test_a_cookie_handshake_without_origin_is_refused(handshake, create_users, session_cookie):
    (alice,) = await create_users("alice")
    cookie = await adb(session_cookie)(alice)
    assert await handshake(cookie=cookie, origin=None) is False


@pytest.mark.parametrize("origin", [EVIL, "http://localhost.evil.example", "null", "not a url"])
async def test_a_cookie_handshake_from_a_disallowed_origin_is_refused(handshake, create_users, session_cookie, origin):
    (alice,) = await create_users("alice")
    cookie = await adb(session_cookie)(alice)
    assert await handshake(cookie=cookie, origin=origin) is False


async def test_an_unknown_session_cookie_is_refused(handshake, create_users):
    await create_users("alice")
    assert await handshake(cookie="sessionid=doesnotexist0123456789abcdef") is False


async def test_a_session_of_a_user_who_became_inactive_is_refused(handshake, create_users, session_cookie):
    (alice,) = await create_users("alice")
    cookie = await adb(session_cookie)(alice)
    alice.is_active = False
    await adb(alice.save)()
    assert await handshake(cookie=cookie) is False


async def test_a_session_from_before_a_password_change_is_refused(handshake, create_users, session_cookie):
    (alice,) = await create_users("alice")
    cookie = await adb(session_cookie)(alice)
    alice.set_password("a-new-password-456")
    await adb(alice.save)()
    assert await handshake(cookie=cookie) is False


# --- what a handshake costs --------------------------------------------------------------------------


async def test_a_token_handshake_never_looks_up_a_session_user(connect, create_users, session_cookie, monkeypatch):
    import channels.auth

    lookups = []
    original = channels.auth.get_user

    async def counting(scope):
        lookups.append(scope.get("path"))
        return await original(scope)

    monkeypatch.setattr(channels.auth, "get_user", counting)
    alice, bob = await create_users("alice", "bob")
    await connect(alice, token=await new_token(alice))
    assert lookups == [], "no hop to the ORM thread for a session the token overrides"
    socket = await connect(bob, cookie=await adb(session_cookie)(bob))
    assert socket.welcome["user"] == "bob" and len(lookups) == 1


async def test_a_token_decides_even_beside_another_users_session_cookie(connect, create_users, session_cookie):
    alice, bob = await create_users("alice", "bob")
    socket = await connect(alice, token=await new_token(alice), cookie=await adb(session_cookie)(bob))
    assert socket.welcome["user"] == "alice"


async def test_handshakes_arriving_while_the_orm_thread_is_busy_share_one_token_lookup(handshake, create_users):
    from accounts import middleware

    users = await create_users("u0", "u1", "u2", "u3")
    tokens = [*[await new_token(user) for user in users], "ct_not-a-token"]
    lookups = middleware._token_lookups()
    batches, items = lookups.batches, lookups.items
    async with orm_thread_busy(lookups, until_queued=len(tokens)):
        attempts = [asyncio.ensure_future(handshake(token=token)) for token in tokens]
    assert await asyncio.wait_for(asyncio.gather(*attempts), 10) == [True, True, True, True, False]
    # Those that queued before the first crossing share it; the rest share the next.
    assert lookups.items - items == 5 and lookups.batches - batches <= 2
