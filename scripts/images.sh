#!/usr/bin/env bash
# Build or push the three caprank images (four tags: serving has a -gpu flavour).
#   scripts/images.sh build|push
# REGISTRY and TAG default to pipeline.image_registry / pipeline.image_tag of the resolved
# caprank config (so CAPRANK_CONFIG or CAPRANK_PIPELINE__IMAGE_TAG apply); image names
# come from pipeline.component_image / training_image / serving_image.
set -euo pipefail
cd "$(dirname "$0")/.."

ACTION="${1:-}"
DOCKER="${DOCKER:-docker}"
PY="${PY:-python3}"
case "$ACTION" in build|push|list) ;; *) echo "usage: $0 build|push|list" >&2; exit 2 ;; esac

read -r CFG_REGISTRY CFG_TAG COMPONENT TRAIN SERVING < <("$PY" -c '
from caprank.config import load_config
p = load_config().pipeline
print(p.image_registry.rstrip("/"), p.image_tag, p.component_image, p.training_image, p.serving_image)
')
REGISTRY="${REGISTRY:-$CFG_REGISTRY}"
TAG="${TAG:-$CFG_TAG}"
REGISTRY="${REGISTRY%/}"
CUDA_TORCH_IMAGE="${CUDA_TORCH_IMAGE:-pytorch/pytorch:2.13.0-cuda12.8-cudnn9-runtime}"

# name|dockerfile|extra build args
IMAGES=(
  "$REGISTRY/$COMPONENT:$TAG|images/component.Dockerfile|"
  "$REGISTRY/$TRAIN:$TAG|images/train-gpu.Dockerfile|--build-arg CUDA_TORCH_IMAGE=$CUDA_TORCH_IMAGE"
  "$REGISTRY/$SERVING:$TAG|images/serving.Dockerfile|"
  "$REGISTRY/$SERVING:$TAG-gpu|images/serving.Dockerfile|--build-arg BASE_IMAGE=$CUDA_TORCH_IMAGE --build-arg REQUIREMENTS=images/requirements-serving-gpu.txt"
)

if [ "$ACTION" = list ]; then
  for item in "${IMAGES[@]}"; do echo "${item%%|*}"; done
  exit 0
fi
if ! command -v "$DOCKER" >/dev/null 2>&1; then
  echo "error: '$DOCKER' not found: building and pushing images needs Docker" >&2
  exit 1
fi
if ! "$DOCKER" info >/dev/null 2>&1; then
  echo "error: no Docker engine reachable ('$DOCKER info' failed): start Docker, or run this on a machine that has it" >&2
  exit 1
fi

for item in "${IMAGES[@]}"; do
  IFS='|' read -r ref dockerfile extra <<<"$item"
  if [ "$ACTION" = build ]; then
    echo "==> docker build $ref ($dockerfile)"
    # shellcheck disable=SC2086
    "$DOCKER" build -f "$dockerfile" $extra -t "$ref" .
  else
    echo "==> docker push $ref"
    "$DOCKER" push "$ref"
  fi
done
