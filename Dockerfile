# syntax=docker/dockerfile:1
# stylestream server image.
#   GPU (default): docker build -t stylestream .
#   CPU only:      docker build --build-arg VARIANT=cpu -t stylestream:cpu .
#   more extras:   docker build --build-arg VARIANT=cpu --build-arg EXTRAS=triton -t stylestream:cpu-triton .
#   run:           docker run --gpus all -p 8080:8080 -v ./plugins:/plugins -v ./runs:/runs stylestream
#   It binds 0.0.0.0, so it is never open: with no STYLESTREAM_TOKEN (e.g. --env-file) it generates a token
#   and prints the page URL carrying it (docker logs); --no-auth is the explicit way to an open server.
# pip installs the package from pyproject.toml with the lines README shows: ".[gpu,trt]" (GPU) or "." (CPU);
# tests/test_dockerfile.py keeps the two in step.

ARG VARIANT=gpu

# ---- GPU base: CUDA + cuDNN runtime libraries for onnxruntime-gpu and TensorRT. PyTorch wheels bring
# their own CUDA libraries, so only the driver must come from the host (--gpus all).
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04 AS base-gpu
# What pip installs: the package with its GPU extras.
ENV STYLESTREAM_INSTALL=".[gpu,trt]"
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/venv

# ---- CPU base: plain Python; onnxruntime (CPU) and torch come from the package's own dependencies.
FROM python:3.11-slim-bookworm AS base-cpu
ENV STYLESTREAM_INSTALL="."
RUN python -m venv /opt/venv

# ---- the image
# hadolint ignore=DL3006
FROM base-${VARIANT} AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1 \
    STYLESTREAM_PLUGINS=/plugins \
    XDG_CACHE_HOME=/runs/.cache

WORKDIR /opt/stylestream
COPY pyproject.toml README.md ./
COPY stylestream ./stylestream
# onnxruntime (a core dependency) and onnxruntime-gpu install the same Python package, so whichever
# pip unpacks last wins; reinstalling the GPU build makes sure the CUDA provider is the one present.
# The package's own dependencies carry the version bounds (pyproject.toml), as in CI.
# EXTRAS adds extras to the variant's, e.g. --build-arg EXTRAS=triton for the serve tier of docs/scaling.md.
ARG EXTRAS=""
# hadolint ignore=DL3013
RUN spec="${STYLESTREAM_INSTALL}" \
    && if [ -n "${EXTRAS}" ]; then case "$spec" in *]) spec="${spec%]},${EXTRAS}]" ;; *) spec="${spec}[${EXTRAS}]" ;; esac; fi \
    && echo "pip install $spec" && pip install "$spec" \
    && if pip show onnxruntime-gpu >/dev/null 2>&1; then \
        pip uninstall -y onnxruntime && pip install --force-reinstall --no-deps "onnxruntime-gpu>=1.18"; \
    fi

# Non-root: the server needs no privileges; /plugins and /runs are writable by it for mounted volumes.
RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin stylestream \
    && mkdir -p /plugins /runs \
    && chown stylestream:stylestream /plugins /runs
USER 10001:10001
WORKDIR /runs
VOLUME ["/plugins", "/runs"]

EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4)"]

CMD ["stylestream", "serve", "--host", "0.0.0.0"]
