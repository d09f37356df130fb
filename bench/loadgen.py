"""The load generator's worker processes: many sockets on one asyncio loop per process.

Each worker is a process started by ``bench.pool.Pool``, pinned to the generator cores,
with RLIMIT_NOFILE raised. It builds one *role* (the scenario's worker side) and then
answers calls from the parent over a pipe: ``("call", method, kwargs)`` runs
``await role.<method>(**kwargs)`` and sends back ``("ok", result)``.

The client is lean on purpose, because on a small machine the load generator's own cost
per frame decides what can be measured at all. ``websockets``' Sans-I/O
``ClientProtocol`` builds and checks the handshake (the Authorization header, the
accept key, the status); the frames after it are read by ``Socket``, an
``asyncio.Protocol`` that parses the server's unmasked frames in ``data_received`` and
hands each text frame to a callback: no per-message future, queue or task switch (the
``websockets`` asyncio connection costs several times more per frame). It answers pings
and close frames as RFC 6455 says, and masks what it sends with ``websockets``' C
``apply_mask``. ``rooms/client.py`` is not used: its send pacing and reconnect logic
would measure the client, not the server.

Latency: the sender puts ``time.time_ns()`` in the body (``t=<ns> s=<sender> n=<seq>
p=<phase>``); the receiver subtracts it from its own ``time.time_ns()`` on arrival. All
processes run on one machine, so they share that clock. Receipts are kept in arrays
(not tuples the garbage collector would have to walk) until the parent collects them.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import gc
import json
import os
import random
import resource
import time
import traceback
from array import array
from typing import Any
from urllib.parse import urlsplit

from websockets.client import ClientProtocol
from websockets.exceptions import InvalidHandshake, InvalidStatus
from websockets.frames import apply_mask
from websockets.protocol import State
from websockets.uri import parse_uri

LOOPBACK = "127.0.0.1"
CLOSE_CONCURRENCY = 200
MAX_HANDSHAKE_BYTES = 64 * 1024
OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0, 1, 2, 8, 9, 10
# client_ids must never repeat for a user: the server stores one message per (sender,
# client_id) and answers a repeat with the original, to the sender only (PROTOCOL.md §2).
# The same benchmark users send in every scenario and every run, so each process adds its own nonce.
NONCE = os.urandom(6).hex()


def check_loopback(url: str) -> str:
    """A load generator only ever targets 127.0.0.1: refuse anything else."""
    host = urlsplit(url).hostname
    if host != LOOPBACK:
        raise ValueError(f"the load generator only targets {LOOPBACK}, not {host!r}")
    return url


def raise_nofile() -> int:
    """Raise the soft open-files limit to the hard one; returns the new limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def pin_self(cores: list[int] | None) -> None:
    if cores:
        os.sched_setaffinity(0, cores)


class ConnectionLost(ConnectionError):
    pass


def failure_kind(exc: BaseException) -> str:
    """A short, countable name for why a connect or a cycle failed."""
    if isinstance(exc, InvalidStatus):
        return f"http_{exc.response.status_code}"
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return "timeout"
    if isinstance(exc, ConnectionLost):
        return str(exc) or "closed"
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, ConnectionResetError):
        return "reset"
    if isinstance(exc, InvalidHandshake):
        cause = exc.__cause__
        return f"handshake_{type(exc).__name__}" + (f"_{type(cause).__name__}" if cause else "")
    if isinstance(exc, OSError):
        return f"oserror_{exc.errno}"
    return type(exc).__name__


