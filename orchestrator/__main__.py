"""`python -m orchestrator`: settings from ORCHESTRATOR_* variables, logging, tracing, then serve."""

from orchestrator.app import create_app
from orchestrator.settings import OrchestratorSettings
from service_common.logs import configure_logging
from service_common.serve import serve
from service_common.tracing import setup_tracing


def main() -> None:
    settings = OrchestratorSettings()
    configure_logging(settings.log_level, settings.log_json)
    stop_tracing = setup_tracing("orchestrator")
    try:
        serve(create_app(settings), settings)
    finally:
        stop_tracing()


if __name__ == "__main__":
    main()
