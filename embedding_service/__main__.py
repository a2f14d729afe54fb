"""`python -m embedding_service`: settings from EMBEDDING_* variables, logging, then serve."""

from embedding_service.app import create_app
from embedding_service.settings import EmbeddingSettings
from service_common.logs import configure_logging
from service_common.serve import serve


def main() -> None:
    settings = EmbeddingSettings()
    configure_logging(settings.log_level, settings.log_json)
    serve(create_app(settings), settings)


if __name__ == "__main__":
    main()
