"""One error tree, one table, one JSON shape (OpenAI's) for every service."""

from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException


class ServiceError(Exception):
    """Base of every error a client sees; subclasses fix the status and type."""

    status_code = 500
    error_type = "server_error"
    headers: dict[str, str] = {}  # noqa: RUF012 - class default, never mutated

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code

    def body(self) -> dict[str, dict[str, str | None]]:
        return {
            "error": {
                "message": self.message,
                "type": self.error_type,
                "param": self.param,
                "code": self.code,
            }
        }


class InvalidRequestError(ServiceError):
    status_code = 400
    error_type = "invalid_request_error"


class UnauthorizedError(ServiceError):
    """No API key, or not one of the configured ones: the body never says which keys exist."""

    status_code = 401
    error_type = "authentication_error"
    headers = {"WWW-Authenticate": "Bearer"}  # noqa: RUF012


class NotFoundError(InvalidRequestError):
    status_code = 404


class MethodNotAllowedError(InvalidRequestError):
    status_code = 405


class RequestTimeoutError(InvalidRequestError):
    """The request's body did not arrive in time."""

    status_code = 408


class PayloadTooLargeError(InvalidRequestError):
    status_code = 413


class OverloadedError(ServiceError):
    """The queue is full: the caller should back off and retry."""

    status_code = 429
    error_type = "overloaded_error"

    def __init__(self, message: str, *, retry_after_s: int = 1, code: str = "overloaded") -> None:
        super().__init__(message, code=code)
        self.headers = {"Retry-After": str(retry_after_s)}


class UnavailableError(ServiceError):
    status_code = 503
    error_type = "unavailable_error"
    headers = {"Retry-After": "1"}  # noqa: RUF012


class BadGatewayError(ServiceError):
    """A downstream service answered, but not with anything we can use."""

    status_code = 502
    error_type = "upstream_error"


class DeadlineExceededError(ServiceError):
    status_code = 504
    error_type = "timeout_error"


def _param(loc: tuple[int | str, ...]) -> str:
    """('body', 'input', 3) -> 'input[3]'."""
    parts = [p for p in loc if p != "body"]
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "body"


def validation_error(errors: Sequence[Mapping[str, Any]]) -> InvalidRequestError:
    """A 400 naming the first field at fault, from FastAPI's or pydantic's list of validation errors."""
    first = errors[0]
    param = _param(tuple(first.get("loc", ())))
    if first.get("type") == "json_invalid":
        return InvalidRequestError("request body is not valid JSON", param="body", code="invalid_json")
    if param == "body":
        return InvalidRequestError(
            "request body must be a JSON object sent with Content-Type: application/json",
            param="body",
            code="invalid_body",
        )
    return InvalidRequestError(f"{param}: {first.get('msg', 'invalid value')}", param=param, code="invalid_value")


def unparsable_body(exc: ValueError | RecursionError) -> InvalidRequestError:
    """A body JSON cannot read: not JSON, not UTF-8, nested too deeply, integers too long."""
    reason = "nested too deeply" if isinstance(exc, RecursionError) else "not valid JSON"
    return InvalidRequestError(f"request body is {reason}", param="body", code="invalid_json")


def install_error_handlers(app: FastAPI) -> None:
    async def on_service_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ServiceError)
        return JSONResponse(exc.body(), status_code=exc.status_code, headers=exc.headers)

    async def on_validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return await on_service_error(request, validation_error(exc.errors()))

    async def on_http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        if exc.status_code == 400 and isinstance(exc.__cause__, ValueError | RecursionError):
            # FastAPI's body parser failing past json.JSONDecodeError: bad UTF-8, deep nesting, oversized integers.
            return await on_service_error(request, unparsable_body(exc.__cause__))
        error = ServiceError(str(exc.detail), code=str(exc.status_code))
        error.status_code = exc.status_code
        error.error_type = "invalid_request_error" if exc.status_code < 500 else "server_error"
        return await on_service_error(request, error)

    app.add_exception_handler(ServiceError, on_service_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(HTTPException, on_http_error)
