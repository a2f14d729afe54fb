"""TF Serving's errors: a gRPC status code and a message; REST maps the code to HTTP as TF Serving does."""

import grpc

_HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.DATA_LOSS: 500,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}
_GRPC_MESSAGE_LIMIT = 1024


class HeadError(Exception):
    """An error as TF Serving reports it: the same code over gRPC, and its HTTP status over REST."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def http_status(self) -> int:
        return _HTTP_STATUS.get(self.code, 500)

    @property
    def grpc_details(self) -> str:
        """TF Serving cuts messages over 1024 characters and marks the cut."""
        if len(self.message) <= _GRPC_MESSAGE_LIMIT:
            return self.message
        return self.message[:_GRPC_MESSAGE_LIMIT] + "...TRUNCATED"


def invalid_argument(message: str) -> HeadError:
    return HeadError(grpc.StatusCode.INVALID_ARGUMENT, message)


def not_found(message: str) -> HeadError:
    return HeadError(grpc.StatusCode.NOT_FOUND, message)
