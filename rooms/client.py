"""An asyncio client of the chat socket (PROTOCOL.md §1-3), for the terminal client,
benchmarks and scripts.

``ChatClient`` keeps one connection open: it pings every `welcome.heartbeat` seconds,
reconnects after a close as the protocol's client table says (``reconnect_delay``, a
pure function), re-joins its rooms with ``since`` and re-sends unacknowledged messages
with their original ``client_id``, and drops a message id it has already delivered.

    async with ChatClient(url, token, on_frame=print) as client:
        await client.join("general")
        client_id = await client.chat("general", "hello")
        echo = await client.wait_ack(client_id)
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import random
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from rooms.events import PROTOCOL_VERSION, ClientFrame, CloseCode, ErrorCode, ServerFrame

logger = logging.getLogger(__name__)

BACKOFF_BASE = 0.5  # seconds, doubling per failed attempt
BACKOFF_CAP = 30.0
FLOOD_WAIT = 10.0  # at least this long after 4008
SPREAD = 5.0  # random 0..SPREAD after 1012/1001, so a drained server's clients spread out
NEVER = frozenset({CloseCode.KICKED, CloseCode.RECONNECT_ABUSE})
SOON = frozenset({CloseCode.SERVICE_RESTART, CloseCode.GOING_AWAY})
REQUEST_TIMEOUT = 10.0
ACKS_KEPT = 10_000  # answered messages whose outcome wait_ack can still return

Frame = dict[str, Any]


def reconnect_delay(close_code: int | None, attempt: int, rand: Callable[[], float] = random.random) -> float | None:
    """Seconds to wait before reconnecting, or None: do not reconnect by itself.

    ``close_code`` is the code the server closed with, None when the connection was lost
    or could not be opened; ``attempt`` counts failed attempts since the last successful
    connect (0 for the first retry); ``rand`` returns a float in [0, 1)."""
    if close_code in NEVER:
        return None
    if close_code == CloseCode.FLOOD:
        return FLOOD_WAIT + rand() * SPREAD
    if close_code in SOON:
        return rand() * SPREAD
    return rand() * min(BACKOFF_CAP, BACKOFF_BASE * 2 ** min(attempt, 16))  # full jitter


class ChatClientError(Exception):
    pass


class HandshakeRefused(ChatClientError):
    """The server answered the WebSocket handshake with an HTTP status (403: a wrong or
    revoked token, a disallowed Origin, or a client blocked for reconnect abuse)."""

    def __init__(self, status: int):
        self.status = status
        hint = " (wrong or revoked token, or blocked for reconnecting too often)" if status == 403 else ""
        super().__init__(f"the server refused the connection: HTTP {status}{hint}")


class ConnectFailed(ChatClientError):
    """The socket could not be opened or closed before `welcome`; ``code`` is its close code."""

    def __init__(self, message: str, code: int | None = None):
        super().__init__(message)
        self.code = code


class ClientStopped(ChatClientError):
    """The client stopped and will not reconnect by itself (closed, kicked, blocked)."""

    def __init__(self, code: int | None, reason: str):
        super().__init__(reason)
        self.code = code
        self.reason = reason


class ServerError(ChatClientError):
    """An `error` frame in reply to a request or message."""

    def __init__(self, frame: Frame):
        self.code, self.message, self.ref = frame.get("code"), frame.get("message"), frame.get("ref")
        self.frame = frame
        super().__init__(f"{self.code}: {self.message}")


@dataclass
class _Request:
    kind: str  # the frame type sent, which is also an error's `ref`
    key: Any  # what the reply names: a room, ("room"|"with", value), or None
    frame: Frame
    future: asyncio.Future


class _Seen:
    """A bounded set of delivered message keys."""

    def __init__(self, size: int = 20_000):
        self._keys: set = set()
        self._order: deque = deque()
        self._size = size

    def add(self, key) -> bool:
        """False if ``key`` was seen already."""
        if key in self._keys:
            return False
        self._keys.add(key)
        self._order.append(key)
        if len(self._order) > self._size:
            self._keys.discard(self._order.popleft())
        return True


class _Pacer:
    """A token bucket kept under the server's rate limit, so a burst of re-sends after a
    reconnect is not answered with `rate_limited` (and then 4008)."""

    def __init__(self, rate: float | None, burst: int):
        self.rate, self.burst, self.tokens, self.updated = rate, burst, float(burst), None

    async def take(self) -> None:
        if not self.rate:
            return
        loop = asyncio.get_running_loop()
        while True:
            now = loop.time()
            if self.updated is not None:
                self.tokens = min(float(self.burst), self.tokens + (now - self.updated) * self.rate)
            self.updated = now
            if self.tokens >= 1.0:
                self.tokens -= 1.0
                return
            await asyncio.sleep((1.0 - self.tokens) / self.rate)


def _quiet(future: asyncio.Future) -> asyncio.Future:
    """Mark a future whose outcome nobody may await, so a failure is not logged."""
    future.add_done_callback(lambda f: f.cancelled() or f.exception())
    return future


class ChatClient:
    """One chat connection that keeps itself open. ``on_frame(frame)`` (sync or async)
    gets every server frame except duplicate messages; ``on_state(state, detail)`` gets
    "connected", "disconnected" (with the delay before the next attempt) and "stopped".

    Every awaited reply (join, history, wait_ack...) fails with TimeoutError after
    ``request_timeout`` seconds (None: wait as long as it takes; wrap in asyncio.timeout).
    ``sleep``, ``rand`` and ``delay_scale`` shape the reconnect waits (tests shrink them);
    ``send_rate``/``send_burst`` pace outgoing frames (None: no pacing)."""

    def __init__(
        self,
        url: str,
        token: str,
        *,
        on_frame: Callable[[Frame], Awaitable[None] | None] | None = None,
        on_state: Callable[[str, dict], None] | None = None,
        heartbeat: float | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rand: Callable[[], float] = random.random,
        delay_scale: float = 1.0,
        open_timeout: float = 10.0,
        request_timeout: float | None = REQUEST_TIMEOUT,
        send_rate: float | None = 8.0,
        send_burst: int = 20,
        max_refusals: int = 3,
        **connect_kwargs: Any,
    ):
        self.url, self._token = url, token
        self.on_frame, self.on_state = on_frame, on_state
        self._heartbeat, self._sleep, self._rand, self._delay_scale = heartbeat, sleep, rand, delay_scale
        self._open_timeout, self._max_refusals, self._connect_kwargs = open_timeout, max_refusals, connect_kwargs
        self._pacer = _Pacer(send_rate, send_burst)
        self.request_timeout = request_timeout  # for each request's reply and each wait_ack
        self.welcome: Frame | None = None
        self.user: str | None = None
        self.joined: dict[str, int | None] = {}  # room -> newest message id held (None: not joined yet)
        self.online: dict[str, set[str]] = {}
        self.outbox: dict[str, Frame] = {}  # client_id -> unacknowledged chat/private frame
        self.reconnects = 0
        self.duplicates_dropped = 0
        self.stopped: asyncio.Future[ClientStopped] | None = None
        self._acks: dict[str, asyncio.Future] = {}
        self._requests: list[_Request] = []
        self._seen = _Seen()
        self._catching_up: set[str] = set()  # rooms whose `joined` said `more`
        self._ws: ClientConnection | None = None  # set while connected and resumed
        self._socket: ClientConnection | None = None  # the newest socket opened
        self._task: asyncio.Task | None = None
        self._closing = False
        self._kick_reason: str | None = None
        self._last_error: Frame | None = None
        self._resend_task: asyncio.Task | None = None

    # --- lifecycle -----------------------------------------------------------------

    async def connect(self) -> Frame:
        """Open the socket and read `welcome`, without retrying (raises HandshakeRefused or
        ConnectFailed); from then on the client reconnects by itself until close().
        Also a manual retry after the client stopped (kicked, blocked)."""
        if self._task is not None and not self._task.done():
            return self.welcome
        self._closing = False
        self.stopped = _quiet(asyncio.get_running_loop().create_future())
        for cid in self.outbox:  # a manual retry: what failed with the stop is pending again
            if self._acks[cid].done():
                self._acks[cid] = _quiet(asyncio.get_running_loop().create_future())
        ws = await self._open()
        await self._resume(ws)
        self._task = asyncio.create_task(self._run(ws), name="chat-client")
        self._task.add_done_callback(self._ran)
        return self.welcome

    def _ran(self, task: asyncio.Task) -> None:
        if not task.cancelled() and task.exception() is not None:
            logger.error("chat client failed", exc_info=task.exception())
            self._stop(None, f"client failed: {task.exception()!r}")

    async def close(self) -> None:
        """Close the socket (1000) and stop; pending requests fail with ClientStopped."""
        self._closing = True
        ws, self._ws = self._socket, None
        if ws is not None:
            with contextlib.suppress(Exception):
                await ws.close()
        for task in (self._task, self._resend_task):
            if task is not None and not task.done() and task is not asyncio.current_task():
                task.cancel()  # (close() from an on_frame callback runs in self._task itself)
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._stop(CloseCode.NORMAL, "closed by the client")

    async def __aenter__(self) -> ChatClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.close()

    def abort(self) -> None:
        """Drop the socket without a close frame, as a lost network does; the client then
        reconnects by itself (for tests and failure drills)."""
        if self._socket is not None:
            self._socket.transport.abort()

    @property
    def connected(self) -> bool:
        return self._ws is not None

    async def wait_stopped(self) -> ClientStopped:
        return await asyncio.shield(self.stopped)

    # --- public requests -----------------------------------------------------------

    async def join(self, room: str) -> Frame:
        """Join ``room`` (kept across reconnects); returns the `joined` frame."""
        self.joined.setdefault(room, None)
        request = self._request(ClientFrame.JOIN, room, {"type": ClientFrame.JOIN, "room": room})
        await self._send(request.frame)  # while disconnected, the next resume joins it
        return await self._wait(request.future)

    async def leave(self, room: str) -> Frame:
        self.joined.pop(room, None)
        self.online.pop(room, None)
        self._catching_up.discard(room)
        request = self._request(ClientFrame.LEAVE, room, {"type": ClientFrame.LEAVE, "room": room})
        if not await self._send(request.frame):
            self._resolve(request, {"type": ServerFrame.LEFT, "room": room})  # not joined on the next resume
        return await self._wait(request.future)

    async def chat(self, room: str, body: str, *, client_id: str | None = None) -> str:
        """Send a message to ``room``; returns its client_id (see wait_ack). Kept in the
        outbox, and re-sent after a reconnect, until its echo or an error comes back."""
        return await self._post({"type": ClientFrame.CHAT, "room": room, "body": body}, client_id)

    async def private(self, to: str, body: str, *, client_id: str | None = None) -> str:
        """Send a private message to the user ``to``; returns its client_id."""
        return await self._post({"type": ClientFrame.PRIVATE, "to": to, "body": body}, client_id)

    async def wait_ack(self, client_id: str) -> Frame:
        """The echoed `chat`/`private` frame of a message sent; raises ServerError on an error."""
        future = self._acks.get(client_id)
        if future is None:
            raise KeyError(f"no message with client_id {client_id!r} was sent")
        return await self._wait(future)

    async def history(
        self,
        room: str | None = None,
        with_: str | None = None,
        before: int | None = None,
        limit: int = 50,
    ) -> Frame:
        """One page of a room's or a conversation's messages, oldest first: the `history` frame."""
        if (room is None) == (with_ is None):
            raise ValueError("history needs exactly one of room or with_")
        key = ("room", room) if room is not None else ("with", with_)
        frame = {"type": ClientFrame.HISTORY, key[0]: key[1], "limit": limit}
        if before is not None:
            frame["before"] = before
        request = self._request(ClientFrame.HISTORY, key, frame)
        await self._send(frame)  # while disconnected, the next resume sends it
        return await self._wait(request.future)

    async def rooms(self) -> list[dict]:
        """The rooms this user may join: [{room, title, online}]."""
        request = self._request(ClientFrame.ROOMS, None, {"type": ClientFrame.ROOMS})
        await self._send(request.frame)
        return (await self._wait(request.future))["rooms"]

    async def typing(self, room: str) -> None:
        """Tell the others in ``room`` that this user is typing (dropped while disconnected)."""
        await self._send({"type": ClientFrame.TYPING, "room": room})

    # --- connection ----------------------------------------------------------------

    async def _open(self) -> ClientConnection:
        headers = {"Authorization": f"Bearer {self._token}"}
        try:
            ws = await connect(
                self.url, additional_headers=headers, open_timeout=self._open_timeout, **self._connect_kwargs
            )
        except InvalidStatus as exc:
            raise HandshakeRefused(exc.response.status_code) from None
        except InvalidURI as exc:
            raise ConnectFailed(f"bad URL {self.url!r}: {exc}") from None
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            raise ConnectFailed(f"cannot connect to {self.url}: {exc or type(exc).__name__}") from None
        try:
            async with asyncio.timeout(self._open_timeout):
                welcome = json.loads(await ws.recv())
        except ConnectionClosed as exc:
            raise ConnectFailed("closed before welcome", exc.rcvd.code if exc.rcvd else None) from None
        except (TimeoutError, ValueError) as exc:
            await ws.close()
            raise ConnectFailed(f"no welcome from the server: {exc or type(exc).__name__}") from None
        if not isinstance(welcome, dict) or welcome.get("type") != ServerFrame.WELCOME:
            await ws.close()
            raise ConnectFailed(f"expected a welcome frame, got {str(welcome)[:200]}")
        if welcome.get("protocol") != PROTOCOL_VERSION:
            await ws.close()
            raise ClientStopped(
                None, f"server speaks protocol {welcome.get('protocol')}, this client {PROTOCOL_VERSION}"
            )
        self.welcome, self.user, self._socket = welcome, welcome["user"], ws
        self._kick_reason = self._last_error = None
        return ws

    async def _resume(self, ws: ClientConnection) -> None:
        """Before reading anything on a new socket: re-join every room with `since`, then
        re-send the unacknowledged messages (the server stores each client_id once), then
        the requests still unanswered. Only then may other sends use the socket; what is
        added meanwhile is picked up by the next round."""
        self._catching_up.clear()
        rooms_done: set[str] = set()
        sent: set[str] = set()
        answered: set[int] = set()
        while True:
            rooms = [room for room in self.joined if room not in rooms_done]
            cids = [cid for cid in self.outbox if cid not in sent]
            requests = [r for r in self._requests if r.kind != ClientFrame.JOIN and id(r) not in answered]
            if not (rooms or cids or requests):
                break
            for room in rooms:
                rooms_done.add(room)
                if room in self.joined:
                    await self._rejoin(ws, room, self.joined[room])
            for cid in cids:
                sent.add(cid)
                if cid in self.outbox:
                    await self._send_on(ws, self.outbox[cid])
            for request in requests:
                answered.add(id(request))
                if request.future.done() or request not in self._requests:
                    continue
                if request.kind == ClientFrame.LEAVE:  # its room was not re-joined
                    self._resolve(request, {"type": ServerFrame.LEFT, "room": request.key})
                else:
                    await self._send_on(ws, request.frame)
        self._ws = ws
        self._state(
            "connected", user=self.user, connection_id=self.welcome.get("connection_id"), reconnects=self.reconnects
        )

    async def _rejoin(self, ws: ClientConnection, room: str, newest: int | None) -> None:
        frame = {"type": ClientFrame.JOIN, "room": room}
        if newest is not None:
            frame["since"] = newest
        self._request(ClientFrame.JOIN, room, frame, quiet=True)
        await self._send_on(ws, frame)

    async def _run(self, ws: ClientConnection) -> None:
        """Read until the socket closes, then reconnect per the protocol, until stopped."""
        while True:
            code, reason = await self._read(ws)
            if self._closing:
                return
            attempt = refusals = 0
            while True:
                delay = reconnect_delay(code, attempt, self._rand)
                if delay is None:
                    self._stop(code, self._why(code, reason))
                    return
                delay *= self._delay_scale
                self._state("disconnected", code=code, reason=reason, delay=delay, attempt=attempt)
                await self._sleep(delay)
                attempt += 1
                try:
                    ws = await self._open()
                except HandshakeRefused as exc:
                    # 403 after a good session: a revoked token or a reconnect-abuse block;
                    # keep backing off a little, then stop (any other status is transient).
                    refusals += exc.status == 403
                    if refusals >= self._max_refusals:
                        self._stop(None, f"{exc}; gave up after {refusals} refusals")
                        return
                    code, reason = None, str(exc)
                except ConnectFailed as exc:
                    code, reason = exc.code, str(exc)
                except ClientStopped as exc:
                    self._stop(exc.code, exc.reason)
                    return
                else:
                    self.reconnects += 1
                    await self._resume(ws)
                    break

    async def _read(self, ws: ClientConnection) -> tuple[int | None, str]:
        heartbeat = asyncio.create_task(self._beat(ws))
        try:
            async for text in ws:
                try:
                    frame = json.loads(text)
                except (TypeError, ValueError):
                    logger.warning("ignored a frame that is not JSON")
                    continue
                if not isinstance(frame, dict):
                    continue
                try:
                    await self._handle(frame)
                except (KeyError, TypeError, ValueError):
                    logger.warning("ignored a malformed %s frame", str(frame.get("type"))[:32])
        except ConnectionClosed:
            pass
        finally:
            heartbeat.cancel()
            if self._ws is ws:
                self._ws = None
        rcvd = ws.protocol.close_rcvd
        return (rcvd.code, rcvd.reason) if rcvd else (None, "connection lost")

    async def _beat(self, ws: ClientConnection) -> None:
        interval = self._heartbeat or float(self.welcome.get("heartbeat") or 20)
        while True:
            await asyncio.sleep(interval)
            await self._send_on(ws, {"type": ClientFrame.PING})

    def _why(self, code: int | None, reason: str) -> str:
        if code == CloseCode.KICKED:
            return f"kicked by a moderator: {self._kick_reason or reason or 'no reason given'}"
        if code == CloseCode.RECONNECT_ABUSE:
            detail = (self._last_error or {}).get("message") or reason
            return f"blocked for reconnecting too often: {detail or 'no detail'}"
        return f"closed with {code}: {reason}"

    def _stop(self, code: int | None, reason: str) -> None:
        if self.stopped is None or self.stopped.done():
            return
        stopped = ClientStopped(code, reason)
        self.stopped.set_result(stopped)
        for future in [r.future for r in self._requests] + list(self._acks.values()):
            if not future.done():
                future.set_exception(stopped)
        self._requests.clear()
        if not self._closing:
            self._state("stopped", code=code, reason=reason)

    def _state(self, state: str, **detail) -> None:
        if self.on_state is not None:
            try:
                self.on_state(state, detail)
            except Exception:
                logger.exception("on_state callback failed")

    # --- sending -------------------------------------------------------------------

    async def _send(self, frame: Frame) -> bool:
        """Send on the open socket; False while disconnected (nothing is queued here)."""
        if self._ws is None:
            return False
        return await self._send_on(self._ws, frame)

    async def _send_on(self, ws: ClientConnection, frame: Frame) -> bool:
        await self._pacer.take()
        try:
            await ws.send(json.dumps(frame, separators=(",", ":"), ensure_ascii=False))
        except ConnectionClosed:
            return False
        return True

    async def _post(self, frame: Frame, client_id: str | None) -> str:
        cid = client_id or uuid.uuid4().hex
        frame["client_id"] = cid
        self.outbox[cid] = frame
        if cid not in self._acks or self._acks[cid].done():
            self._acks[cid] = _quiet(asyncio.get_running_loop().create_future())
            if len(self._acks) > 2 * ACKS_KEPT:  # amortized: a long benchmark run stays bounded
                for old in list(self._acks)[: len(self._acks) - ACKS_KEPT]:
                    if self._acks[old].done():
                        del self._acks[old]
        await self._send(frame)  # while disconnected, the next resume sends it
        return cid

    def _request(self, kind: str, key: Any, frame: Frame, *, quiet: bool = False) -> _Request:
        future = asyncio.get_running_loop().create_future()
        request = _Request(kind, key, frame, _quiet(future) if quiet else future)
        self._requests.append(request)
        return request

    async def _wait(self, future: asyncio.Future) -> Any:
        """The reply, within request_timeout (TimeoutError); ClientStopped once stopped."""
        if self.stopped is not None and self.stopped.done() and not future.done():
            raise self.stopped.result()
        try:
            return await asyncio.wait_for(asyncio.shield(future), self.request_timeout)
        except TimeoutError:
            self._requests = [r for r in self._requests if r.future is not future]  # not re-sent later
            raise

    def _resolve(self, request: _Request, frame: Frame) -> None:
        self._requests.remove(request)
        if not request.future.done():
            if frame.get("type") == ServerFrame.ERROR:
                request.future.set_exception(ServerError(frame))
            else:
                request.future.set_result(frame)

    def _answer(self, kind: str, frame: Frame, key: Any = None, *, every: bool = False) -> list[_Request]:
        """Resolve the oldest pending request of ``kind`` (with ``key``), or all with ``every``."""
        matched = [r for r in self._requests if r.kind == kind and (key is None or r.key == key)]
        matched = matched if every else matched[:1]
        for request in matched:
            self._resolve(request, frame)
        return matched

    # --- receiving -----------------------------------------------------------------

    async def _handle(self, frame: Frame) -> None:
        kind = frame.get("type")
        if kind in (ServerFrame.CHAT, ServerFrame.PRIVATE) and not self._message(frame):
            self.duplicates_dropped += 1
            return
        if kind == ServerFrame.JOINED:
            room = frame.get("room")
            self.online[room] = set(frame.get("online") or ())
            if room in self.joined and self.joined[room] is None:
                self.joined[room] = frame.get("last_id") or 0  # a plain join: hold from here on
            self._answer(ClientFrame.JOIN, frame, room, every=True)
            if frame.get("more") and room in self.joined:
                # The recovered messages follow `joined`; the server answers frames in order,
                # so the pong of this ping comes after the last of them (see PONG).
                self._catching_up.add(room)
                await self._send({"type": ClientFrame.PING})
        elif kind == ServerFrame.LEFT:
            self._answer(ClientFrame.LEAVE, frame, frame.get("room"), every=True)
        elif kind == ServerFrame.PRESENCE:
            online = self.online.setdefault(frame.get("room"), set())
            (online.add if frame.get("event") == "join" else online.discard)(frame.get("user"))
        elif kind == ServerFrame.HISTORY:
            key = ("room", frame["room"]) if "room" in frame else ("with", frame.get("with"))
            self._answer(ClientFrame.HISTORY, frame, key)
        elif kind == ServerFrame.ROOMS:
            self._answer(ClientFrame.ROOMS, frame)
        elif kind == ServerFrame.PONG and self._catching_up and self._ws is not None:
            rooms, self._catching_up = self._catching_up, set()
            for room in rooms:
                if room in self.joined:
                    await self._rejoin(self._ws, room, self.joined[room])
        elif kind == ServerFrame.KICKED:
            self._kick_reason = frame.get("reason")
        elif kind == ServerFrame.ERROR:
            self._error(frame)
        await self._emit(frame)

    def _message(self, frame: Frame) -> bool:
        """Record a delivered message; False if its id was delivered already."""
        if not isinstance(frame.get("id"), int):
            raise ValueError("a message without an id")
        if frame["type"] == ServerFrame.CHAT:
            scope = ("room", frame.get("room"))
        else:
            scope = ("with", frame.get("to") if frame.get("sender") == self.user else frame.get("sender"))
        cid = frame.get("client_id")
        if cid in self.outbox and frame.get("sender") == self.user:
            del self.outbox[cid]
            future = self._acks.get(cid)
            if future is not None and not future.done():
                future.set_result(frame)
        if not self._seen.add((scope, frame.get("id"))):
            return False
        room = frame.get("room")
        if scope[0] == "room" and self.joined.get(room) is not None:
            self.joined[room] = max(self.joined[room], frame["id"])
        return True

    def _error(self, frame: Frame) -> None:
        self._last_error = frame
        ref = frame.get("ref")
        if ref in self.outbox:
            del self.outbox[ref]
            future = self._acks.get(ref)
            if future is not None and not future.done():
                future.set_exception(ServerError(frame))
        elif ref in set(ClientFrame):
            for request in self._answer(ref, frame):
                if request.kind == ClientFrame.JOIN and self.joined.get(request.key, 0) is None:
                    self.joined.pop(request.key, None)  # a first join that failed: not a room of ours
        elif frame.get("code") == ErrorCode.RATE_LIMITED and (self._resend_task is None or self._resend_task.done()):
            self._resend_task = asyncio.create_task(self._resend_after_rate_limit())

    async def _resend_after_rate_limit(self) -> None:
        """The server dropped frames without saying which: after a pause, send the
        unacknowledged messages again (each client_id is stored once)."""
        await asyncio.sleep(1.0)
        for cid in list(self.outbox):
            if cid in self.outbox:
                await self._send(self.outbox[cid])

    async def _emit(self, frame: Frame) -> None:
        if self.on_frame is None:
            return
        try:
            result = self.on_frame(frame)
            if inspect.isawaitable(result):
                await result
        except Exception:
            logger.exception("on_frame callback failed")
