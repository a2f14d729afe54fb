# syntax=docker/dockerfile:1
# The head: the official TensorFlow Serving image with the head service's config files
# (head_service/tfserving/, the one source of truth) at /config and every shipped head at
# /models/heads/<name>/<version> (the base paths models.config names), from the model image
# (deploy/models.Dockerfile; build that one first).
# Kubernetes runs the official image itself, with the same files from a ConfigMap and the heads from
# an init container; compose runs it with both mounted. This image is for a plain `docker run`.
#   docker build -f deploy/head.Dockerfile -t split-embedding/head:0.1.0 .
# The official image (ubuntu:22.04, ca-certificates only) has bash but no curl or wget, hence the
# /dev/tcp health check. Pin by digest when releasing: `docker buildx imagetools inspect tensorflow/serving:2.20.0`.
FROM split-embedding/models:0.1.0 AS models

FROM tensorflow/serving:2.20.0
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN groupadd --system --gid 10001 serving && useradd --system --uid 10001 --gid serving --no-create-home serving
COPY --chown=10001:10001 head_service/tfserving/models.config head_service/tfserving/batching.config head_service/tfserving/monitoring.config /config/
COPY --from=models --chown=10001:10001 /models/heads /models/heads
USER 10001:10001
EXPOSE 8500 8501
# Ready = the default head's latest version is AVAILABLE: metadata is a 404 until then (the ports open only
# once every configured head has loaded).
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
    CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/8501 && printf 'GET /v1/models/sentiment/metadata HTTP/1.0\\r\\n\\r\\n' >&3 && head -1 <&3 | grep -q ' 200 '"]
ENTRYPOINT ["tensorflow_model_server", "--port=8500", "--rest_api_port=8501", \
            "--model_config_file=/config/models.config", \
            "--enable_batching", "--batching_parameters_file=/config/batching.config", \
            "--monitoring_config_file=/config/monitoring.config", \
            "--file_system_poll_wait_seconds=5", "--model_config_file_poll_wait_seconds=30"]
