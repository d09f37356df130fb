"""The outermost handshake middleware: the client's address, and the per-IP abuse
check, before any session or token lookup touches the database."""

from __future__ import annotations

from channels.security.websocket import WebsocketDenier
from django.conf import settings

from accounts.middleware import header
from presence import abuse, policies


def scope_client_ip(scope) -> str | None:
    peer = (scope.get("client") or [None])[0]
    forwarded = header(scope, b"x-forwarded-for")
    return policies.client_ip(
        peer=peer,
        forwarded_for=forwarded.decode("latin1") if forwarded else None,
        trusted_proxies=policies.networks_parse(values=settings.PRESENCE_TRUSTED_PROXIES),
    )


class ConnectGuardMiddleware:
    """Sets scope["client_ip"] and scope["user_agent"]; refuses (403) an IP that is
    blocked or cooling down after reconnect abuse. Every handshake is counted."""

    def __init__(self, application):
        self.application = application

    async def __call__(self, scope, receive, send):
        ip = scope_client_ip(scope)
        user_agent = (header(scope, b"user-agent") or b"").decode("latin1")[:300]
        scope = dict(scope, client_ip=ip, user_agent=user_agent)
        admission = await abuse.connect_admit(kind="ip", user_id=None, ip=ip, user_agent=user_agent)
        if admission.refusal:
            return await WebsocketDenier()(scope, receive, send)
        return await self.application(scope, receive, send)
