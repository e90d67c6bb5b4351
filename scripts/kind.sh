#!/usr/bin/env bash
# A local cluster that mirrors production: kind + cert-manager + KFP standalone + KServe.
#   scripts/kind.sh up      create the cluster, install the platform, load images, apply
#   scripts/kind.sh smoke   run the pipeline once through `caprank pipeline submit`, call the ranker
#   scripts/kind.sh down    delete the cluster
# Needs docker, kind and kubectl on PATH; `make images` first (REGISTRY/TAG as there).
# Never run in this repository's CI (no Docker engine there): see docs/cluster.md.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"

# ---- pinned versions (kind node image = Kubernetes 1.32, the schema tests/ validate against)
KIND_VERSION="v0.27.0"
CERT_MANAGER_VERSION="v1.16.3"
KFP_VERSION="2.17.3"          # KFP backend matching kfp-server-api 2.17.3 / SDK 2.17
KSERVE_VERSION="v0.21.0"      # matches the kserve 0.21 SDK the manifests are checked with
PROMETHEUS_OPERATOR_VERSION="v0.80.0"  # only its PrometheusRule CRD (manifests/base alerts)
CLUSTER="caprank"
NAMESPACE="caprank"
PY="${PY:-python3}"
KFP_PORT="${KFP_PORT:-8888}"
RANKER_PORT="${RANKER_PORT:-8081}"

