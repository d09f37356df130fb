"""Let the application close a socket with the registered codes PROTOCOL.md uses.

Daphne hands an application's close code to autobahn's ``sendClose``, which accepts
only 1000 and 3000-4999 (application codes), and raises for 1001, 1009, 1011 and 1012,
turning a clean close into a server error (1011 or 1006 for the client). Those four are
what this protocol needs (going away, frame too large, server error, restarting), so
for them we call autobahn's ``sendCloseFrame``: the method autobahn itself uses for
protocol-level closes, which sends the frame and starts the closing handshake without
the application-code check. Everything else goes through daphne unchanged.

Two more additions, both for fan-out (docs/performance.md has the profile):

- **Eager writes.** Twisted's TCP transport never writes in ``write()``: it buffers the
  bytes, registers the socket for writability (an ``add_writer`` on the asyncio loop:
  an epoll_ctl and a selector-key rebuild), writes on the next loop turn, then
  unregisters it. Per delivery that was about 70% of daphne's CPU in a fan-out. When
  nothing is queued on the connection, ``write()`` now sends at once and only buffers
  what the kernel did not take, so ordering and back-pressure are Twisted's as before.
- **A direct send.** Each WebSocket scope gets ``scope["extensions"]["chat.send_now"]``:
  a plain function that sends an already UTF-8-encoded text frame on that socket if it
  is open, and returns False otherwise. The RoomHub uses it to deliver one encoding of
  a frame to many sockets without a coroutine per send through channels' session
  wrapper and daphne's reply path; anything else (and any socket not open) keeps
  the ASGI ``send``.

And one for handshakes: autobahn's ``_connectionMade`` pretty-prints its configuration
for a debug log line on every connection, whether or not debug logging is on (about 1%
of daphne's CPU in connect churn); the text is now made only if the line is written.
"""

import pprint

REGISTERED_SERVER_CODES = frozenset({1001, 1009, 1011, 1012})
SEND_NOW = "chat.send_now"


def install() -> None:
    """Patch daphne's WebSocket protocol once per process. Safe when daphne is absent."""
    try:
        from daphne.ws_protocol import WebSocketProtocol
    except ImportError:  # pragma: no cover - daphne is a requirement
        return
    if getattr(WebSocketProtocol, "_registered_close_codes", False):
        return
    original = WebSocketProtocol.serverClose

    def server_close(self, code=None):
        if code in REGISTERED_SERVER_CODES and self.state == self.STATE_OPEN:
            self.sendCloseFrame(code=int(code), isReply=False)
        else:
            original(self, code=code)

    WebSocketProtocol.serverClose = server_close
    WebSocketProtocol._registered_close_codes = True
    _install_direct_send()
    _install_eager_writes()
    _install_lazy_debug_format()


class _Pretty:
    """``pprint.pformat(value)``, made when the log line is formatted, if ever."""

    __slots__ = ("value",)

    def __init__(self, value) -> None:
        self.value = value

    def __str__(self) -> str:
        return pprint.pformat(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self), spec)


def _install_lazy_debug_format() -> None:
    from autobahn.websocket import protocol

    if getattr(protocol, "pformat", None) is pprint.pformat:
        protocol.pformat = _Pretty


def _install_direct_send() -> None:
    from daphne.server import Server
    from daphne.ws_protocol import WebSocketProtocol

    def send_now(self, payload: bytes) -> bool:
        if self.state != self.STATE_OPEN:
            return False
        self.sendMessage(payload, False)
        return True

    original = Server.create_application

    def create_application(self, protocol, scope):
        if isinstance(protocol, WebSocketProtocol):
            scope["extensions"] = {**(scope.get("extensions") or {}), SEND_NOW: protocol.send_now}
        return original(self, protocol, scope)

    WebSocketProtocol.send_now = send_now
    Server.create_application = create_application


def _install_eager_writes() -> None:
    from twisted.internet import tcp

    original = tcp.Connection.write

    def write(self, data: bytes) -> None:
        if (
            data
            and self.connected
            and not self.disconnecting
            and not self._writeDisconnected
            and not self._tempDataLen
            and self.offset == len(self.dataBuffer)
            and type(data) is bytes
        ):
            sent = self.writeSomeData(data)
            if sent == len(data):
                return
            if isinstance(sent, int) and sent > 0:
                data = data[sent:]
            # else: would block (0) or an error (an exception instance): Twisted's own
            # path buffers it and its doWrite meets the same condition.
        original(self, data)

    tcp.Connection.write = write
