"""`python -m embedding_service`: settings from EMBEDDING_* variables, logging, tracing, then serve."""

import os

from embedding_service.settings import EmbeddingSettings, use_xla_cache
from service_common.logs import configure_logging
from service_common.serve import serve
from service_common.tracing import setup_tracing

OPS_CONNECTIONS = 64


def main() -> None:
    settings = EmbeddingSettings()
    configure_logging(settings.log_level, settings.log_json)
    # TensorFlow's C++ errors only: its XLA cache loader logs every cached program it loads as an error
    # (a text-format parse attempt and a CPU tuning-flag mismatch), hundreds of lines per start.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    use_xla_cache(settings)
    from embedding_service.app import create_app

    # Every queued request holds at least one text: more connections than the queue bound (and a margin for
    # probes and metrics) could only wait or be refused, so uvicorn refuses them before they cost memory.
    stop_tracing = setup_tracing("embedding-service")
    try:
        serve(create_app(settings), settings, max_concurrency=settings.max_queue_texts + OPS_CONNECTIONS)
    finally:
        stop_tracing()


if __name__ == "__main__":
    main()
