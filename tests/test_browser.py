"""The browser UI, driven with Playwright in Debian's chromium against a real daphne.

These tests use the `daphne_server` fixture (its own migrated database, the test run's
Redis), so they need no Django test database. Every wait is a condition with a timeout
(Playwright's ``expect``), never a fixed sleep.

Set UI_SHOTS_DIR to a folder to save screenshots of the main screens while they run.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.live]

# Playwright's sync API runs its own event loop; Django must not object to it.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
PASSWORD = "pw-for-browser-tests-9"
TIMEOUT = 10_000  # ms, for anything that should happen promptly
RECONNECT_TIMEOUT = 60_000  # ms, for a reconnect with exponential backoff
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}

try:
    from playwright.sync_api import Browser, Page, expect, sync_playwright
except ImportError:  # pragma: no cover - playwright is in requirements-dev.txt
    sync_playwright = None


def shot(page: Page, name: str) -> None:
    """Save a screenshot when UI_SHOTS_DIR is set (for looking at the UI, not for asserting)."""
    folder = os.environ.get("UI_SHOTS_DIR")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / f"{name}.png"))


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if sync_playwright is None:
        pytest.skip("playwright is not installed")
    if not os.path.exists(CHROMIUM):
        message = f"{CHROMIUM} is missing: install Debian's chromium (make browser) to run the browser tests"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def new_page(browser: Browser) -> Iterator[Callable[..., Page]]:
    """``new_page()`` opens a page in a fresh browser context (its own cookies and storage).
    Uncaught page errors and JavaScript dialogs fail the test."""
    contexts = []
    problems: list[str] = []

    def open_page(viewport: dict | None = None) -> Page:
        context = browser.new_context(viewport=viewport or DESKTOP)
        context.set_default_timeout(TIMEOUT)
        contexts.append(context)
        page = context.new_page()
        page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
        page.on("dialog", lambda dialog: (problems.append(f"dialog: {dialog.message}"), dialog.dismiss()))
        return page

    yield open_page
    for context in contexts:
        context.close()
    assert not problems, problems


def log_in(page: Page, server, username: str, password: str = PASSWORD) -> None:
    page.goto(server.url + "/accounts/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_test_id("login-button").click()
    expect(page).to_have_url(server.url + "/")
    expect_state(page, "connected")


def expect_state(page: Page, state: str, timeout: int = TIMEOUT) -> None:
    expect(page.get_by_test_id("connection-state")).to_have_text(state, timeout=timeout)


def join(page: Page, room: str) -> None:
    page.get_by_test_id("room-input").fill(room)
    page.get_by_test_id("join-button").click()
    expect(page.get_by_test_id("view-title")).to_have_text("#" + room)
    # Joined once the server's `joined` lists us online.
    me = page.get_by_test_id("current-user").inner_text()
    expect(page.locator(f'[data-testid="online-user"][data-user="{me}"]')).to_have_count(1)


def send(page: Page, body: str) -> None:
    page.get_by_test_id("message-input").fill(body)
    page.get_by_test_id("send-button").click()


def confirmed(page: Page, body: str):
    """Rendered, acknowledged messages (they carry data-message-id) whose body is ``body``."""
    exact = page.get_by_test_id("message-body").filter(has_text=re.compile("^" + re.escape(body) + "$"))
    return page.locator("li[data-message-id]").filter(has=exact)


def pending(page: Page, body: str):
    return page.get_by_test_id("pending-message").filter(has_text=body)


def record_sent_frames(page: Page) -> list[dict]:
    """Every JSON frame the page sends on its chat sockets, in order."""
    frames: list[dict] = []

    def on_socket(ws) -> None:
        ws.on("framesent", lambda payload: frames.append(json.loads(payload)))

    page.on("websocket", on_socket)
    return frames


@pytest.fixture
def users(daphne_server):
    def make(*names: str) -> None:
        for name in names:
            daphne_server.create_user(name, PASSWORD)

    return make


# --- (a) two users chat -----------------------------------------------------------------


def test_two_users_see_each_others_messages_presence_and_typing(daphne_server, new_page, users):
    users("alice", "bob")
    alice, bob = new_page(), new_page()
    log_in(alice, daphne_server, "alice")
    log_in(bob, daphne_server, "bob")
    join(alice, "lobby")
    join(bob, "lobby")

    # Both online, in both pages (alice learns of bob through a `presence` frame).
    for page in (alice, bob):
        expect(page.get_by_test_id("online-user")).to_have_count(2)
        expect(page.locator('[data-testid="online-user"][data-user="alice"]')).to_be_visible()
        expect(page.locator('[data-testid="online-user"][data-user="bob"]')).to_be_visible()

    send(alice, "Hello Bob")
    expect(confirmed(bob, "Hello Bob")).to_have_count(1)
    expect(confirmed(alice, "Hello Bob")).to_have_count(1)
    # Own messages are marked as such; the other user's are not.
    expect(confirmed(alice, "Hello Bob")).to_have_class(re.compile(r"\bmsg-own\b"))
    expect(confirmed(bob, "Hello Bob")).not_to_have_class(re.compile(r"\bmsg-own\b"))
    expect(confirmed(bob, "Hello Bob").locator(".msg-sender")).to_have_text("alice")

    # Typing shows up for the other user, not for the typist.
    bob.get_by_test_id("message-input").press_sequentially("Hi Ali")
    expect(alice.get_by_test_id("typing-indicator")).to_have_text("bob is typing…")
    expect(bob.get_by_test_id("typing-indicator")).to_have_text("")
    bob.get_by_test_id("message-input").press_sequentially("ce")
    bob.get_by_test_id("message-input").press("Enter")
    expect(confirmed(alice, "Hi Alice")).to_have_count(1)
    # A message from the typist ends their typing indicator at once.
    expect(alice.get_by_test_id("typing-indicator")).to_have_text("")
    expect(confirmed(bob, "Hi Alice")).to_have_count(1)

    # Without a new `typing` frame the indicator goes away after about 5 s.
    bob.get_by_test_id("message-input").press_sequentially("still there?")
    expect(alice.get_by_test_id("typing-indicator")).to_have_text("bob is typing…")
    expect(alice.get_by_test_id("typing-indicator")).to_have_text("", timeout=9_000)

    # Sorted by id: the earlier message comes first in both pages.
    for page in (alice, bob):
        expect(page.get_by_test_id("message-body")).to_have_text(["Hello Bob", "Hi Alice"])

    shot(alice, "chat-desktop")
    bob.set_viewport_size(PHONE)
    shot(bob, "chat-phone")
    bob.get_by_test_id("sidebar-toggle").click()
    expect(bob.get_by_test_id("room-input")).to_be_focused()
    shot(bob, "chat-phone-drawer")
    bob.keyboard.press("Escape")
    expect(bob.get_by_test_id("room-input")).to_be_hidden()
    bob.get_by_test_id("online-toggle").click()
    expect(bob.get_by_test_id("online-list")).to_be_visible()
    shot(bob, "chat-phone-online")
    bob.keyboard.press("Escape")

    # The room directory shows the room with its online count.
    entry = alice.locator('[data-testid="room-entry"][data-room="lobby"]')
    expect(entry.get_by_test_id("room-online-count")).to_have_text("2 online")

    # bob leaves: alice's online list follows the `presence` frame.
    bob.goto(daphne_server.url + "/accounts/login/")  # navigating away closes the socket
    expect(alice.get_by_test_id("online-user")).to_have_count(1)


def test_private_messages_reach_the_other_user_with_an_unread_badge(daphne_server, new_page, users):
    users("carol", "dave")
    carol, dave = new_page(), new_page()
    log_in(carol, daphne_server, "carol")
    log_in(dave, daphne_server, "dave")
    join(dave, "elsewhere")

    carol.get_by_test_id("dm-input").fill("dave")
    carol.get_by_test_id("dm-button").click()
    expect(carol.get_by_test_id("view-title")).to_have_text("@dave")
    expect(carol).to_have_url(daphne_server.url + "/#dm/dave")
    send(carol, "just between us")
    expect(confirmed(carol, "just between us")).to_have_count(1)

    # dave is looking at another room: the conversation appears with an unread badge.
    conversation = dave.locator('[data-testid="dm-item"][data-name="carol"]')
    expect(conversation.get_by_test_id("unread-badge")).to_have_text("1")
    conversation.click()
    expect(dave.get_by_test_id("view-title")).to_have_text("@carol")
    expect(confirmed(dave, "just between us")).to_have_count(1)
    expect(conversation.get_by_test_id("unread-badge")).to_have_count(0)

    send(dave, "sure")
    expect(confirmed(carol, "sure")).to_have_count(1)

    # A reload comes back to the same conversation, with its history.
    dave.reload()
    expect_state(dave, "connected")
    expect(dave.get_by_test_id("view-title")).to_have_text("@carol")
    expect(dave.get_by_test_id("message-body")).to_have_text(["just between us", "sure"])


# --- (b) a server restart -------------------------------------------------------------


def test_clients_reconnect_after_a_restart_and_deliver_pending_messages_once(daphne_server, new_page, users):
    users("erin", "frank")
    erin, frank = new_page(), new_page()
    sent = record_sent_frames(erin)
    log_in(erin, daphne_server, "erin")
    log_in(frank, daphne_server, "frank")
    join(erin, "ops")
    join(frank, "ops")
    expect(erin.get_by_test_id("online-user")).to_have_count(2)

    send(frank, "sent before the stop")
    for page in (erin, frank):
        expect(confirmed(page, "sent before the stop")).to_have_count(1)

    daphne_server.stop()
    for page in (erin, frank):
        expect_state(page, "reconnecting")
    expect(erin.get_by_test_id("connection-detail")).to_contain_text(
        re.compile(r"next attempt in \d+ s|retrying|connecting")
    )
    shot(erin, "reconnecting")

    send(erin, "sent while the server is down")
    waiting = pending(erin, "sent while the server is down")
    expect(waiting).to_have_count(1)
    expect(waiting.get_by_test_id("message-status")).to_have_text("sending…")
    expect(waiting).to_have_class(re.compile(r"\bmsg-pending\b"))
    client_id = waiting.get_attribute("data-client-id")
    before_id = int(confirmed(erin, "sent before the stop").get_attribute("data-message-id"))
    sent.clear()

    daphne_server.start()
    for page in (erin, frank):
        expect_state(page, "connected", timeout=RECONNECT_TIMEOUT)

    # Delivered exactly once to both, and the pending copy is gone.
    for page in (erin, frank):
        expect(confirmed(page, "sent while the server is down")).to_have_count(1, timeout=TIMEOUT)
    expect(pending(erin, "sent while the server is down")).to_have_count(0)
    # Nothing from before the stop came twice (the re-join asks `since` the newest id).
    for page in (erin, frank):
        expect(confirmed(page, "sent before the stop")).to_have_count(1)
        expect(page.get_by_test_id("message-body")).to_have_text(
            ["sent before the stop", "sent while the server is down"]
        )
        ids = page.locator("li[data-message-id]").evaluate_all("els => els.map(e => e.dataset.messageId)")
        assert len(ids) == len(set(ids)), ids

    # What the client sent after the reconnect: the re-join asked `since` the newest id
    # it held, and the pending message went out with its original client_id.
    joins = [f for f in sent if f["type"] == "join"]
    assert joins and joins[0] == {"type": "join", "room": "ops", "since": before_id}, joins
    chats = [f for f in sent if f["type"] == "chat" and f["body"] == "sent while the server is down"]
    assert chats and all(f["client_id"] == client_id for f in chats), chats

    # And the room still works both ways.
    send(frank, "after the restart")
    expect(confirmed(erin, "after the restart")).to_have_count(1)


# --- (c) history ------------------------------------------------------------------------


def test_history_loads_the_newest_page_then_older_messages_on_demand(daphne_server, new_page, users):
    users("gina")
    daphne_server.manage(
        "shell",
        "-c",
        "from django.contrib.auth import get_user_model\n"
        "from rooms.models import Message, Room\n"
        "u = get_user_model().objects.create_user('archivist')\n"
        "r = Room.objects.create(slug='archive', title='The archive', created_by=u)\n"
        "Message.objects.bulk_create([Message(room=r, sender=u, body=f'old message {i:03d}') for i in range(1, 76)])\n",
    )
    gina = new_page()
    log_in(gina, daphne_server, "gina")
    join(gina, "archive")

    messages = gina.locator("li[data-message-id]")
    expect(messages).to_have_count(50)
    expect(confirmed(gina, "old message 075")).to_have_count(1)
    expect(confirmed(gina, "old message 026")).to_have_count(1)
    expect(confirmed(gina, "old message 025")).to_have_count(0)

    gina.get_by_test_id("load-older").click()
    expect(messages).to_have_count(75)
    expect(confirmed(gina, "old message 001")).to_have_count(1)
    # Nothing older: the button goes away and says so.
    expect(gina.get_by_test_id("load-older")).to_be_hidden()
    expect(gina.get_by_test_id("history-status")).to_contain_text("beginning")
    bodies = gina.get_by_test_id("message-body").all_inner_texts()
    assert bodies == [f"old message {i:03d}" for i in range(1, 76)]

    # A live message lands after the history, and the list stays deduplicated.
    send(gina, "a new one")
    expect(messages).to_have_count(76)
    expect(gina.get_by_test_id("message-body").last).to_have_text("a new one")


# --- (d) accounts ---------------------------------------------------------------------------


def test_sign_up_logs_in_and_log_out_logs_out(daphne_server, new_page):
    page = new_page()
    page.goto(daphne_server.url + "/accounts/login/")
    shot(page, "login")
    page.get_by_test_id("signup-link").click()
    expect(page).to_have_url(daphne_server.url + "/accounts/signup/")

    # A mismatched confirmation is refused with a visible error.
    page.locator("#id_username").fill("newcomer")
    page.locator("#id_password1").fill(PASSWORD)
    page.locator("#id_password2").fill(PASSWORD + "x")
    page.get_by_test_id("signup-button").click()
    expect(page.locator(".errorlist")).to_contain_text("didn’t match")
    expect(page.locator("#id_password2")).to_have_attribute("aria-invalid", "true")
    shot(page, "signup-error")

    page.locator("#id_password1").fill(PASSWORD)
    page.locator("#id_password2").fill(PASSWORD)
    page.get_by_test_id("signup-button").click()
    expect(page).to_have_url(daphne_server.url + "/")
    expect(page.get_by_test_id("current-user")).to_have_text("newcomer")
    expect_state(page, "connected")
    expect(page.get_by_test_id("admin-link")).to_have_count(0)  # not staff

    page.get_by_test_id("logout-button").click()
    expect(page).to_have_url(re.compile(re.escape(daphne_server.url) + r"/accounts/login/"))
    page.goto(daphne_server.url + "/")
    expect(page).to_have_url(re.compile(r"/accounts/login/\?next=/$"))

    # The new account logs in again with its password.
    log_in(page, daphne_server, "newcomer")


def test_staff_users_get_a_link_to_the_admin(daphne_server, new_page):
    daphne_server.manage(
        "shell",
        "-c",
        "from django.contrib.auth import get_user_model\n"
        f"get_user_model().objects.create_user('boss', password={PASSWORD!r}, is_staff=True)\n",
    )
    page = new_page()
    log_in(page, daphne_server, "boss")
    expect(page.get_by_test_id("admin-link")).to_have_attribute("href", "/admin/")


def test_sign_up_page_renders_labelled_fields(daphne_server, new_page):
    page = new_page(viewport=PHONE)
    page.goto(daphne_server.url + "/accounts/signup/")
    for label in ("Username:", "Password:", "Password confirmation:"):
        expect(page.get_by_label(label, exact=True)).to_be_visible()
    shot(page, "signup-phone")
    page.set_viewport_size(DESKTOP)
    shot(page, "signup")


# --- (e) message bodies are text ----------------------------------------------------------


def test_html_in_messages_renders_as_literal_text(daphne_server, new_page, users):
    users("hank", "iris")
    hank, iris = new_page(), new_page()
    log_in(hank, daphne_server, "hank")
    log_in(iris, daphne_server, "iris")
    join(hank, "xss")
    join(iris, "xss")

    payloads = ["<img src=x onerror=alert(1)>", "<script>alert(2)</script><b>bold</b>"]
    for body in payloads:
        send(hank, body)
    for page in (hank, iris):
        for body in payloads:
            expect(confirmed(page, body)).to_have_count(1)
        expect(page.locator("#message-list img, #message-list script, #message-list b")).to_have_count(0)

    # History renders the same way after a reload.
    iris.reload()
    expect_state(iris, "connected")
    for body in payloads:
        expect(confirmed(iris, body)).to_have_count(1)
    expect(iris.locator("#message-list img, #message-list script, #message-list b")).to_have_count(0)
    # (A dialog from alert() would have failed the test through the new_page fixture.)


# --- reconnect rules, kicks and the outbox ------------------------------------------------


def test_kick_close_waits_for_a_manual_reconnect_and_the_outbox_survives_a_reload(daphne_server, new_page, users):
    users("jane")
    jane = new_page()
    log_in(jane, daphne_server, "jane")
    join(jane, "quiet")

    # As if a moderator had kicked this socket: a `kicked` frame, then close 4003.
    jane.evaluate("chatApp.simulateFrame({type: 'kicked', reason: 'spamming'}); chatApp.simulateClose(4003)")
    expect_state(jane, "disconnected")
    expect(jane.get_by_test_id("connection-reason")).to_contain_text("disconnected by a moderator")
    expect(jane.get_by_test_id("connection-banner")).to_contain_text("disconnected by a moderator (reason: spamming)")
    expect(jane.get_by_test_id("reconnect-button")).to_be_visible()
    assert jane.evaluate("chatApp.conn.reconnectTimer") is None  # no reconnect by itself
    shot(jane, "kicked-simulated")

    # Written while disconnected: pending, kept across a reload in localStorage.
    send(jane, "written while kicked")
    expect(pending(jane, "written while kicked")).to_have_count(1)
    jane.reload()
    expect_state(jane, "connected")
    expect(jane.get_by_test_id("view-title")).to_have_text("#quiet")
    expect(confirmed(jane, "written while kicked")).to_have_count(1)
    expect(pending(jane, "written while kicked")).to_have_count(0)
    assert jane.evaluate("localStorage.getItem('chat:v1:jane:outbox')") == "{}"

    # 4029: same, with its own explanation; the Reconnect button brings it back.
    jane.evaluate("chatApp.simulateClose(4029)")
    expect_state(jane, "disconnected")
    expect(jane.get_by_test_id("connection-reason")).to_contain_text("blocked for reconnecting too often")
    jane.get_by_test_id("reconnect-button").click()
    expect_state(jane, "connected")
    expect(jane.get_by_test_id("reconnect-button")).to_be_hidden()


def test_reconnect_delays_follow_the_protocol_table(daphne_server, new_page, users):
    users("kim")
    page = new_page()
    log_in(page, daphne_server, "kim")
    delays = page.evaluate(
        """() => {
          const d = chatApp.policy.reconnectDelay;
          const lo = () => 0, hi = () => 0.999999;
          const out = {};
          for (const code of [4003, 4029, 4008, 1012, 1001, 1006, 1000, 1011]) {
            out[code] = [];
            for (let attempt = 0; attempt < 10; attempt++) out[code].push([d(code, attempt, lo), d(code, attempt, hi)]);
          }
          return out;
        }"""
    )
    assert all(pair == [None, None] for pair in delays["4003"] + delays["4029"])
    assert all(low >= 10 for low, _ in delays["4008"])
    for code in ("1012", "1001"):
        assert all(low == 0 and 4.99 < high <= 5 for low, high in delays[code])
    for code in ("1006", "1000", "1011"):
        for attempt, (low, high) in enumerate(delays[code]):
            cap = min(30, 0.5 * 2**attempt)
            assert low == 0 and cap * 0.999 < high <= cap, (code, attempt, high)


def test_recovery_past_the_servers_limit_joins_again_until_caught_up(live_root, request, new_page):
    from tests.live import new_live_server

    # The server recovers at most 4 messages per join, so 11 missed ones take three joins.
    server = new_live_server(live_root / request.node.name[:60], CHAT_RECOVERY_LIMIT="4").start()
    try:
        server.create_user("lena", PASSWORD)
        lena = new_page()
        log_in(lena, server, "lena")
        join(lena, "busy")
        send(lena, "first")
        expect(confirmed(lena, "first")).to_have_count(1)

        lena.evaluate("chatApp.simulateClose(4003)")  # offline, and no reconnect by itself
        expect_state(lena, "disconnected")
        server.manage(
            "shell",
            "-c",
            "from django.contrib.auth import get_user_model\n"
            "from rooms.models import Message, Room\n"
            "u = get_user_model().objects.create_user('chatty')\n"
            "r = Room.objects.get(slug='busy')\n"
            "Message.objects.bulk_create([Message(room=r, sender=u, body=f'missed {i:02d}') for i in range(1, 12)])\n",
        )
        lena.evaluate(
            "window.joinedMore = []; window.addEventListener('chat:frame', (e) => {"
            " if (e.detail.type === 'joined') window.joinedMore.push(e.detail.more); })"
        )
        lena.get_by_test_id("reconnect-button").click()
        expect_state(lena, "connected")
        expect(lena.locator("li[data-message-id]")).to_have_count(12)
        assert lena.evaluate("window.joinedMore") == [True, True, False]
        expect(lena.get_by_test_id("message-body")).to_have_text(["first"] + [f"missed {i:02d}" for i in range(1, 12)])

        # Live again after catching up.
        send(lena, "caught up")
        expect(confirmed(lena, "caught up")).to_have_count(1)
    finally:
        server.stop()


def test_a_silent_server_is_noticed_within_two_heartbeats_and_the_client_reconnects(live_root, request, new_page):
    from tests.live import new_live_server

    server = new_live_server(live_root / request.node.name[:60], CHAT_HEARTBEAT="1").start()
    try:
        server.create_user("mia", PASSWORD)
        page = new_page()
        # Sit between the page and the server; the first socket's server frames can be muted.
        sockets: list[dict] = []

        def route(ws) -> None:
            upstream = ws.connect_to_server()
            record = {"muted": False, "closed": None}
            sockets.append(record)
            upstream.on_message(lambda message: None if record["muted"] else ws.send(message))
            ws.on_close(lambda code, reason: record.update(closed=code))

        page.route_web_socket(re.compile(r"/ws/chat/$"), route)
        page.add_init_script(
            "window.seen = {welcome: 0, pong: 0};"
            "window.addEventListener('chat:frame', (e) => {"
            " if (e.detail.type in window.seen) window.seen[e.detail.type] += 1; });"
        )
        log_in(page, server, "mia")
        join(page, "pulse")
        # A ping every `welcome.heartbeat` (1 s here): pongs keep coming.
        page.wait_for_function("window.seen.pong >= 2", timeout=TIMEOUT)

        sockets[0]["muted"] = True  # the server goes silent, the socket stays open
        page.wait_for_function("window.seen.welcome >= 2", timeout=TIMEOUT)
        expect_state(page, "connected")
        assert sockets[0]["closed"] == 4000  # closed by the client's watchdog
        assert len(sockets) >= 2
        # Back in the room after the reconnect.
        send(page, "still here")
        expect(confirmed(page, "still here")).to_have_count(1)
    finally:
        server.stop()


def test_a_refused_reconnect_after_the_session_ends_says_so(daphne_server, new_page, users):
    users("noah")
    page = new_page()
    log_in(page, daphne_server, "noah")
    page.context.clear_cookies()  # as if the session had ended elsewhere
    page.evaluate("chatApp.simulateClose(1006)")
    # The handshakes are refused (403); after a few, the page checks why and tells the user.
    banner = page.get_by_test_id("connection-banner")
    expect(banner).to_contain_text("Your session has ended", timeout=20_000)
    expect(page.get_by_test_id("connection-state")).to_have_text(re.compile("^(reconnecting|connecting)$"))
    banner.get_by_role("link", name="Log in again").click()
    expect(page).to_have_url(re.compile(r"/accounts/login/"))


def presence_services_missing() -> bool:
    import importlib.util

    return importlib.util.find_spec("presence.services.moderation") is None


@pytest.mark.skipif(presence_services_missing(), reason="presence.services.moderation is not there yet")
def test_a_moderators_kick_closes_the_page_for_good_until_the_user_reconnects(daphne_server, new_page, users):
    users("olga")
    page = new_page()
    log_in(page, daphne_server, "olga")
    join(page, "kicks")
    daphne_server.manage(
        "shell",
        "-c",
        "from django.contrib.auth import get_user_model\n"
        "from presence.services.moderation import users_kick\n"
        "users_kick(users=get_user_model().objects.filter(username='olga'), by=None, reason='too loud')\n",
    )
    expect_state(page, "disconnected")
    expect(page.get_by_test_id("connection-reason")).to_contain_text("disconnected by a moderator (reason: too loud)")
    expect(page.get_by_test_id("connection-banner")).to_contain_text("You were disconnected by a moderator")
    shot(page, "kicked")
    page.set_viewport_size(PHONE)
    shot(page, "kicked-phone")
    page.set_viewport_size(DESKTOP)
    page.get_by_test_id("reconnect-button").click()
    expect_state(page, "connected")
    expect(page.locator('[data-testid="online-user"][data-user="olga"]')).to_have_count(1)


@pytest.mark.skipif(presence_services_missing(), reason="presence.services.moderation is not there yet")
def test_logging_out_in_one_tab_tells_the_other_tab_it_is_signed_out(daphne_server, new_page, users):
    users("pia")
    first = new_page()
    log_in(first, daphne_server, "pia")
    second = first.context.new_page()  # same browser, same session cookie
    second.goto(daphne_server.url + "/")
    expect_state(second, "connected")

    first.get_by_test_id("logout-button").click()
    expect(first).to_have_url(re.compile(r"/accounts/login/"))
    expect_state(second, "disconnected")
    expect(second.get_by_test_id("connection-banner")).to_contain_text("Your session has ended")
    expect(second.get_by_test_id("connection-reason")).to_have_text(": you are signed out")
