#!/usr/bin/env bash
# Write deploy/docker/.env (mode 600) with random passwords for the compose deployment, unless
# it exists. docker compose reads it; nothing else stores the passwords.
set -euo pipefail
ENV_FILE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/.env"
if [ -f "$ENV_FILE" ]; then
  echo "make-env: $ENV_FILE exists; left as it is"
  exit 0
fi
secret() { head -c 24 /dev/urandom | base64 | tr -d '/+=' ; }
umask 077
{
  echo "ANOMALY_PG_PASSWORD=$(secret)"
  echo "ANOMALY_PG_WRITER_PASSWORD=$(secret)"
  echo "ANOMALY_PG_READER_PASSWORD=$(secret)"
  echo "GRAFANA_ADMIN_PASSWORD=$(secret)"
  echo "ANOMALY_API_TOKEN=$(secret)"
  echo "ANOMALY_API_ADMIN_TOKEN=$(secret)"
} > "$ENV_FILE"
echo "make-env: wrote $ENV_FILE (mode 600): PostgreSQL owner, writer and reader, Grafana admin, the API's tokens"
