"""ASGI entry point: HTTP through Django, WebSockets through Channels.

As in the Channels tutorial, ``get_asgi_application()`` comes first so that apps
are loaded before any consumer or model is imported.
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from accounts.middleware import AllowedHostsOriginValidator, AuthMiddlewareStack, TokenAuthMiddleware  # noqa: E402
from chatsite import daphne_compat  # noqa: E402
from chatsite.routing import websocket_urlpatterns  # noqa: E402
from presence.middleware import ConnectGuardMiddleware  # noqa: E402

daphne_compat.install()  # close codes 1001/1009/1012 from the application (see module)

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        # Outermost first: the per-IP abuse check runs before any session or token lookup.
        "websocket": ConnectGuardMiddleware(
            AllowedHostsOriginValidator(AuthMiddlewareStack(TokenAuthMiddleware(URLRouter(websocket_urlpatterns))))
        ),
    }
)
