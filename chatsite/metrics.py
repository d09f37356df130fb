"""This process's metrics, in Prometheus format (served by GET /metrics; docs/observability.md).

Each daphne process counts for itself, in its own ``CollectorRegistry`` (no multiprocess
mode): Prometheus scrapes every process directly on its own port, and the scrape target's
``instance`` label tells processes apart. Which process that is in the presence registry
(``server`` in the API and the admin) is one series, ``chat_server_info{server=...} 1``,
set by ``server_info()`` when the process registers; queries join on it rather than
carrying a ``server`` label on every series (the name is only known once the first socket
registers the process, after every other series already exists).

The functions for the per-frame path are one dict lookup and one increment: every
labelled child is created here at import, so no ``.labels()`` call runs per frame, and a
value outside the known set (a client's made-up frame type, an unusual close code)
collapses to ``"other"``, so no client can create new series.
"""

from __future__ import annotations

import os
import time

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import InfoMetricFamily
from prometheus_client.registry import Collector

from chatsite import logging as chat_logging
from rooms.events import ClientFrame, CloseCode, ErrorCode, ServerFrame

OTHER = "other"
# The channel-layer event key that carries when the event was published (wall clock,
# seconds since the epoch): set by event_stamp() in the one realtime seam, read by
# event_delivered() in the consumer that sends the frame.
PUBLISHED_AT = "published_at"
# From 1 ms to 10 s; a delivery slower than 10 s lands in +Inf.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# WebSocket close codes given their own series: RFC 6455's (1006: the socket dropped without
# a close frame; 1011: a server error) and this protocol's (rooms.events.CloseCode).
KNOWN_CLOSE_CODES = frozenset({1000, 1001, 1002, 1003, 1005, 1006, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014})
KNOWN_CLOSE_CODES |= frozenset(int(code) for code in CloseCode)

REGISTRY = CollectorRegistry(auto_describe=True)
# process_resident_memory_bytes, process_cpu_seconds_total, open fds (Linux), python_info, gc.
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)
GCCollector(registry=REGISTRY)

_SERVER_INFO_HELP = "This process's name in the presence registry, and its pid."


class ServerInfoCollector(Collector):
    """``chat_server_info{server, pid} 1``, read at each scrape: ``server`` is the name the
    process registered with (server_info()), else PRESENCE_SERVER_NAME, else empty until
    the first socket registers the process."""

    def collect(self):
        info = InfoMetricFamily("chat_server", _SERVER_INFO_HELP)
        info.add_metric([], {"server": chat_logging.server_name() or "", "pid": str(os.getpid())})
        yield info

    def describe(self):
        return [InfoMetricFamily("chat_server", _SERVER_INFO_HELP)]


REGISTRY.register(ServerInfoCollector())

_connections_open = Gauge("chat_connections_open", "Chat sockets open on this process.", registry=REGISTRY)
_connects = Counter("chat_connects", "Chat socket handshakes, by outcome.", ["outcome"], registry=REGISTRY)
_disconnects = Counter(
    "chat_disconnects",
    "Accepted chat sockets that ended, by close code (none: no code; other: a code outside the known set).",
    ["code"],
    registry=REGISTRY,
)
_frames_in = Counter(
    "chat_frames_in", "Client frames decoded, by type (other: an unknown type).", ["type"], registry=REGISTRY
)
_frames_out = Counter("chat_frames_out", "Frames sent to clients, by type.", ["type"], registry=REGISTRY)
_errors = Counter(
    "chat_errors", "Client frames refused, by error code (rooms.events.ErrorCode).", ["code"], registry=REGISTRY
)
_delivery_latency = Histogram(
    "chat_delivery_latency_seconds",
    "From a message event's publication to a socket sending it.",
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)

# Children created once, keyed by what the callers pass (StrEnum and IntEnum members hash
# like their values, so ClientFrame.CHAT and "chat" find the same child).
_CONNECT = {True: _connects.labels(outcome="accepted"), False: _connects.labels(outcome="refused")}
_DISCONNECT = {code: _disconnects.labels(code=str(code)) for code in sorted(KNOWN_CLOSE_CODES)}
_DISCONNECT[None] = _disconnects.labels(code="none")
_DISCONNECT_OTHER = _disconnects.labels(code=OTHER)
_FRAME_IN = {str(kind): _frames_in.labels(type=str(kind)) for kind in ClientFrame}
_FRAME_IN_OTHER = _frames_in.labels(type=OTHER)
_FRAME_OUT = {str(kind): _frames_out.labels(type=str(kind)) for kind in ServerFrame}
_FRAME_OUT_OTHER = _frames_out.labels(type=OTHER)
_ERROR = {str(code): _errors.labels(code=str(code)) for code in ErrorCode}
_ERROR_OTHER = _errors.labels(code=OTHER)

# rooms.events.encode writes compact JSON and every frame builder puts "type" first.
_TYPE_PREFIX = '{"type":"'
_TYPE_START = len(_TYPE_PREFIX)
_TYPE_END_MAX = _TYPE_START + 32


# --- The per-frame path ------------------------------------------------------------------


def frame_in(kind: str) -> None:
    """Count one decoded client frame of type ``kind``."""
    _FRAME_IN.get(kind, _FRAME_IN_OTHER).inc()


def frame_out(kind: str, n: int = 1) -> None:
    """Count ``n`` frames of type ``kind`` sent to a client."""
    _FRAME_OUT.get(kind, _FRAME_OUT_OTHER).inc(n)


def frame_out_text(text: str, n: int = 1) -> None:
    """Count ``n`` sends of a frame already encoded by ``rooms.events.encode`` (a
    channel-layer event's ``text``), reading its type from the start of the text."""
    end = text.find('"', _TYPE_START, _TYPE_END_MAX) if text.startswith(_TYPE_PREFIX) else -1
    _FRAME_OUT.get(text[_TYPE_START:end] if end > 0 else None, _FRAME_OUT_OTHER).inc(n)


def error(code: str) -> None:
    """Count one client frame refused with ``code`` (an ``ErrorCode``)."""
    _ERROR.get(code, _ERROR_OTHER).inc()


def connect(accepted: bool) -> None:
    """Count one handshake the consumer accepted, or refused."""
    _CONNECT[bool(accepted)].inc()


def disconnect(code: int | None) -> None:
    """Count one accepted socket that ended with close ``code``."""
    _DISCONNECT.get(code, _DISCONNECT_OTHER).inc()


def connections_open(delta: int) -> None:
    """Move the open-sockets gauge: +1 when a socket is recorded, -1 when it is forgotten."""
    _connections_open.inc(delta)


def delivery_latency(seconds: float) -> None:
    """Observe one delivery; a negative value (clock skew between hosts) counts as 0."""
    _delivery_latency.observe(seconds if seconds > 0.0 else 0.0)


def event_stamp(event: dict) -> dict:
    """A copy of channel-layer ``event`` carrying the time it is published (the caller's
    dict is untouched: the same event may be sent to several groups)."""
    return {**event, PUBLISHED_AT: time.time()}


def event_delivered(event: dict) -> None:
    """Observe the delivery latency of a stamped event that a socket just sent; an
    unstamped event (from a process not yet upgraded) is ignored."""
    published = event.get(PUBLISHED_AT)
    if published is not None:
        delivery_latency(time.time() - published)


# --- Once per process ---------------------------------------------------------------------


def server_info(*, name: str) -> None:
    """Record the name this process registered with in presence: the ``server`` label of
    ``chat_server_info`` and the ``server`` field of JSON log lines."""
    chat_logging.server_set(name)
