"""TF Serving's REST API (port 8501): its routes, bodies and error shapes, on top of the shared runner."""

import asyncio
import json
import logging
import re
import time
from urllib.parse import unquote

import grpc
from google.protobuf import json_format
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route
from tensorflow_serving.apis import get_model_status_pb2

from head_service.errors import HeadError, invalid_argument
from head_service.json_decode import decode_inputs
from head_service.json_encode import encode_outputs
from head_service.json_parse import parse_body, signature_name
from head_service.runner import Runner
from head_service.servable import PREDICT_METHOD
from service_common import tracing

logger = logging.getLogger(__name__)

_POST = re.compile(r"/v1/models/([^/:]+)(?:/versions/(\d+)|/labels/([^/:]+))?:(classify|regress|predict)", re.I)
_GET = re.compile(r"/v1/models(?:/([^/:]+))?(?:/versions/(\d+)|/labels/([^/:]+))?(?:/(metadata))?", re.I)
_NOT_FOUND_HTML = "<HTML><HEAD>\n<TITLE>404 Not Found</TITLE>\n</HEAD><BODY>\n<H1>Not Found</H1>\n</BODY></HTML>\n"
_METHOD_FOR = {"classify": "tensorflow/serving/classify", "regress": "tensorflow/serving/regress"}
# What a gRPC call still running when the server's graceful stop runs out of time ends with (UNAVAILABLE).
STOPPED_MESSAGE = "Cancelling all calls"


def _json(text: str | bytes, status: int = 200) -> Response:
    return Response(text, status_code=status, media_type="application/json")


def _error(error: HeadError) -> Response:
    return _json(json.dumps({"error": error.message}, indent=4), error.http_status)


def _proto_json(message: object) -> str:
    return str(
        json_format.MessageToJson(
            message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True, indent=1
        )
    )


def _version(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        value = int(text)
        if value >= 2**63:
            raise ValueError
    except ValueError:
        raise invalid_argument(f"Failed to convert version: {text} to numeric.") from None
    return value


def create_rest_app(runner: Runner, prometheus_path: str | None, timeout_s: float) -> Starlette:
    async def handle(request: Request) -> Response:
        path = request.url.path
        if prometheus_path is not None and path == prometheus_path and request.method == "GET":
            return Response(runner.metrics.render(), media_type="text/plain; version=0.0.4")
        if not path.lower().startswith("/v1/"):
            return HTMLResponse(_NOT_FOUND_HTML, status_code=404)
        try:
            async with asyncio.timeout(timeout_s):
                return await _route(request, path)
        except HeadError as error:
            return _error(error)
        except TimeoutError:
            return _error(HeadError(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded"))
        except asyncio.CancelledError:
            # Only the server cancels a request: uvicorn, for one still running when its graceful stop runs
            # out of time (its own answer would be a bare text 500, as if the model had failed). Answered as
            # the gRPC port answers the same call: UNAVAILABLE, TF Serving's body.
            logger.warning("stopping: %s %s cancelled before it finished", request.method, path)
            return _error(HeadError(grpc.StatusCode.UNAVAILABLE, STOPPED_MESSAGE))
        except Exception as exc:  # TF Serving answers INTERNAL with its usual body, never a bare 500
            logger.exception("unexpected error on %s %s", request.method, path)
            return _error(HeadError(grpc.StatusCode.INTERNAL, str(exc)))

    async def _route(request: Request, path: str) -> Response:
        if request.method == "POST" and (match := _POST.fullmatch(path)):
            name, version, label, verb = match.groups()
            return await _post(request, unquote(name), _version(version), label and unquote(label), verb.lower())
        if request.method == "GET" and (match := _GET.fullmatch(path)):
            name, version, label, metadata = match.groups()
            if name is None:
                raise invalid_argument("Missing model name in request.")
            if metadata:
                return _metadata(unquote(name), _version(version), label and unquote(label))
            return _status(unquote(name), _version(version))
        raise invalid_argument(f"Malformed request: {request.method} {path}")

    def _status(name: str, version: int | None) -> Response:
        statuses = runner.manager.model(name).status(version)
        return _json(_proto_json(get_model_status_pb2.GetModelStatusResponse(model_version_status=statuses)))

    def _metadata(name: str, version: int | None, label: str | None) -> Response:
        servable = runner.manager.resolve(name, version, label)
        signature_map = servable.signature_def_map()
        body = {
            "model_spec": {"name": name, "signature_name": "", "version": str(servable.version)},
            "metadata": {
                "signature_def": json_format.MessageToDict(
                    signature_map, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
                )
            },
        }
        return _json(json.dumps(body, indent=4))

    async def _post(request: Request, name: str, version: int | None, label: str | None, verb: str) -> Response:
        started = time.perf_counter()
        status = "OK"
        try:
            doc = parse_body(await request.body())
            servable = runner.manager.resolve(name, version, label)
            key = signature_name(doc)
            signature = servable.signature(key)
            if signature is None:
                raise invalid_argument(f'Serving signature name: "{key}" not found in signature def')
            if verb != "predict":
                raise invalid_argument(
                    f"Expected {verb} signature method_name to be {_METHOD_FOR[verb]}. "
                    f"Was: {signature.proto.method_name or PREDICT_METHOD}"
                )
            inputs, row_format = decode_inputs(doc, signature.inputs)
            with tracing.served(verb, request.headers, {"model.name": name, "rpc.system": "http"}):
                outputs = await runner.run(servable, signature, inputs, [], verb)
            body = encode_outputs(outputs, row_format)
        except HeadError as error:
            status = error.code.name
            raise
        except BaseException:  # a timeout's cancellation, or a bug: counted, not as OK
            status = "INTERNAL"
            raise
        finally:
            runner.metrics.count_request(name, status)
            if status == "OK":
                runner.metrics.observe_request(name, verb, "REST", time.perf_counter() - started)
        return _json(body)

    return Starlette(routes=[Route("/{path:path}", handle, methods=["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD"])])
