"""`python -m embedding_service`: settings from EMBEDDING_* variables, logging, then serve."""

import os

from embedding_service.settings import EmbeddingSettings, use_xla_cache
from service_common.logs import configure_logging
from service_common.serve import serve


def main() -> None:
    settings = EmbeddingSettings()
    configure_logging(settings.log_level, settings.log_json)
    # TensorFlow's C++ errors only: its XLA cache loader logs every cached program it loads as an error
    # (a text-format parse attempt and a CPU tuning-flag mismatch), hundreds of lines per start.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    use_xla_cache(settings)
    from embedding_service.app import create_app

    serve(create_app(settings), settings)


if __name__ == "__main__":
    main()
