"""Handshake middleware: bearer tokens, sessions, and the Origin rule of PROTOCOL.md §1."""

from urllib.parse import urlparse

from channels.auth import AuthMiddleware
from channels.middleware import BaseMiddleware
from channels.security.websocket import OriginValidator, WebsocketDenier
from channels.sessions import CookieMiddleware, SessionMiddleware
from django.conf import settings
from django.contrib.auth.models import AnonymousUser

from accounts.selectors import token_plausible, tokens_users
from chatsite.batching import Batcher, per_loop

# The token lookups of handshakes that arrive while the ORM thread is busy share one
# crossing and one query (chatsite/batching.py).
_token_lookups = per_loop(lambda: Batcher(lambda raws: tokens_users(raws=raws), name="token-lookup"))


def header(scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return value
    return None


def bearer_token(scope) -> str | None:
    """The token of an ``Authorization: Bearer`` header, or None if there is none."""
    value = header(scope, b"authorization")
    if value is None:
        return None
    scheme, _, token = value.decode("latin1").partition(" ")
    if scheme.lower() != "bearer":
        return ""  # an Authorization header of another kind authenticates nobody
    return token.strip()


class TokenAuthMiddleware(BaseMiddleware):
    """A bearer token, when present, decides the user; otherwise the session does."""

    async def __call__(self, scope, receive, send):
        raw = bearer_token(scope)
        if raw is not None:
            user = await _token_lookups().submit(raw) if token_plausible(raw) else None
            scope = dict(scope, user=user or AnonymousUser(), auth="token")
        else:
            scope = dict(scope, auth="session")
        return await super().__call__(scope, receive, send)


class BearerOrSessionMiddleware:
    """A handshake with an Authorization header goes straight to ``bearer``: its token
    decides the user (TokenAuthMiddleware), so it needs no cookie parsing, no session-user
    lookup (a hop to the ORM thread) and no session wrapper around every message it is
    sent. Any other handshake goes through ``session``, Channels' session stack."""

    def __init__(self, *, bearer, session):
        self.bearer = bearer
        self.session = session

    async def __call__(self, scope, receive, send):
        app = self.bearer if bearer_token(scope) is not None else self.session
        return await app(scope, receive, send)


def AuthMiddlewareStack(inner):
    """Channels' AuthMiddlewareStack for cookie handshakes, skipped by token handshakes."""
    return BearerOrSessionMiddleware(bearer=inner, session=CookieMiddleware(SessionMiddleware(AuthMiddleware(inner))))


class AllowedHostsOriginValidator(OriginValidator):
    """Channels' origin check against ALLOWED_HOSTS (read per handshake), except that
    a bearer-token client may omit Origin: scripts and services send none."""

    def __init__(self, application):
        self.application = application

    @property
    def allowed_origins(self) -> list[str]:
        allowed = list(settings.ALLOWED_HOSTS)
        if settings.DEBUG and not allowed:
            allowed = ["localhost", "127.0.0.1", "[::1]"]
        return allowed

    async def __call__(self, scope, receive, send):
        origin = header(scope, b"origin")
        if origin is None:
            if bearer_token(scope):
                return await self.application(scope, receive, send)
            return await WebsocketDenier()(scope, receive, send)
        try:
            parsed = urlparse(origin.decode("latin1"))
        except UnicodeDecodeError:
            parsed = None
        if parsed is not None and self.valid_origin(parsed):
            return await self.application(scope, receive, send)
        return await WebsocketDenier()(scope, receive, send)