class Socket(asyncio.Protocol):
    """One client WebSocket. ``on_text(text)`` gets every text frame once the handshake is
    done (until it is set, the first one resolves ``welcome``); ``on_lost(socket)`` runs
    when the connection ends. ``close_code``: the code of the server's close frame."""

    def __init__(self, url: str, token: str):
        loop = asyncio.get_running_loop()
        self.handshake = ClientProtocol(parse_uri(url))
        request = self.handshake.connect()
        request.headers["Authorization"] = f"Bearer {token}"
        request.headers["User-Agent"] = "chat-bench"
        self.handshake.send_request(request)
        self.head: bytearray | None = bytearray()  # the HTTP response, until it is complete
        self.refused = False
        self.rest = b""  # an incomplete frame
        self.fragments: list[bytes] | None = None
        self.opened = loop.create_future()
        self.welcome = loop.create_future()
        self.closed = loop.create_future()
        self.transport = None
        self.on_text = None
        self.on_lost = None
        self.close_code: int | None = None
        self.closing = False

    # asyncio.Protocol

    def connection_made(self, transport) -> None:
        self.transport = transport
        transport.write(b"".join(self.handshake.data_to_send()))

    def data_received(self, data: bytes) -> None:
        if self.refused:
            self._refusal(data)
            return
        if self.head is not None:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                if len(self.head) > MAX_HANDSHAKE_BYTES:
                    self._fail(ConnectionLost("handshake_too_large"))
                return
            if not self.head.startswith(b"HTTP/1.1 101 "):
                # A refusal (403, 500, ...) has a body: websockets reads it all, then
                # reports the status (InvalidStatus).
                self.refused = True
                head, self.head = bytes(self.head), None
                self._refusal(head)
                return
            response, data = bytes(self.head[: end + 4]), bytes(self.head[end + 4 :])
            self.head = None
            self.handshake.receive_data(response)
            self.handshake.events_received()
            if self.handshake.handshake_exc is not None or self.handshake.state is not State.OPEN:
                self._fail(self.handshake.handshake_exc or ConnectionLost("handshake"))
                return
            self.opened.set_result(None)
            if not data:
                return
        if self.rest:
            data = self.rest + data
            self.rest = b""
        n = len(data)
        pos = 0
        while n - pos >= 2:
            b0, b1 = data[pos], data[pos + 1]
            length = b1 & 0x7F
            head = 2
            if length == 126:
                if n - pos < 4:
                    break
                length = int.from_bytes(data[pos + 2 : pos + 4], "big")
                head = 4
            elif length == 127:
                if n - pos < 10:
                    break
                length = int.from_bytes(data[pos + 2 : pos + 10], "big")
                head = 10
            end = pos + head + length
            if end > n:
                break
            if b1 & 0x80:  # servers never mask (RFC 6455 5.1)
                self._fail(ConnectionLost("masked_frame"))
                return
            payload = data[pos + head : end]
            pos = end
            opcode = b0 & 0x0F
            if opcode == OP_TEXT:
                if b0 & 0x80:
                    self._text(payload)
                else:
                    self.fragments = [payload]
            elif opcode == OP_CONT and self.fragments is not None:
                self.fragments.append(payload)
                if b0 & 0x80:
                    whole, self.fragments = b"".join(self.fragments), None
                    self._text(whole)
            elif opcode == OP_PING:
                self._send(OP_PONG, payload)
            elif opcode == OP_CLOSE:
                self.close_code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
                if not self.closing:
                    self.closing = True
                    self._send(OP_CLOSE, payload[:2])
                self.transport.close()
                return
        if pos < n:
            self.rest = data[pos:]

    def _refusal(self, data: bytes) -> None:
        self.handshake.receive_data(data)
        self.handshake.events_received()
        if self.handshake.handshake_exc is not None:
            self._fail(self.handshake.handshake_exc)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.refused and not self.opened.done():
            self.handshake.receive_eof()
            self.handshake.events_received()
            if self.handshake.handshake_exc is not None:
                self.opened.set_exception(self.handshake.handshake_exc)
        lost = ConnectionLost(f"closed_{self.close_code}" if self.close_code else "closed")
        for future in (self.opened, self.welcome):
            if not future.done():
                future.set_exception(lost)
                future.exception()  # retrieved: no "never retrieved" warning when nobody waits
        if not self.closed.done():
            self.closed.set_result(self.close_code)
        if self.on_lost is not None:
            self.on_lost(self)

    # reading and writing

    def _text(self, payload: bytes) -> None:
        text = payload.decode()
        if self.on_text is not None:
            self.on_text(text)
        elif not self.welcome.done():
            self.welcome.set_result(text)

    def _fail(self, exc: Exception) -> None:
        if not self.opened.done():
            self.opened.set_exception(exc)
        self.transport.abort()

    def _send(self, opcode: int, payload: bytes) -> None:
        n = len(payload)
        if n < 126:
            header = bytes((0x80 | opcode, 0x80 | n))
        elif n < 65536:
            header = bytes((0x80 | opcode, 0xFE)) + n.to_bytes(2, "big")
        else:
            header = bytes((0x80 | opcode, 0xFF)) + n.to_bytes(8, "big")
        mask = random.getrandbits(32).to_bytes(4, "big")
        self.transport.write(header + mask + apply_mask(payload, mask))

    def send_text(self, text: str) -> None:
        if self.closing or self.transport.is_closing():
            raise ConnectionLost("send_on_closed")
        self._send(OP_TEXT, text.encode())

    @property
    def alive(self) -> bool:
        return not self.closed.done()

    async def close(self, *, limit: float = 2.0) -> None:
        """Send a close frame (1000) and wait for the server to close the connection."""
        if self.closed.done():
            return
        if not self.closing and not self.transport.is_closing():
            self.closing = True
            self._send(OP_CLOSE, (1000).to_bytes(2, "big"))
        try:
            await asyncio.wait_for(asyncio.shield(self.closed), limit)
        except TimeoutError:
            self.transport.abort()

    def abort(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.abort()


async def ws_open(url: str, token: str, *, limit: float) -> tuple[Socket, dict]:
    """Open a socket and read `welcome`; returns (socket, welcome frame)."""
    loop = asyncio.get_running_loop()
    uri = parse_uri(url)
    made: list[Socket] = []

    def factory() -> Socket:
        sock = Socket(url, token)
        made.append(sock)
        return sock

    async def handshake() -> tuple[Socket, str]:
        _, sock = await loop.create_connection(factory, uri.host, uri.port)
        await sock.opened
        return sock, await sock.welcome

    try:
        sock, text = await asyncio.wait_for(handshake(), limit)
    except BaseException:
        for sock in made:
            sock.abort()
        raise
    welcome = json.loads(text)
    if welcome.get("type") != "welcome":
        sock.abort()
        raise ConnectionLost(f"no_welcome_{welcome.get('type')}")
    return sock, welcome


class Counters(collections.Counter):
    pass


class Member:
    """One open socket of a role. Chat frames go to ``on_chat(member, frame, now_ns)``;
    `joined`, `pong` and `error` frames are handled here."""

    __slots__ = ("index", "sock", "room", "waiter", "ping_sent", "rtts", "stats", "on_chat", "closing",
                 "heartbeat", "last_ping", "pings")  # fmt: skip

    def __init__(self, index: int, sock: Socket, *, on_chat, stats: Counters, heartbeat: float = 20.0):
        self.index = index
        self.sock = sock
        self.heartbeat = heartbeat  # seconds between pings, from `welcome`
        self.last_ping = time.monotonic()
        self.pings = 0
        self.room: str | None = None
        self.waiter: asyncio.Future | None = None
        self.ping_sent = 0
        self.rtts: list[float] | None = None
        self.stats = stats
        self.on_chat = on_chat
        self.closing = False
        sock.on_text = self._text
        sock.on_lost = self._lost

    def _text(self, text: str) -> None:
        now = time.time_ns()
        frame = json.loads(text)
        kind = frame["type"]
        if kind == "chat":
            self.on_chat(self, frame, now)
        elif kind == "pong":
            if self.ping_sent and self.rtts is not None:
                self.rtts.append((now - self.ping_sent) / 1e6)
            self.ping_sent = 0
        elif kind == "joined" or kind == "left":
            if self.waiter is not None and not self.waiter.done():
                self.waiter.set_result(frame)
        elif kind == "error":
            self.stats["error_" + str(frame.get("code"))] += 1
        else:
            self.stats["frames_" + kind] += 1

    def _lost(self, sock: Socket) -> None:
        if not self.closing:
            self.stats[f"dropped_{sock.close_code}"] += 1
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionLost(f"closed_{sock.close_code}"))

    @property
    def alive(self) -> bool:
        return self.sock.alive

    async def join(self, room: str, *, limit: float, since: int | None = None) -> dict:
        self.waiter = asyncio.get_running_loop().create_future()
        frame = {"type": "join", "room": room} if since is None else {"type": "join", "room": room, "since": since}
        self.sock.send_text(json.dumps(frame))
        joined = await asyncio.wait_for(self.waiter, limit)
        self.room = room
        return joined

    def ping(self) -> None:
        self.pings += 1
        self.last_ping = time.monotonic()
        self.ping_sent = time.time_ns()
        self.sock.send_text('{"type":"ping"}')


