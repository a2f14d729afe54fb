"""`python -m perf <scenario> [--quick] [--out DIR] ...`: runs one benchmark scenario (perf/scenarios/).
The embedding service's XLA compile cache is set before TensorFlow is imported, so in-process runs reuse
the services' compiled programs."""

import importlib
import os
import sys

from embedding_service.settings import EmbeddingSettings, use_xla_cache
from perf.harness.scenario import run
from perf.scenarios import NAMES


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in NAMES:
        sys.exit(f"usage: python -m perf {{{'|'.join(NAMES)}}} [--quick] [--out DIR] [--help]")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    use_xla_cache(EmbeddingSettings())
    module = importlib.import_module(f"perf.scenarios.{sys.argv[1]}")
    run(module.SCENARIO, module.__doc__ or "", sys.argv[2:])


if __name__ == "__main__":
    main()
