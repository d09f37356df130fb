"""The error a service, selector or frame parser raises for the client to see."""

from rooms.events import ErrorCode


class ChatError(Exception):
    """Turned into one `error` frame by the consumer; never closes the socket."""

    def __init__(self, code: ErrorCode, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def invalid(message: str) -> ChatError:
    return ChatError(ErrorCode.INVALID, message)


def not_found(message: str) -> ChatError:
    return ChatError(ErrorCode.NOT_FOUND, message)


def forbidden(message: str) -> ChatError:
    return ChatError(ErrorCode.FORBIDDEN, message)
