"""The HTTP API for backend services (PROTOCOL.md §5; docs/api.md). Views are thin:
authenticate, parse (presence.api), call one service or selector, answer JSON."""

from __future__ import annotations

import logging

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils.decorators import method_decorator
from django.views import View
from django.views.decorators.csrf import csrf_exempt

from accounts.selectors import user_by_username
from presence import api
from presence.api import ApiError, ApiErrorCode, error_response
from presence.selectors import connection_detail, connections_list, connections_open, service_key_authenticate
from presence.services.moderation import connections_kick
from presence.services.push import PushError, push_send
from rooms.events import ErrorCode

logger = logging.getLogger(__name__)

API_KICK_REASON = "disconnected by a service"
CONNECTIONS_LIST_LIMIT = 1000


@method_decorator(csrf_exempt, name="dispatch")
class ApiView(View):
    """Bearer service key first, then the method; every failure answers JSON."""

    def dispatch(self, request: HttpRequest, *args, **kwargs) -> HttpResponse:
        try:
            raw = api.bearer_key(request)
            request.service_key = service_key_authenticate(raw=raw) if raw else None
            if request.service_key is None:
                message = "invalid or revoked service key" if raw else "send 'Authorization: Bearer <service key>'"
                raise ApiError(401, ApiErrorCode.UNAUTHORIZED, message)
            return super().dispatch(request, *args, **kwargs)
        except ApiError as exc:
            return error_response(status=exc.status, code=exc.code, message=exc.message)
        except PushError as exc:
            status = 404 if exc.code == ErrorCode.NOT_FOUND else 400
            return error_response(status=status, code=exc.code, message=exc.message)
        except Exception:
            logger.exception("API %s %s failed", request.method, request.path)
            return error_response(status=500, code=ApiErrorCode.INTERNAL, message="server error; try again")

    def http_method_not_allowed(self, request: HttpRequest, *args, **kwargs) -> HttpResponse:
        allowed = self._allowed_methods()
        response = error_response(
            status=405,
            code=ApiErrorCode.METHOD_NOT_ALLOWED,
            message=f"{request.method} is not allowed here; use {', '.join(allowed)}",
        )
        response["Allow"] = ", ".join(allowed)
        return response


class PushView(ApiView):
    def post(self, request: HttpRequest) -> HttpResponse:
        target, topic, data = api.push_fields(api.body_object(request))
        result = push_send(target=target, topic=topic, data=data)
        logger.info("push by service key %s: delivered %d", request.service_key.pk, result["delivered"])
        return JsonResponse(result, status=202)


class ConnectionsView(ApiView):
    def get(self, request: HttpRequest) -> HttpResponse:
        username = api.username_param(request)
        user_id = None
        if username is not None:
            user = user_by_username(username=username)
            if user is None:
                raise ApiError(404, ApiErrorCode.NOT_FOUND, "no such user")
            user_id = user.pk
        connections, more = connections_list(user_id=user_id, limit=CONNECTIONS_LIST_LIMIT)
        return JsonResponse({"connections": connections, "more": more})


class ConnectionView(ApiView):
    def get(self, request: HttpRequest, id: str) -> HttpResponse:
        connection = connection_detail(id=id)
        if connection is None:
            raise _connection_not_found()
        return JsonResponse(connection)

    def post(self, request: HttpRequest, id: str) -> HttpResponse:
        topic, data = api.notify_fields(api.body_object(request))
        return JsonResponse(push_send(target={"connection": id}, topic=topic, data=data), status=202)

    def delete(self, request: HttpRequest, id: str) -> HttpResponse:
        kicked = connections_kick(connections=connections_open().filter(pk=id), by=None, reason=API_KICK_REASON)
        if not kicked:
            raise _connection_not_found()
        logger.info("connection %s disconnected by service key %s", id, request.service_key.pk)
        return HttpResponse(status=204)


def _connection_not_found() -> ApiError:
    return ApiError(404, ApiErrorCode.NOT_FOUND, "no such open connection")


@csrf_exempt
def not_found(request: HttpRequest, *args, **kwargs) -> HttpResponse:
    """Any other path under /api/: a JSON 404, never Django's HTML page."""
    return error_response(status=404, code=ApiErrorCode.NOT_FOUND, message="no such API endpoint")
