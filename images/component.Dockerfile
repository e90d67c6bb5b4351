# syntax=docker/dockerfile:1
# Component image (CPU): every pipeline stage, the Feast feature server and the MLflow
# tracking server. Build from the repository root:
#   docker build -f images/component.Dockerfile -t <registry>/caprank-component:<tag> .
ARG PYTHON_IMAGE=python:3.11.7-slim-bookworm

# --- build the caprank wheel with a pinned setuptools, no build isolation (no downloads)
FROM ${PYTHON_IMAGE} AS wheel
WORKDIR /src
COPY images/requirements-build.txt /tmp/requirements-build.txt
RUN pip install --no-cache-dir --no-deps -r /tmp/requirements-build.txt
COPY . /src
RUN pip wheel --no-cache-dir --no-deps --no-build-isolation --wheel-dir /dist /src

# --- runtime: pinned dependencies first (cached layer), then the library itself
FROM ${PYTHON_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    HOME=/home/caprank
RUN groupadd --gid 10001 caprank \
    && useradd --uid 10001 --gid 10001 --create-home --shell /usr/sbin/nologin caprank
COPY images/requirements-component.txt /tmp/requirements.txt
RUN pip install --no-deps -r /tmp/requirements.txt && pip check && rm /tmp/requirements.txt
COPY --from=wheel /dist/ /tmp/dist/
RUN pip install --no-deps /tmp/dist/*.whl && rm -rf /tmp/dist
LABEL org.opencontainers.image.title="caprank-component" \
      org.opencontainers.image.description="caprank pipeline stages, Feast and MLflow servers"
WORKDIR /home/caprank
USER 10001:10001
CMD ["caprank", "--help"]
