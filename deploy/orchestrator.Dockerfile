# syntax=docker/dockerfile:1
# The orchestrator: slim Python, the project's base dependencies only (no TensorFlow, no extras).
#   docker build -f deploy/orchestrator.Dockerfile -t split-embedding/orchestrator:0.1.0 .
# Pin by digest when releasing: `docker buildx imagetools inspect python:3.11.13-slim-bookworm`.

FROM python:3.11.13-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/venv
COPY pyproject.toml ./
COPY service_common/ service_common/
COPY orchestrator/ orchestrator/
RUN /opt/venv/bin/pip install .

FROM python:3.11.13-slim-bookworm
RUN groupadd --system --gid 10001 app && useradd --system --uid 10001 --gid app --no-create-home app
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    ORCHESTRATOR_HOST=0.0.0.0 \
    ORCHESTRATOR_PORT=8080
WORKDIR /tmp
USER 10001:10001
EXPOSE 8080
# /healthz, not /readyz: readiness depends on the downstreams, and a container is not restarted for them.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(f\"http://127.0.0.1:{os.environ['ORCHESTRATOR_PORT']}/healthz\", timeout=2)"]
ENTRYPOINT ["python", "-m", "orchestrator"]
