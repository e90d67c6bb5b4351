# syntax=docker/dockerfile:1
# Serving image: the KServe predictor (`python -m serving`). CPU by default; the GPU
# flavour swaps the base for the CUDA PyTorch image and the pins for the ones without
# torch (`make images` builds both):
#   docker build -f images/serving.Dockerfile -t <registry>/caprank-serving:<tag> .
#   docker build -f images/serving.Dockerfile \
#     --build-arg BASE_IMAGE=pytorch/pytorch:2.13.0-cuda12.8-cudnn9-runtime \
#     --build-arg REQUIREMENTS=images/requirements-serving-gpu.txt \
#     -t <registry>/caprank-serving:<tag>-gpu .
ARG PYTHON_IMAGE=python:3.11.7-slim-bookworm
ARG BASE_IMAGE=python:3.11.7-slim-bookworm

FROM ${PYTHON_IMAGE} AS wheel
WORKDIR /src
COPY images/requirements-build.txt /tmp/requirements-build.txt
RUN pip install --no-cache-dir --no-deps -r /tmp/requirements-build.txt
COPY . /src
RUN pip wheel --no-cache-dir --no-deps --no-build-isolation --wheel-dir /dist /src

FROM ${BASE_IMAGE}
ARG REQUIREMENTS=images/requirements-serving.txt
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    HOME=/home/caprank
RUN groupadd --gid 10001 caprank \
    && useradd --uid 10001 --gid 10001 --create-home --shell /usr/sbin/nologin caprank
COPY ${REQUIREMENTS} /tmp/requirements.txt
RUN pip install --no-deps -r /tmp/requirements.txt && pip check && rm /tmp/requirements.txt
COPY --from=wheel /dist/ /tmp/dist/
RUN pip install --no-deps /tmp/dist/*.whl && rm -rf /tmp/dist
LABEL org.opencontainers.image.title="caprank-serving" \
      org.opencontainers.image.description="caprank KServe predictor"
WORKDIR /home/caprank
USER 10001:10001
EXPOSE 8080
ENTRYPOINT ["python", "-m", "serving"]
