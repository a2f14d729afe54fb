"""`python -m embedding_service`: settings from EMBEDDING_* variables, logging, then serve."""

import os

from embedding_service.settings import EmbeddingSettings
from service_common.logs import configure_logging
from service_common.serve import serve


def main() -> None:
    settings = EmbeddingSettings()
    configure_logging(settings.log_level, settings.log_json)
    # TensorFlow's C++ errors only: its XLA cache loader logs every cached program it loads as an error
    # (a text-format parse attempt and a CPU tuning-flag mismatch), hundreds of lines per start.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if settings.xla and settings.xla_cache_dir:
        # TensorFlow reads its XLA flags when first imported, so they are set before the app is.
        flag = f"--tf_xla_persistent_cache_directory={settings.xla_cache_dir}"
        os.environ["TF_XLA_FLAGS"] = f"{os.environ.get('TF_XLA_FLAGS', '')} {flag}".strip()
    from embedding_service.app import create_app

    serve(create_app(settings), settings)


if __name__ == "__main__":
    main()
