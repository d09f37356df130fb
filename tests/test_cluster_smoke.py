"""The production shape end to end: two daphne processes behind HAProxy, PostgreSQL, Redis
(the `cluster` fixture, chatsite/devcluster.py). Everything goes through the balancer."""

from __future__ import annotations

import asyncio
import json
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from email.message import Message
from http.cookiejar import CookieJar

import pytest
from websockets.asyncio.client import connect

from tests.live import Socket, http, last_line, open_socket

pytestmark = pytest.mark.live


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None  # a 302 comes back as an HTTPError we can look at


class Browser:
    """Just enough of a browser for Django's login: a cookie jar, no redirects followed."""

    def __init__(self, base: str):
        self.base = base
        self.cookies = CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.cookies), NoRedirect)

    def request(self, path: str, data: dict | None = None) -> tuple[int, Message, str]:
        """(status, headers (case-insensitive: HAProxy sends lower-case names), body)."""
        body = urllib.parse.urlencode(data).encode() if data is not None else None
        request = urllib.request.Request(self.base + path, data=body)
        if body is not None:
            request.add_header("Origin", self.base)
        try:
            with self.opener.open(request, timeout=10) as response:
                return response.status, response.headers, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.headers, exc.read().decode()

    def cookie(self, name: str) -> str | None:
        return next((c.value for c in self.cookies if c.name == name), None)


def test_http_through_the_balancer_serves_pages_static_files_and_health(cluster):
    browser = Browser(cluster.lb_url)
    status, _, _ = browser.request("/healthz")
    assert status == 200
    status, headers, page = browser.request("/accounts/login/")
    assert status == 200 and headers["X-Served-By"] in {d.name for d in cluster.daphnes}
    # DEBUG is off: whitenoise serves the hashed copies that collectstatic made.
    stylesheet = re.search(r'href="(/static/chat/chat\.[0-9a-f]{12}\.css)"', page)
    assert stylesheet, "the login page links no hashed stylesheet"
    status, headers, _ = browser.request(stylesheet.group(1))
    assert status == 200 and "immutable" in headers["Cache-Control"]


async def test_two_token_clients_land_on_different_processes_and_chat(cluster):
    alice = last_line(cluster.manage("create_token", "smoke-alice", "--create-user"))
    bob = last_line(cluster.manage("create_token", "smoke-bob", "--create-user"))
    key = last_line(cluster.manage("create_service_key", "smoke"))
    sock_a, welcome_a = await open_socket(cluster, alice)
    sock_b, welcome_b = await open_socket(cluster, bob)
    try:
        servers = set()
        for welcome in (welcome_a, welcome_b):
            url = f"{cluster.lb_url}/api/connections/{welcome['connection_id']}"
            status, detail = await asyncio.to_thread(http, "GET", url, key)
            assert status == 200
            servers.add(detail["server"])
        # leastconn, no stickiness: the second socket goes to the process with fewer.
        assert servers == {d.server_name for d in cluster.daphnes}

        for sock in (sock_a, sock_b):
            await sock.send(type="join", room="smoke")
            await sock.until(lambda f: f["type"] == "joined")
        await sock_a.send(type="chat", room="smoke", body="hello from A", client_id="a1")
        frame = await sock_b.until(lambda f: f["type"] == "chat")
        assert (frame["sender"], frame["body"]) == ("smoke-alice", "hello from A")
        await sock_b.send(type="chat", room="smoke", body="hello from B", client_id="b1")
        frame = await sock_a.until(lambda f: f["type"] == "chat" and f["sender"] == "smoke-bob")
        assert frame["body"] == "hello from B"
    finally:
        await sock_a.close()
        await sock_b.close()


async def test_spoofed_x_forwarded_for_is_recorded_with_the_real_address(cluster):
    token = last_line(cluster.manage("create_token", "smoke-spoofer", "--create-user"))
    key = last_line(cluster.manage("create_service_key", "smoke-spoof"))
    headers = {"Authorization": f"Bearer {token}", "X-Forwarded-For": "6.6.6.6", "X-Real-IP": "7.7.7.7"}
    sock = Socket(await connect(cluster.ws_url, additional_headers=headers))
    try:
        welcome = await sock.until(lambda f: f["type"] == "welcome")
        url = f"{cluster.lb_url}/api/connections/{welcome['connection_id']}"
        status, detail = await asyncio.to_thread(http, "GET", url, key)
        assert status == 200 and detail["ip"] == "127.0.0.1"
    finally:
        await sock.close()


def test_login_survives_a_kill_9_of_the_process_that_served_it(cluster):
    password = "smoke-pw-7f3a9c"
    cluster.manage(
        "shell",
        "-c",
        "from django.contrib.auth import get_user_model; "
        f"get_user_model().objects.create_user('smoke-dora', password={password!r})",
    )
    browser = Browser(cluster.lb_url)
    status, _, page = browser.request("/accounts/login/")
    assert status == 200
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
    status, headers, _ = browser.request(
        "/accounts/login/", {"username": "smoke-dora", "password": password, "csrfmiddlewaretoken": token}
    )
    assert status == 302 and browser.cookie("sessionid"), "login failed"
    served_login = cluster.daphne(headers["X-Served-By"])

    served_login.kill()  # SIGKILL: nothing of that process's memory survives
    killed_at = time.monotonic()
    status, headers, page = browser.request("/")
    recovered_after = time.monotonic() - killed_at
    # The session is in PostgreSQL behind the Redis cache, and the balancer retries a
    # refused connection on the other process at once (retries + redispatch).
    assert status == 200, f"logged out after the kill: {status}"
    assert 'data-user="smoke-dora"' in page
    assert headers["X-Served-By"] != served_login.name
    assert recovered_after < 2, f"first request after the kill took {recovered_after:.2f}s"

    # The balancer notices the dead process within fall 2 x inter 1s (plus a check in flight).
    cluster.haproxy.wait({served_login.name: "DOWN"}, timeout=5)
    status, _, body = browser.request("/healthz")
    assert (status, json.loads(body)) == (200, {"status": "ok"})