async def close_all(socks: list[Socket], *, limit: float = 10.0) -> None:
    """Close politely, CLOSE_CONCURRENCY at a time; abort whatever is left after ``limit``."""
    semaphore = asyncio.Semaphore(CLOSE_CONCURRENCY)

    async def close(sock: Socket) -> None:
        async with semaphore:
            with contextlib.suppress(Exception):
                await sock.close()

    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.gather(*(close(s) for s in socks)), limit)
    for sock in socks:
        sock.abort()


async def open_members(
    url: str, items: list[tuple[int, str]], *, concurrency: int, limit: float, on_chat, stats: Counters,
    give_up_after: int | None = None, into: list[Member] | None = None, ramp_limit: float | None = None,
) -> tuple[list[Member], list[float], list[float]]:  # fmt: skip
    """Open sockets for (index, token) items, ``concurrency`` handshakes at a time.
    Returns the members, each handshake's seconds (to `welcome`), and when each one
    completed (seconds since the first started). Failures are counted in ``stats``; after
    ``give_up_after`` of them, or ``ramp_limit`` seconds after the start, the rest is not
    attempted (the server has reached its limit, or the run its time budget).
    Each member is also appended to ``into`` as soon as it is open (the role's keep-alive
    must ping the first sockets of a long ramp before the server finds them silent)."""
    semaphore = asyncio.Semaphore(concurrency)
    members: list[Member] = []
    durations: list[float] = []
    done_at: list[float] = []
    started = time.monotonic()
    failed = 0

    async def one(index: int, token: str) -> None:
        nonlocal failed
        async with semaphore:
            if give_up_after is not None and failed >= give_up_after:
                stats["connect_not_attempted"] += 1
                return
            if ramp_limit is not None and time.monotonic() - started > ramp_limit:
                stats["connect_not_attempted_in_time"] += 1
                return
            t0 = time.monotonic()
            try:
                sock, welcome = await ws_open(url, token, limit=limit)
            except Exception as exc:
                failed += 1
                stats["connect_failed_" + failure_kind(exc)] += 1
                return
            now = time.monotonic()
            durations.append(now - t0)
            done_at.append(now - started)
            heartbeat = float(welcome.get("heartbeat") or 20)
            member = Member(index, sock, on_chat=on_chat, stats=stats, heartbeat=heartbeat)
            members.append(member)
            if into is not None:
                into.append(member)

    await asyncio.gather(*(one(index, token) for index, token in items))
    members.sort(key=lambda m: m.index)
    return members, durations, done_at


