"""`python -m perf`: the benchmark suite (perf/suite.py), with the embedding service's XLA compile cache
set before TensorFlow is imported, so the in-process ceiling reuses the service's compiled programs."""

import os

from embedding_service.settings import EmbeddingSettings, use_xla_cache


def main() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    use_xla_cache(EmbeddingSettings())
    from perf.suite import main as run_suite

    run_suite()


if __name__ == "__main__":
    main()
