#!/usr/bin/env bash
# Create the deployment's Secrets with random values, each only if it does not exist yet
# (rerunning changes nothing). Each pod mounts only the Secrets it needs:
#   anomaly-db-owner   ANOMALY_PG_PASSWORD         TimescaleDB, the init step, retraining
#   anomaly-db-writer  ANOMALY_PG_WRITER_PASSWORD  the Flink job (its pods), the notifier
#   anomaly-db-reader  ANOMALY_PG_READER_PASSWORD  Grafana, the API
#   grafana-admin      GRAFANA_ADMIN_PASSWORD      Grafana
#   anomaly-api        ANOMALY_API_TOKEN ANOMALY_API_ADMIN_TOKEN   the API's bearer tokens
# Usage: deploy/k8s/make-secrets.sh [namespace]      (default: anomaly)
set -euo pipefail
NS="${1:-anomaly}"
secret() { head -c 24 /dev/urandom | base64 | tr -d '/+=' ; }
make_secret() {
  local name="$1"; shift
  if kubectl -n "$NS" get secret "$name" >/dev/null 2>&1; then
    echo "make-secrets: $name exists; left as it is"
    return
  fi
  local args=()
  for key in "$@"; do args+=("--from-literal=$key=$(secret)"); done
  kubectl -n "$NS" create secret generic "$name" "${args[@]}" >/dev/null
  echo "make-secrets: created $name ($*)"
}
kubectl get namespace "$NS" >/dev/null 2>&1 || kubectl create namespace "$NS"
make_secret anomaly-db-owner ANOMALY_PG_PASSWORD
make_secret anomaly-db-writer ANOMALY_PG_WRITER_PASSWORD
make_secret anomaly-db-reader ANOMALY_PG_READER_PASSWORD
make_secret grafana-admin GRAFANA_ADMIN_PASSWORD
make_secret anomaly-api ANOMALY_API_TOKEN ANOMALY_API_ADMIN_TOKEN
