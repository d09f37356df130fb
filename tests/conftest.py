"""Shared fixtures. The Redis server is real: chatsite/settings_test.py starts one on a
free port for the run (or uses REDIS_URL), and every test starts from empty databases."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import AsyncIterator, Callable

import pytest
import redis
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.contrib.auth import get_user_model

from accounts.services import token_create
from chatsite.asgi import application

TIMEOUT = 5  # seconds to wait for an expected frame


@contextlib.asynccontextmanager
async def orm_thread_busy(batcher, *, until_queued: int) -> AsyncIterator[None]:
    """Hold the ORM thread busy while the block starts its callers, until ``until_queued``
    items were submitted to ``batcher`` (a chatsite.batching.Batcher), then let it go:
    what queued meanwhile must share the next crossings."""
    busy, release, all_queued = threading.Event(), threading.Event(), asyncio.Event()
    submitted = 0
    submit = batcher.submit

    async def counting_submit(item):
        nonlocal submitted
        submitted += 1
        if submitted == until_queued:
            all_queued.set()
        return await submit(item)

    def hold() -> None:
        busy.set()
        release.wait(TIMEOUT)

    batcher.submit = counting_submit
    holder = asyncio.ensure_future(database_sync_to_async(hold)())
    try:
        assert await asyncio.to_thread(busy.wait, TIMEOUT), "the ORM thread never became busy"
        yield
        await asyncio.wait_for(all_queued.wait(), TIMEOUT)
    finally:
        release.set()
        del batcher.submit
        await holder


@pytest.fixture(autouse=True)
def _clean_redis():
    """Empty the cache/session and presence databases before each test."""
    for url in (settings.CACHES["default"]["LOCATION"], settings.PRESENCE_REDIS_URL):
        client = redis.Redis.from_url(url)
        client.flushdb()
        client.close()
    yield


@pytest.fixture
def make_user(db) -> Callable[..., object]:
    def make(username: str, password: str = "pw-for-tests-123", **extra):
        return get_user_model().objects.create_user(username=username, password=password, **extra)

    return make


class Client:
    """A WebsocketCommunicator that speaks JSON frames, with waits that time out."""

    def __init__(self, communicator: WebsocketCommunicator):
        self.ws = communicator
        self.welcome: dict | None = None

    async def send(self, **frame) -> None:
        await self.ws.send_to(text_data=json.dumps(frame))

    async def send_raw(self, text: str) -> None:
        await self.ws.send_to(text_data=text)

    async def recv(self, timeout: float = TIMEOUT) -> dict:
        return json.loads(await self.ws.receive_from(timeout=timeout))

    async def recv_type(self, kind: str, timeout: float = TIMEOUT) -> dict:
        """The next frame of type ``kind``; fails on any other frame in between."""
        frame = await self.recv(timeout)
        assert frame["type"] == kind, frame
        return frame

    async def until(self, kind: str, timeout: float = TIMEOUT) -> dict:
        """Skip frames until one of type ``kind`` arrives."""
        while True:
            frame = await self.recv(timeout)
            if frame["type"] == kind:
                return frame

    async def silent(self, timeout: float = 0.3) -> bool:
        """True if nothing arrives within ``timeout`` (used only to check that nothing was sent)."""
        return await self.ws.receive_nothing(timeout=timeout)

    async def join(self, room: str, **extra) -> dict:
        await self.send(type="join", room=room, **extra)
        return await self.recv_type("joined")

    async def close(self) -> None:
        await self.ws.disconnect()


def ws_headers(*, token: str | None = None, origin: str | None = "http://localhost", cookie: str | None = None):
    headers = []
    if origin is not None:
        headers.append((b"origin", origin.encode()))
    if token is not None:
        headers.append((b"authorization", f"Bearer {token}".encode()))
    if cookie is not None:
        headers.append((b"cookie", cookie.encode()))
    return headers


@pytest.fixture
async def connect(transactional_db) -> AsyncIterator[Callable]:
    """``await connect(user)`` opens an authenticated socket and reads `welcome`."""
    opened: list[Client] = []

    async def open_socket(user, **header_kwargs) -> Client:
        if "token" not in header_kwargs and "cookie" not in header_kwargs:
            _, header_kwargs["token"] = await database_sync_to_async(token_create)(user=user)
        communicator = WebsocketCommunicator(application, "/ws/chat/", headers=ws_headers(**header_kwargs))
        connected, _ = await communicator.connect(timeout=TIMEOUT)
        assert connected, "handshake refused"
        client = Client(communicator)
        opened.append(client)
        client.welcome = await client.recv_type("welcome")
        return client

    yield open_socket
    for client in opened:
        with contextlib.suppress(Exception):  # already closed by the test
            await client.close()


@pytest.fixture
def auser(make_user):
    return make_user


@pytest.fixture(scope="session")
def live_root(tmp_path_factory):
    return tmp_path_factory.mktemp("live")


@pytest.fixture
def daphne_server(live_root, request):
    """A running daphne on its own migrated database, stopped after the test."""
    from tests.live import new_live_server

    server = new_live_server(live_root / request.node.name[:60]).start()
    yield server
    server.stop()


# --- Added with the chat core's test suite ------------------------------------------


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "slow: deliberately waits (e.g. holds a socket idle); deselect with -m 'not slow'"
    )


@pytest.fixture(autouse=True)
def _clear_public_room_cache():
    """The consumer caches public rooms per process by slug; a room from an earlier
    test (whose row is gone) must not leak into the next one."""
    from rooms import consumers

    consumers._public_rooms.clear()
    yield
    consumers._public_rooms.clear()


@pytest.fixture
async def handshake(transactional_db) -> AsyncIterator[Callable]:
    """``await handshake(token=..., cookie=..., origin=...)`` -> whether the socket was accepted."""
    opened: list[WebsocketCommunicator] = []

    async def attempt(**header_kwargs) -> bool:
        communicator = WebsocketCommunicator(application, "/ws/chat/", headers=ws_headers(**header_kwargs))
        opened.append(communicator)
        connected, _ = await communicator.connect(timeout=TIMEOUT)
        return connected

    yield attempt
    for communicator in opened:
        with contextlib.suppress(Exception):
            await communicator.disconnect()


@pytest.fixture
def session_cookie(db) -> Callable[[object], str]:
    """``session_cookie(user)`` (sync) logs ``user`` in and returns the Cookie header value."""
    from django.test import Client as DjangoClient

    def login(user) -> str:
        client = DjangoClient()
        client.force_login(user)
        return f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"

    return login


@pytest.fixture
def create_users(make_user) -> Callable:
    """``alice, bob = await create_users("alice", "bob")`` from an async test."""

    async def create(*names: str, **extra) -> list:
        return [await database_sync_to_async(make_user)(name, **extra) for name in names]

    return create


# --- The production-shaped cluster (chatsite/devcluster.py) -----------------------------------

# Every cluster test shares one cluster per session; tests that need other settings start
# their own ``Cluster``. Short heartbeats, as in the other live tests (tests.live.Socket).
CLUSTER_ENV = {"CHAT_HEARTBEAT": "1"}


@pytest.fixture(scope="session")
def cluster_session():
    """PostgreSQL + Redis + 2 daphne processes + HAProxy, started once per session. Skipped
    when PostgreSQL or HAProxy is not installed, except in CI, where that is a failure."""
    import os

    from chatsite.devcluster import Cluster, missing_binaries

    missing = missing_binaries()
    if missing:
        message = f"the cluster needs {' and '.join(missing)} (apt-get install {' '.join(missing)}; .ci/run does)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    cluster = Cluster.temporary_in(procs=2, env=CLUSTER_ENV).start()
    yield cluster
    cluster.stop()


@pytest.fixture
def cluster(cluster_session):
    """The session's cluster with every process running and UP in the balancer again
    (a previous test may have killed one, or stopped Redis)."""
    yield cluster_session.heal()
