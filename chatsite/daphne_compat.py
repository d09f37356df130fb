"""Let the application close a socket with the registered codes PROTOCOL.md uses.

Daphne hands an application's close code to autobahn's ``sendClose``, which accepts
only 1000 and 3000-4999 (application codes), and raises for 1001, 1009, 1011 and 1012,
turning a clean close into a server error (1011 or 1006 for the client). Those four are
what this protocol needs (going away, frame too large, server error, restarting), so
for them we call autobahn's ``sendCloseFrame``: the method autobahn itself uses for
protocol-level closes, which sends the frame and starts the closing handshake without
the application-code check. Everything else goes through daphne unchanged.
"""

REGISTERED_SERVER_CODES = frozenset({1001, 1009, 1011, 1012})


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