log() { printf '==> %s\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }
need() { command -v "$1" >/dev/null 2>&1 || die "'$1' not found on PATH (see docs/cluster.md for versions)"; }

config_images() {
  read -r CFG_REGISTRY CFG_TAG COMPONENT TRAIN SERVING < <("$PY" -c '
from caprank.config import load_config
p = load_config().pipeline
print(p.image_registry.rstrip("/"), p.image_tag, p.component_image, p.training_image, p.serving_image)
')
  REGISTRY="${REGISTRY:-$CFG_REGISTRY}"; REGISTRY="${REGISTRY%/}"
  TAG="${TAG:-$CFG_TAG}"
}

ensure_secret_env() {
  # credentials for the secretGenerators: random ones for kind, never committed
  local dir="manifests/base/secrets"
  if [ ! -f "$dir/s3.env" ]; then
    log "generating $dir/s3.env (random MinIO credentials)"
    printf 'AWS_ACCESS_KEY_ID=caprank%s\nAWS_SECRET_ACCESS_KEY=%s\n' \
      "$(openssl rand -hex 4)" "$(openssl rand -hex 20)" > "$dir/s3.env"
  fi
  if [ ! -f "$dir/postgres.env" ]; then
    log "generating $dir/postgres.env (random Postgres password)"
    printf 'POSTGRES_USER=caprank\nPOSTGRES_PASSWORD=%s\n' "$(openssl rand -hex 20)" > "$dir/postgres.env"
  fi
  if [ ! -f "$dir/id-hash.env" ]; then
    log "generating $dir/id-hash.env (random key for hashing PII-like ids)"
    printf 'CAPRANK_SECRET_ID_HASH_KEY=%s\n' "$(openssl rand -hex 32)" > "$dir/id-hash.env"
  fi
  # the pipeline pods' Secret (manifests/pipeline-env), from the same credentials
  local creds="manifests/pipeline-env/secrets/credentials.env"
  (
    set -a
    # shellcheck disable=SC1091
    . "$dir/s3.env"; . "$dir/postgres.env"; . "$dir/id-hash.env"
    printf 'CAPRANK_SERVICES__FEAST_REGISTRY=postgresql+psycopg://%s:%s@postgres.%s.svc.cluster.local:5432/feast\n' \
      "$POSTGRES_USER" "$POSTGRES_PASSWORD" "$NAMESPACE"
    printf 'CAPRANK_SERVICES__FEEDBACK_DSN=postgresql://%s:%s@postgres.%s.svc.cluster.local:5432/feedback\n' \
      "$POSTGRES_USER" "$POSTGRES_PASSWORD" "$NAMESPACE"
    printf 'AWS_ACCESS_KEY_ID=%s\nAWS_SECRET_ACCESS_KEY=%s\n' "$AWS_ACCESS_KEY_ID" "$AWS_SECRET_ACCESS_KEY"
    printf 'CAPRANK_SECRET_ID_HASH_KEY=%s\n' "$CAPRANK_SECRET_ID_HASH_KEY"
  ) > "$creds"
}

pipeline_env_names() {
  read -r CONFIG_MAP SECRET < <("$PY" -c '
from caprank.config import load_config
p = load_config().pipeline
print(p.config_map, p.secret)
')
}

kind_overlay_with_images() {
  # the kind overlay with images renamed to REGISTRY/TAG, in a git-ignored overlay
  # beside it (kustomize refuses absolute paths), so nothing committed is edited
  local dir="manifests/overlays/kind-local"
  mkdir -p "$dir"
  cat > "$dir/kustomization.yaml" <<EOF
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - ../kind
images:
  - name: ghcr.io/caprank/caprank-serving
    newName: $REGISTRY/$SERVING
    newTag: $TAG
  - name: ghcr.io/caprank/caprank-component
    newName: $REGISTRY/$COMPONENT
    newTag: $TAG
EOF
  echo "$dir"
}

up() {
  need docker; need kind; need kubectl; need openssl
  docker info >/dev/null 2>&1 || die "no Docker engine reachable"
  [ "$(kind version -q 2>/dev/null || true)" = "$KIND_VERSION" ] \
    || log "warning: kind $(kind version -q 2>/dev/null) found, $KIND_VERSION expected"
  config_images
  local images=("$REGISTRY/$COMPONENT:$TAG" "$REGISTRY/$TRAIN:$TAG" "$REGISTRY/$SERVING:$TAG")
  for ref in "${images[@]}"; do
    docker image inspect "$ref" >/dev/null 2>&1 || die "image $ref not built: run 'make images' first"
  done

  if kind get clusters | grep -qx "$CLUSTER"; then
    log "kind cluster $CLUSTER exists"
  else
    log "creating kind cluster $CLUSTER"
    kind create cluster --config kind-cluster.yaml --wait 180s
  fi

  log "cert-manager $CERT_MANAGER_VERSION"
  kubectl apply -f "https://github.com/cert-manager/cert-manager/releases/download/$CERT_MANAGER_VERSION/cert-manager.yaml"
  kubectl -n cert-manager rollout status deploy/cert-manager-webhook --timeout=300s

  log "Kubeflow Pipelines standalone $KFP_VERSION"
  kubectl apply -k "github.com/kubeflow/pipelines/manifests/kustomize/cluster-scoped-resources?ref=$KFP_VERSION"
  kubectl wait --for condition=established --timeout=120s crd/applications.app.k8s.io
  kubectl apply -k "github.com/kubeflow/pipelines/manifests/kustomize/env/platform-agnostic?ref=$KFP_VERSION"
  kubectl -n kubeflow rollout status deploy/ml-pipeline --timeout=900s

  log "KServe $KSERVE_VERSION (Standard mode: no Knative, no Istio)"
  kubectl apply --server-side -f "https://github.com/kserve/kserve/releases/download/$KSERVE_VERSION/kserve.yaml"
  kubectl -n kserve rollout status deploy/kserve-controller-manager --timeout=300s
  kubectl apply --server-side -f "https://github.com/kserve/kserve/releases/download/$KSERVE_VERSION/kserve-cluster-resources.yaml"
  kubectl -n kserve patch configmap inferenceservice-config --type merge \
    -p '{"data":{"deploy":"{\"defaultDeploymentMode\":\"Standard\"}"}}'

  log "PrometheusRule CRD (prometheus-operator $PROMETHEUS_OPERATOR_VERSION; no Prometheus)"
  kubectl apply --server-side -f "https://raw.githubusercontent.com/prometheus-operator/prometheus-operator/$PROMETHEUS_OPERATOR_VERSION/example/prometheus-operator-crd/monitoring.coreos.com_prometheusrules.yaml"
  kubectl wait --for condition=established --timeout=120s crd/prometheusrules.monitoring.coreos.com

  log "loading images into kind"
  kind load docker-image --name "$CLUSTER" "${images[@]}"

  log "applying manifests/overlays/kind"
  ensure_secret_env
  local overlay
  overlay="$(kind_overlay_with_images)"
  kubectl apply -k "$overlay"
  kubectl -n "$NAMESPACE" rollout status statefulset/postgres --timeout=300s
  for d in redis minio mlflow feast; do
    kubectl -n "$NAMESPACE" rollout status "deploy/$d" --timeout=300s
  done
  kubectl -n "$NAMESPACE" wait --for=condition=complete job/minio-buckets --timeout=300s
  log "applying manifests/pipeline-env (endpoints ConfigMap and credentials Secret for pipeline pods)"
  kubectl apply -k manifests/pipeline-env
  log "up. The ranker stays not-Ready until the first pipeline run deploys a model (make kind-smoke)."
}

smoke() {
  need kubectl; need curl
  config_images
  local pids=()
  trap 'for p in "${pids[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done' EXIT
  kubectl -n kubeflow port-forward svc/ml-pipeline "$KFP_PORT:8888" >/dev/null &
  pids+=("$!")
  sleep 3

  pipeline_env_names
  log "checking kubeflow/$CONFIG_MAP and kubeflow/$SECRET (every pipeline task reads them)"
  kubectl -n kubeflow get "configmap/$CONFIG_MAP" "secret/$SECRET" >/dev/null \
    || die "pipeline env missing: run 'scripts/kind.sh up' (applies manifests/pipeline-env)"

  log "compiling for kind (GPU pool placement without an accelerator request)"
  export CAPRANK_PIPELINE__GPU_COUNT=0
  export CAPRANK_PIPELINE__IMAGE_REGISTRY="$REGISTRY" CAPRANK_PIPELINE__IMAGE_TAG="$TAG"
  # kind nodes are small: train and embed ask for less than pipeline.resources' defaults
  export CAPRANK_PIPELINE__RESOURCES='{train: {cpu_request: "1", memory_request: 2Gi}, embed: {cpu_request: "1", memory_request: 2Gi}}'
  "$PY" -m caprank pipeline compile
  log "submitting one run (the resolved config as its config_yaml) and waiting for it"
  "$PY" -m caprank pipeline submit --host "http://127.0.0.1:$KFP_PORT" --wait --timeout 5400

  log "waiting for the ranker"
  kubectl -n "$NAMESPACE" wait --for=condition=Ready inferenceservice/caprank-ranker --timeout=900s
  kubectl -n "$NAMESPACE" port-forward svc/caprank-ranker-predictor "$RANKER_PORT:80" >/dev/null &
  pids+=("$!")
  sleep 3
  log "calling the endpoint"
  curl -fsS -X POST "http://127.0.0.1:$RANKER_PORT/v1/models/caprank-ranker:predict" \
    -H 'Content-Type: application/json' \
    -d '{"instances": [{"intent": "plan a dinner and order the groceries", "top_k": 5}]}'
  echo
  log "smoke passed"
}

down() {
  need kind
  kind delete cluster --name "$CLUSTER"
}

case "${1:-}" in
  up) up ;;
  smoke) smoke ;;
  down) down ;;
  *) echo "usage: $0 up|smoke|down" >&2; exit 2 ;;
esac
