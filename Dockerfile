# One image per executor: docker build --build-arg EXECUTOR=whisper|diffusion -t speech2image-<executor> .
#   BASE_IMAGE           a CUDA runtime by default; any Debian/Ubuntu image with apt works
#   EXECUTOR             whisper or diffusion: only that executor's code and dependencies
#   BAKE_OFFLINE_MODELS  true: build the offline models (embedded whisper / tiny diffusion) into the image
ARG BASE_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu22.04
FROM ${BASE_IMAGE}

ARG EXECUTOR=whisper
ARG BAKE_OFFLINE_MODELS=false

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONPATH=/app \
    JINA_MP_START_METHOD=spawn \
    PATH=/opt/venv/bin:$PATH

# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.11 python3.11-venv ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && python3.11 -m venv /opt/venv

WORKDIR /app

# dependencies first: code changes do not reinstall them
COPY requirements-jina.txt /app/requirements-jina.txt
COPY executors/${EXECUTOR}/requirements.txt /app/executors/${EXECUTOR}/requirements.txt
RUN pip install -r /app/executors/${EXECUTOR}/requirements.txt

COPY speech2image /app/speech2image
COPY executors/__init__.py /app/executors/__init__.py
COPY executors/${EXECUTOR} /app/executors/${EXECUTOR}

RUN useradd --create-home --uid 10001 speech2image
USER 10001
ENV HOME=/home/speech2image \
    SPEECH2IMAGE_CACHE=/home/speech2image/.cache/speech2image \
    HF_HOME=/home/speech2image/.cache/huggingface
RUN if [ "$BAKE_OFFLINE_MODELS" = "true" ]; then python -m speech2image.bake "$EXECUTOR"; fi

WORKDIR /app/executors/${EXECUTOR}
ENTRYPOINT ["jina", "executor", "--uses", "config.yml"]
