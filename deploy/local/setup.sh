#!/usr/bin/env bash
# Install everything the local stack and the tests need. Idempotent: each step checks what is
# already there and does only what is missing or out of date.
#   1. Debian packages: PostgreSQL server, Java 17, Maven, Prometheus, collectd (only if missing)
#   2. .venv with the pinned Python packages (pyproject.toml + constraints.txt)
#   3. Flink connector jars listed in pom-deps.txt -> .deps/jars/
#   4. Apache Kafka broker jars (deploy/local/kafka-broker-pom.xml) -> .deps/kafka/libs/
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
START=$(date +%s)
say() { echo "[setup] $*"; }
# Maven, quiet: its output (stray colour codes even with -q) is shown only when it fails.
mvn_quiet() { local out; out=$(mvn -q -B -Dstyle.color=never "$@" 2>&1) || { echo "$out" >&2; return 1; }; }
fail() { echo "[setup] error: $*" >&2; exit 1; }

# --- 1. system packages ---------------------------------------------------------------------
need_apt=()
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need_apt+=(postgresql)
command -v java >/dev/null 2>&1 || need_apt+=(openjdk-17-jre-headless)
command -v mvn >/dev/null 2>&1 || need_apt+=(maven)
# Prometheus: the tests run the job-health dashboard's queries on a real one (not a service).
command -v prometheus >/dev/null 2>&1 || need_apt+=(prometheus)
command -v prometheus-alertmanager >/dev/null 2>&1 || need_apt+=(prometheus-alertmanager)
# collectd, the metrics agent of `make demo-agent` and the agent tests (deploy/local/agent.py):
# its write_kafka plugin needs librdkafka and, for Format JSON, yajl.
have_deb() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "ok installed"; }
for pkg in collectd-core libyajl2 librdkafka1; do have_deb "$pkg" || need_apt+=("$pkg"); done
command -v python3.11 >/dev/null 2>&1 || command -v python3 >/dev/null 2>&1 || need_apt+=(python3 python3-venv)
if ((${#need_apt[@]})); then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  say "installing Debian packages: ${need_apt[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  # The packages create and may start a system PostgreSQL on 5432 and a Prometheus on 9090
  # (collectd-core ships no configuration: its service does not start); the stack and the
  # tests run their own.
else
  say "system packages present (PostgreSQL, Java, Maven, Prometheus, Alertmanager, collectd)"
fi

# --- 2. Python virtualenv -------------------------------------------------------------------
# deploy/install-python.sh is also what the cluster image runs (deploy/docker/Dockerfile).
STAMP=.venv/.installed
WANT=$(cat pyproject.toml constraints.txt deploy/install-python.sh | sha256sum | cut -c1-16)
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ] && [ -x .venv/bin/python ]; then
  say "Python packages up to date (.venv)"
else
  say "installing pinned Python packages into .venv (first time: a few minutes)"
  deploy/install-python.sh .venv dev || fail "installing the Python packages failed (see above)"
  echo "$WANT" > "$STAMP"
fi

# --- 3. connector jars from pom-deps.txt -------------------------------------------------------
# The same script fills the cluster image's jar folder (deploy/docker/Dockerfile).
deploy/fetch-jars.sh .deps/jars | sed 's/^\[jars\]/[setup]/' || fail "fetching the connector jars failed"

# --- 4. Kafka broker ----------------------------------------------------------------------------
KSTAMP=.deps/kafka/.installed
KWANT=$(sha256sum deploy/local/kafka-broker-pom.xml | cut -c1-16)
if [ -f "$KSTAMP" ] && [ "$(cat "$KSTAMP")" = "$KWANT" ]; then
  say "Kafka broker jars up to date (.deps/kafka/libs)"
else
  say "fetching the Apache Kafka broker and its dependencies with Maven"
  rm -rf .deps/kafka/libs
  mvn_quiet -f deploy/local/kafka-broker-pom.xml dependency:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$ROOT/.deps/kafka/libs" \
    || fail "Maven could not fetch the Kafka broker"
  echo "$KWANT" > "$KSTAMP"
fi

say "done in $(( $(date +%s) - START )) s"
