# syntax=docker/dockerfile:1
# Likeness images:
#   docker build --target bot -t likeness-bot .       the chat bot (no torch, no GPU)
#   docker build --target worker -t likeness-worker .  a CUDA GPU worker (`likeness worker`)

ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim AS bot
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    LIKENESS_DATA_DIR=/data
WORKDIR /app
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY router ./router
COPY characters ./characters
COPY jobs ./jobs
RUN pip install --no-cache-dir . \
    && useradd --create-home --uid 10001 likeness \
    && mkdir -p /data && chown likeness /data
USER 10001
VOLUME ["/data"]
ENTRYPOINT ["likeness"]
CMD ["--help"]

FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04 AS worker
ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    LIKENESS_DATA_DIR=/data \
    HF_HOME=/data/hf
# Ubuntu's point releases replace package versions in the archive; pinning them breaks rebuilds.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/likeness
ENV PATH=/opt/likeness/bin:$PATH
# The CUDA build of torch first, so the worker extra keeps it.
RUN pip install --no-cache-dir torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128
WORKDIR /app
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY router ./router
COPY characters ./characters
COPY jobs ./jobs
# The project itself, from this folder; its dependency bounds live in pyproject.toml.
# hadolint ignore=DL3013
RUN pip install --no-cache-dir ".[worker]" \
    && useradd --create-home --uid 10001 likeness \
    && mkdir -p /data && chown likeness /data
USER 10001
VOLUME ["/data"]
ENTRYPOINT ["likeness"]
CMD ["worker"]
