"""W3C Trace Context on every hop, and OpenTelemetry spans exported over OTLP/HTTP when configured.

Tracing is on when `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set, and
`OTEL_SDK_DISABLED` is not `true`; the SDK reads every other standard variable itself (`OTEL_SERVICE_NAME`,
`OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER` and its `_ARG`, `OTEL_BSP_*`, `OTEL_EXPORTER_OTLP_*`).
Off, no SDK is even imported and no span is made: an incoming `traceparent` is still continued, so the
hops, the logs and the `traceresponse` header carry the caller's trace id, but nothing is recorded.

On, the sampling decision is the trace's root's alone (the SDK's `parentbased_*` samplers, its default
among them): a span under a parent that was not sampled is never built, its parent stays current, and the
hops carry the trace on unsampled. The SDK spends tens of microseconds building a span even when it records
nothing, and a /classify makes four in the orchestrator alone: an unsampled request now pays for its root
span only (issue 24)."""

import os
from collections.abc import Callable, Iterator, Mapping, MutableMapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext

from opentelemetry import context, trace
from opentelemetry.trace import Link, Span, SpanContext, SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

TRACEPARENT = "traceparent"
TRACERESPONSE = "traceresponse"  # W3C Trace Context level 2: the trace and span that answered

_PROPAGATOR = TraceContextTextMapPropagator()
_NOTHING = nullcontext(None)  # what a span is while tracing is off: reusable, and nearly free
_enabled = False
_tracer: trace.Tracer = trace.NoOpTracer()
_parent_decides = False  # the sampler follows a parent's decision: an unsampled parent's spans are skipped


def enabled() -> bool:
    return _enabled


def setup_tracing(service_name: str) -> Callable[[], None]:
    """Turns tracing on when an OTLP endpoint is configured; returns what flushes and stops it at exit.
    `service_name` is the default of `OTEL_SERVICE_NAME`."""
    global _enabled, _tracer, _parent_decides
    endpoint = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    if not endpoint or os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return lambda: None
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import SERVICE_NAME, OTELResourceDetector, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.sampling import ParentBased

    named = SERVICE_NAME in OTELResourceDetector().detect().attributes
    provider = TracerProvider(resource=Resource.create({} if named else {SERVICE_NAME: service_name}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    _tracer = provider.get_tracer("split-embedding")  # once: getting one costs as much as a span
    _parent_decides = isinstance(provider.sampler, ParentBased)
    _enabled = True
    return provider.shutdown


def extract(headers: Mapping[str, str]) -> context.Context:
    """The caller's trace context from `traceparent`/`tracestate`; a malformed one is ignored (a new trace)."""
    return _PROPAGATOR.extract(headers)


def inject(carrier: MutableMapping[str, str]) -> None:
    """Adds the current span's `traceparent` (and `tracestate`) to outgoing headers or gRPC metadata."""
    _PROPAGATOR.inject(carrier)


def current() -> SpanContext:
    return trace.get_current_span().get_span_context()


def ids() -> tuple[str, str]:
    """The current trace and span ids, hex, or ("-", "-") outside any trace: what log lines carry."""
    span = current()
    if not span.is_valid:
        return "-", "-"
    return trace.format_trace_id(span.trace_id), trace.format_span_id(span.span_id)


def traceresponse() -> str | None:
    span = current()
    if not span.is_valid:
        return None
    flags = "01" if span.trace_flags.sampled else "00"
    return f"00-{trace.format_trace_id(span.trace_id)}-{trace.format_span_id(span.span_id)}-{flags}"


def span(
    name: str,
    *,
    kind: SpanKind = SpanKind.INTERNAL,
    parent: context.Context | SpanContext | None = None,
    links: Sequence[SpanContext] = (),
    attributes: Mapping[str, str | int | float | bool] | None = None,
) -> AbstractContextManager[Span | None]:
    """A span, current inside the block, when tracing is on and its trace is sampled (else nothing, and
    None). `parent`: a context or a span to start under instead of the current one (current inside the
    block, even when no span is built); `links`: the other requests a shared call serves, each its own trace."""
    if not _enabled:
        return _NOTHING
    under = _span_context(parent)
    if isinstance(parent, SpanContext):
        parent = trace.set_span_in_context(trace.NonRecordingSpan(parent))
    if _parent_decides and _unsampled(under):
        return _NOTHING if parent is None else continued(parent)
    valid = [Link(link) for link in links if link.is_valid]
    return _tracer.start_as_current_span(name, context=parent, kind=kind, links=valid, attributes=attributes)


def record(name: str, start_ns: int, end_ns: int, attributes: Mapping[str, str | int]) -> None:
    """A span, under the current one, for a stretch already over (its times measured where no span could
    be open: a request's wait in a queue that another task drains)."""
    if _enabled and not (_parent_decides and _unsampled(current())):
        _tracer.start_span(name, start_time=start_ns, attributes=attributes).end(end_time=end_ns)


def _span_context(parent: context.Context | SpanContext | None) -> SpanContext:
    if isinstance(parent, SpanContext):
        return parent
    return trace.get_current_span(parent).get_span_context()


def _unsampled(span_context: SpanContext) -> bool:
    return span_context.is_valid and not span_context.trace_flags.sampled


def served(name: str, headers: Mapping[str, str], attributes: Mapping[str, str | int]) -> AbstractContextManager[None]:
    """A server span under the caller's trace context in `headers` (HTTP headers, gRPC metadata)."""
    if not _enabled:
        return _NOTHING
    return _served(name, headers, attributes)


@contextmanager
def _served(name: str, headers: Mapping[str, str], attributes: Mapping[str, str | int]) -> Iterator[None]:
    with continued(extract(headers)), span(name, kind=SpanKind.SERVER, attributes=attributes):
        yield


@contextmanager
def continued(ctx: context.Context) -> Iterator[None]:
    """Makes `ctx` (a caller's, from `extract`) current inside the block."""
    token = context.attach(ctx)
    try:
        yield
    finally:
        context.detach(token)
