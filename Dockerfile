# One image per part: docker build --build-arg EXECUTOR=whisper|diffusion|gateway -t speech2image-<part> .
#   whisper, diffusion: that executor, the core of speech2image and its own domain (asr; imaging)
#   gateway: the front door (gateway/), the core, the API rules and the options of both domains
#   BASE_IMAGE           a CUDA runtime by default; any Debian/Ubuntu image with apt works
#   EXECUTOR             whisper, diffusion or gateway: only that part's code and dependencies
#   BAKE_OFFLINE_MODELS  true: build the offline models (embedded whisper / tiny diffusion) into the image
# Build-only pip settings (a mirror, a CA bundle, local wheels) go in build-config/
# (see its README); they are used by the build stage and never reach the image.
ARG BASE_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu22.04

FROM ${BASE_IMAGE} AS base
ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONPATH=/opt/speech2image \
    JINA_OPTOUT_TELEMETRY=1 \
    ORT_DISABLE_TELEMETRY=1 \
    HF_HUB_DISABLE_TELEMETRY=1 \
    JINA_MP_START_METHOD=spawn \
    PATH=/opt/venv/bin:$PATH
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.11 python3.11-venv ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 10001 speech2image

FROM base AS dependencies
ARG EXECUTOR=whisper
ARG BAKE_OFFLINE_MODELS=false
COPY build-config /build-config
COPY pyproject.toml constraints.txt README.md /src/
# the part's extra at the versions of constraints.txt; the offline models only for a baked image;
# the package itself is uninstalled again: the image carries only its part's code (below)
RUN if [ -f /build-config/pip.conf ]; then export PIP_CONFIG_FILE=/build-config/pip.conf; fi \
    && extras="$EXECUTOR$([ "$BAKE_OFFLINE_MODELS" = true ] && [ "$EXECUTOR" = whisper ] && echo ,offline)" \
    && python3.11 -m venv /opt/venv \
    && pip install -c /src/constraints.txt "/src[$extras]" \
    && pip uninstall -y speech2image

FROM base AS code
# only what the part runs: no other executor, no other domain's models
ARG EXECUTOR=whisper
COPY speech2image /code/speech2image
COPY executors /code/executors
COPY gateway /code/gateway
RUN case "$EXECUTOR" in \
      whisper) rm -r /code/speech2image/imaging /code/speech2image/api /code/gateway /code/executors/diffusion ;; \
      diffusion) rm -r /code/speech2image/asr /code/speech2image/api /code/gateway /code/executors/whisper ;; \
      gateway) rm -r /code/executors \
               && find /code/speech2image/asr /code/speech2image/imaging -name '*.py' \
                       ! -name options.py ! -name __init__.py -delete ;; \
      *) echo "EXECUTOR must be whisper, diffusion or gateway" >&2; exit 1 ;; \
    esac \
    && ln -s "$([ "$EXECUTOR" = gateway ] && echo gateway || echo "executors/$EXECUTOR")" /code/part

FROM base
# code under /opt: Jina mounts an executor workspace volume on /app
ARG EXECUTOR=whisper
ARG BAKE_OFFLINE_MODELS=false
COPY --from=dependencies /opt/venv /opt/venv
WORKDIR /opt/speech2image
COPY --from=code /code /opt/speech2image
# the offline models are baked into /opt/models (read-only at run time: Kubernetes mounts a volume on
# ~/.cache for what is downloaded, over a read-only root file system)
RUN mkdir -p /opt/models && chown 10001 /opt/models

USER 10001
ENV HOME=/home/speech2image \
    SPEECH2IMAGE_CACHE=/opt/models \
    HF_HOME=/home/speech2image/.cache/huggingface \
    SPEECH2IMAGE_PART=${EXECUTOR}
RUN if [ "$BAKE_OFFLINE_MODELS" = "true" ] && [ "$EXECUTOR" != gateway ]; then python -m speech2image.bake "$EXECUTOR"; fi

# the part's folder (config.yml there: Jina's exports pass --uses config.yml); jina executor or jina gateway
WORKDIR /opt/speech2image/part
ENTRYPOINT ["sh", "-c", "exec jina \"$([ \"$SPEECH2IMAGE_PART\" = gateway ] && echo gateway || echo executor)\" --uses config.yml \"$@\"", "entrypoint"]