def body_parse(body: str) -> tuple[int, int, int, int]:
    """(sent_ns, sender, seq, phase) from ``t=<ns> s=<sender> n=<seq> p=<phase>``."""
    t, s, n, p = body.split(" ", 3)
    return int(t[2:]), int(s[2:]), int(n[2:]), int(p[2:])


async def sleep_until(wall: float) -> None:
    delay = wall - time.time()
    if delay > 0:
        await asyncio.sleep(delay)


# --- roles: the worker side of each scenario -----------------------------------------------


class Role:
    def __init__(self, spec: dict):
        self.spec = spec
        self.url = check_loopback(spec["url"])
        self.stats = Counters()
        self.members: list[Member] = []
        self.keepalive_task: asyncio.Task | None = None

    def keep_alive(self) -> None:
        """Ping every member once per `welcome.heartbeat`, as a real client does: the server
        closes sockets silent for three heartbeats, and a long setup (1,000 joins) or
        ramp (10,000 connects) would otherwise lose its first sockets."""
        if self.keepalive_task is None:
            self.keepalive_task = asyncio.get_running_loop().create_task(self._keepalive())

    async def _keepalive(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            for member in self.members:
                if now - member.last_ping >= member.heartbeat and member.alive and not member.closing:
                    with contextlib.suppress(ConnectionLost):
                        member.ping()

    def take_stats(self) -> dict:
        stats, self.stats = dict(self.stats), Counters()
        return stats

    async def close(self) -> dict:
        if self.keepalive_task is not None:
            self.keepalive_task.cancel()
        for m in self.members:
            m.closing = True
        await close_all([m.sock for m in self.members])
        return {"stats": self.take_stats()}


class ChatRole(Role):
    """Members in rooms; some of them send at a rate. Used by `fanout` (one sender, one
    room) and `rooms` (everyone sends, rooms of S). spec: url, members [(index, token,
    room)]."""

    def __init__(self, spec: dict):
        super().__init__(spec)
        self._reset()
        self.foreign = 0

    def _reset(self) -> None:
        # receiver, sender, seq, phase, sent_ns, received_ns: one array each
        self.rx = tuple(array("q") for _ in range(6))

    def on_chat(self, member: Member, frame: dict, now: int) -> None:
        try:
            t, s, n, p = body_parse(frame["body"])
        except (ValueError, KeyError):
            self.foreign += 1
            return
        r_receiver, r_sender, r_seq, r_phase, r_t, r_now = self.rx
        r_receiver.append(member.index)
        r_sender.append(s)
        r_seq.append(n)
        r_phase.append(p)
        r_t.append(t)
        r_now.append(now)

    async def setup(self, *, concurrency: int, limit: float) -> dict:
        started = time.monotonic()
        rooms = {index: room for index, _, room in self.spec["members"]}
        self.keep_alive()
        members, durations, _ = await open_members(
            self.url,
            [(index, token) for index, token, _ in self.spec["members"]],
            concurrency=concurrency,
            limit=limit,
            on_chat=self.on_chat,
            stats=self.stats,
            into=self.members,
        )
        semaphore = asyncio.Semaphore(concurrency)

        async def join(member: Member) -> bool:
            async with semaphore:
                try:
                    await member.join(rooms[member.index], limit=limit)
                    return True
                except Exception as exc:
                    self.stats["join_failed_" + failure_kind(exc)] += 1
                    return False

        ok = await asyncio.gather(*(join(m) for m in members))
        self.members = [m for m, joined in zip(members, ok, strict=True) if joined]
        await close_all([m.sock for m, joined in zip(members, ok, strict=True) if not joined])
        return {
            "joined": [(m.index, m.room) for m in self.members],
            "connect_s": durations,
            "setup_s": time.monotonic() - started,
            "stats": self.take_stats(),
        }

    async def send(self, *, phase: int, rate: float, duration: float, start_at: float, senders: list[int],
                   spread: bool) -> dict:  # fmt: skip
        """Each member in ``senders`` sends ``rate`` messages/s for ``duration`` seconds from
        wall time ``start_at``; with ``spread`` each starts at a random offset within one
        interval (independent clients), else all at the interval's start."""
        by_index = {m.index: m for m in self.members}
        mine = [by_index[i] for i in senders if i in by_index]
        lags: list[float] = []
        sent: dict[int, int] = {}
        interval = 1.0 / rate

        async def run(member: Member) -> None:
            offset = random.random() * interval if spread else 0.0
            count = max(1, int(duration * rate))
            dumps, room, index, sock = json.dumps, member.room, member.index, member.sock
            base = start_at + offset
            for seq in range(count):
                due = base + seq * interval
                delay = due - time.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                else:
                    lags.append(-delay)
                body = f"t={time.time_ns()} s={index} n={seq} p={phase}"
                try:
                    sock.send_text(
                        dumps({"type": "chat", "room": room, "body": body, "client_id": f"{NONCE}.{phase}.{seq}"})
                    )
                except ConnectionLost:
                    self.stats["send_on_closed"] += 1
                    break
                sent[index] = seq + 1

        await asyncio.gather(*(run(m) for m in mine))
        lags.sort()
        return {
            "sent": sent,
            "late_sends": sum(1 for lag in lags if lag > 0.005),
            "max_send_lag_ms": (lags[-1] * 1000 if lags else 0.0),
            "stats": self.take_stats(),
        }

    async def collect(self, *, phase: int) -> dict:
        """Receipts of ``phase``: unique ones, duplicates, their latencies (ms) and send
        times (s since the epoch), and how many frames of earlier phases came late."""
        rx = self.rx
        self._reset()
        seen: set[tuple[int, int, int]] = set()
        latency = array("f")
        sent_at = array("d")
        dups = late = 0
        for receiver, sender, seq, p, t, now in zip(*rx, strict=True):
            if p != phase:
                late += 1
                continue
            key = (receiver, sender, seq)
            if key in seen:
                dups += 1
                continue
            seen.add(key)
            latency.append((now - t) / 1e6)
            sent_at.append(t / 1e9)
        foreign, self.foreign = self.foreign, 0
        return {
            "unique": len(seen),
            "dups": dups,
            "late": late,
            "foreign": foreign,
            "latency_ms": latency,
            "sent_at": sent_at,
            "stats": self.take_stats(),
        }


class CapacityRole(Role):
    """Idle authenticated sockets: open them, then hold them with protocol pings.
    spec: url, members [(index, token)]."""

    def __init__(self, spec: dict):
        super().__init__(spec)
        self.pending = list(spec["members"])

    def on_chat(self, member, frame, now) -> None:
        self.stats["frames_chat"] += 1

    async def open(self, *, count: int | None, concurrency: int, limit: float, give_up_after: int | None = None,
                   ramp_limit: float | None = None) -> dict:  # fmt: skip
        items, self.pending = (self.pending, []) if count is None else (self.pending[:count], self.pending[count:])
        started = time.monotonic()
        self.keep_alive()
        members, durations, done_at = await open_members(
            self.url, items, concurrency=concurrency, limit=limit, on_chat=self.on_chat, stats=self.stats,
            give_up_after=give_up_after, into=self.members, ramp_limit=ramp_limit,
        )  # fmt: skip
        return {
            "opened": len(members),
            "attempted": len(items),
            "connect_s": durations,
            "done_at": done_at,
            "elapsed_s": time.monotonic() - started,
            "stats": self.take_stats(),
        }

    async def hold(self, *, duration: float, interval: float) -> dict:
        """Keep every socket open for ``duration`` s; each sends a `ping` every ``interval``
        s (one task walks the sockets so pings are spread evenly). Returns the pong round
        trips and the sockets lost meanwhile."""
        members = self.members
        for m in members:
            m.rtts = []
            m.ping_sent = 0  # a late pong of an earlier ping is not one of these
        before = sum(m.pings for m in members)
        if members:
            step = interval / len(members)
            end = time.monotonic() + duration
            started = time.monotonic()
            i = 0
            while time.monotonic() < end:
                member = members[i % len(members)]
                if member.alive:
                    with contextlib.suppress(ConnectionLost):
                        member.ping()
                i += 1
                delay = started + i * step - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            # The last pongs: until every open socket has its answer, or 5 s.
            waited = time.monotonic() + 5.0
            while time.monotonic() < waited and any(m.ping_sent and m.alive for m in members):  # noqa: ASYNC110
                await asyncio.sleep(0.1)
        pings = sum(m.pings for m in members) - before  # the keep-alive's included
        rtts = array("f", [r for m in members for r in m.rtts or ()])
        for m in members:
            m.rtts = None
        alive = sum(1 for m in members if m.alive)
        return {"pings": pings, "pongs": len(rtts), "rtt_ms": rtts, "alive": alive, "stats": self.take_stats()}


class ChurnRole(Role):
    """Connect, join, disconnect, over and over, at a target rate (open loop with a cap on
    cycles in flight). spec: url, tokens [token], rooms (how many rooms to spread over)."""

    async def cycle(self, token: str, room: str, limit: float) -> tuple[float, float, float]:
        t0 = time.monotonic()
        sock, _ = await ws_open(self.url, token, limit=limit)
        try:
            t1 = time.monotonic()
            joined = asyncio.get_running_loop().create_future()

            def on_text(text: str) -> None:
                frame = json.loads(text)
                if joined.done():
                    return
                if frame["type"] == "joined":
                    joined.set_result(frame)
                elif frame["type"] == "error":
                    joined.set_exception(ConnectionLost(f"error_{frame.get('code')}"))

            def on_lost(_sock: Socket) -> None:
                if not joined.done():
                    joined.set_exception(ConnectionLost(f"closed_{sock.close_code}"))

            sock.on_text, sock.on_lost = on_text, on_lost
            sock.send_text(json.dumps({"type": "join", "room": room}))
            await asyncio.wait_for(joined, limit)
            t2 = time.monotonic()
            await sock.close(limit=limit)
        except BaseException:
            sock.abort()
            raise
        t3 = time.monotonic()
        return t1 - t0, t2 - t1, t3 - t0

    async def send(self, *, rate: float, duration: float, start_at: float, inflight: int, limit: float,
                   offset: int) -> dict:  # fmt: skip
        tokens = self.spec["tokens"]
        rooms = self.spec["rooms"]
        semaphore = asyncio.Semaphore(inflight)
        connect_s, join_s, cycle_s, done_at = [], [], [], []
        delayed = 0
        tasks = set()

        async def one(i: int) -> None:
            token = tokens[i % len(tokens)]
            room = f"churn-{(offset + i) % rooms}"
            try:
                c, j, total = await self.cycle(token, room, limit)
            except Exception as exc:
                self.stats["cycle_failed_" + failure_kind(exc)] += 1
            else:
                connect_s.append(c)
                join_s.append(j)
                cycle_s.append(total)
                done_at.append(time.time() - start_at)
            finally:
                semaphore.release()

        await sleep_until(start_at)
        interval = 1.0 / rate
        count = int(duration * rate)
        for i in range(count):
            delay = start_at + i * interval - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            if semaphore.locked():
                delayed += 1  # the server is behind: this cycle starts late
            await semaphore.acquire()
            if time.time() > start_at + duration:
                semaphore.release()
                break
            task = asyncio.get_running_loop().create_task(one(i))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.wait(tasks, timeout=limit + 5)
        return {
            "connect_s": connect_s,
            "join_s": join_s,
            "cycle_s": cycle_s,
            "done_at": done_at,
            "delayed": delayed,
            "stats": self.take_stats(),
        }


class HistoryRole(Role):
    """A reconnect storm: every client connects at once, joins with `since`, and waits
    for the missed messages. spec: url, members [(index, token)], seeder token."""

    def __init__(self, spec: dict):
        super().__init__(spec)
        self.socks: list[Socket] = []

    async def seed(self, *, room: str, count: int, limit: float) -> dict:
        """Join ``room`` and post ``count`` messages; returns their ids (oldest first)."""
        sock, _ = await ws_open(self.url, self.spec["seeder"], limit=limit)
        ids: list[int] = []
        done = asyncio.get_running_loop().create_future()

        def on_text(text: str) -> None:
            frame = json.loads(text)
            if frame["type"] == "chat" and frame.get("room") == room:
                ids.append(frame["id"])
                if len(ids) == count and not done.done():
                    done.set_result(None)
            elif frame["type"] == "error" and not done.done():
                done.set_exception(RuntimeError(f"seeding failed: {frame}"))

        sock.on_text = on_text
        try:
            sock.send_text(json.dumps({"type": "join", "room": room}))
            for seq in range(count):
                body = f"t={time.time_ns()} s=-1 n={seq} p=0"
                sock.send_text(
                    json.dumps({"type": "chat", "room": room, "body": body, "client_id": f"{NONCE}.seed.{seq}"})
                )
            await asyncio.wait_for(done, limit)
            await sock.close()
        finally:
            sock.abort()
        return {"ids": ids, "stats": self.take_stats()}

    async def storm(self, *, room: str, since: int, expect: list[int], start_at: float, limit: float) -> dict:
        results: list[dict] = []
        loop = asyncio.get_running_loop()

        async def one(index: int, token: str) -> None:
            t0 = time.time()
            got: list[int] = []
            record: dict[str, Any] = {"index": index, "ok": False}
            done = loop.create_future()
            sock = None

            def on_text(text: str) -> None:
                if done.done():
                    return  # recovered: later frames (presence, ...) are read and dropped
                frame = json.loads(text)
                kind = frame["type"]
                if kind == "joined":
                    record["joined_s"] = time.time() - start_at
                elif kind == "chat" and frame.get("room") == room:
                    got.append(frame["id"])
                    if len(got) == len(expect):
                        done.set_result(None)
                elif kind == "error":
                    done.set_exception(ConnectionLost(f"error_{frame.get('code')}"))

            def on_lost(lost: Socket) -> None:
                if not done.done():
                    done.set_exception(ConnectionLost(f"closed_{lost.close_code}"))
                elif lost.close_code != 1000:
                    self.stats[f"dropped_{lost.close_code}"] += 1

            try:
                sock, _ = await ws_open(self.url, token, limit=limit)
                record["welcome_s"] = time.time() - start_at
                sock.on_text, sock.on_lost = on_text, on_lost
                join_sent = time.time()
                sock.send_text(json.dumps({"type": "join", "room": room, "since": since}))
                await asyncio.wait_for(done, max(0.01, t0 + limit - time.time()))
                now = time.time()
                record["recovered_s"] = now - start_at
                record["join_to_recovered_s"] = now - join_sent
                record["ok"] = got == expect
                if not record["ok"]:
                    self.stats["recovered_wrong_ids"] += 1
                self.socks.append(sock)
            except Exception as exc:
                record["failure"] = failure_kind(exc)
                record["received"] = len(got)
                self.stats["storm_failed_" + failure_kind(exc)] += 1
                if sock is not None:
                    sock.abort()
            results.append(record)

        await sleep_until(start_at)
        await asyncio.gather(*(one(index, token) for index, token in self.spec["members"]))
        return {"clients": results, "stats": self.take_stats()}

    async def close(self) -> dict:
        for sock in self.socks:
            sock.on_lost = None
        await close_all(self.socks)
        return await super().close()


ROLES = {"chat": ChatRole, "capacity": CapacityRole, "churn": ChurnRole, "history": HistoryRole}


# --- the worker process --------------------------------------------------------------------


def event_loop_name() -> str:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio"
    return "uvloop"


def worker_main(conn, spec: dict) -> None:
    """Entry point of a worker process (multiprocessing, spawn)."""
    pin_self(spec.get("cores"))
    raise_nofile()
    gc.set_threshold(50_000, 20, 100)
    try:
        import uvloop
    except ImportError:
        asyncio.run(_serve(conn, spec))
    else:
        uvloop.run(_serve(conn, spec))


async def _serve(conn, spec: dict) -> None:
    loop = asyncio.get_running_loop()
    # The pipe is read on a thread: an event loop reader would make its fd non-blocking,
    # and a large result would then fail to send (EAGAIN) instead of waiting for the parent.
    recv = functools.partial(loop.run_in_executor, None, conn.recv)
    try:
        role = ROLES[spec["role"]](spec)
    except Exception:
        conn.send(("error", traceback.format_exc()))
        return
    conn.send(("ok", {"pid": os.getpid()}))
    while True:
        message = await recv()
        if message[0] == "exit":
            break
        _, method, kwargs = message
        cpu0, wall0 = time.process_time(), time.monotonic()
        try:
            result: Any = await getattr(role, method)(**kwargs)
        except Exception:
            conn.send(("error", traceback.format_exc()))
            continue
        result["_cpu_s"] = time.process_time() - cpu0
        result["_wall_s"] = time.monotonic() - wall0
        conn.send(("ok", result))
        del result
        # What is alive now (sockets, members) stays: keep the collector from walking it
        # again and again while frames are counted.
        gc.collect()
        gc.freeze()
    with contextlib.suppress(Exception):
        await role.close()
