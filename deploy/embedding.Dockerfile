# syntax=docker/dockerfile:1
# The embedding service. CUDA-capable: TensorFlow's own GPU path, `tensorflow[and-cuda]` (the `gpu`
# extra), brings the CUDA and cuDNN user-space libraries as NVIDIA's pip wheels, so the base is plain
# Python 3.11 and the host only needs the NVIDIA driver and container toolkit. Build a CPU-only image
# with `--build-arg EXTRAS=ml`. Models are not baked in: they come from deploy/models.Dockerfile, as a
# volume (compose) or an init container (k8s), at EMBEDDING_MODEL_DIR.
#   docker build -f deploy/embedding.Dockerfile -t split-embedding/embedding-service:0.1.0-gpu .
# Pin by digest when releasing: `docker buildx imagetools inspect python:3.11.13-slim-bookworm`.

FROM python:3.11.13-slim-bookworm AS build
ARG EXTRAS=ml,gpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/venv
COPY pyproject.toml ./
COPY service_common/ service_common/
COPY embedding_service/ embedding_service/
RUN /opt/venv/bin/pip install ".[${EXTRAS}]"

FROM python:3.11.13-slim-bookworm
RUN groupadd --system --gid 10001 app && useradd --system --uid 10001 --gid app --no-create-home app
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    HF_HUB_OFFLINE=1 \
    TF_CPP_MIN_LOG_LEVEL=2 \
    EMBEDDING_HOST=0.0.0.0 \
    EMBEDDING_PORT=8081 \
    EMBEDDING_MODEL_DIR=/models/encoder \
    EMBEDDING_XLA_CACHE_DIR=/tmp/xla-cache
WORKDIR /tmp
USER 10001:10001
EXPOSE 8081
# Healthy = ready: the model loaded and warm (OpenVINO on CPU: seconds; TensorFlow compiling every XLA
# batch shape: 30-60 s on CPU, more on a cold GPU).
HEALTHCHECK --interval=10s --timeout=3s --start-period=180s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(f\"http://127.0.0.1:{os.environ['EMBEDDING_PORT']}/readyz\", timeout=2)"]
ENTRYPOINT ["python", "-m", "embedding_service"]
