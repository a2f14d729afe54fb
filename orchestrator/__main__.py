"""`python -m orchestrator`: settings from ORCHESTRATOR_* variables, logging, then serve."""

from orchestrator.app import create_app
from orchestrator.settings import OrchestratorSettings
from service_common.logs import configure_logging
from service_common.serve import serve


def main() -> None:
    settings = OrchestratorSettings()
    configure_logging(settings.log_level, settings.log_json)
    serve(create_app(settings), settings)


if __name__ == "__main__":
    main()
