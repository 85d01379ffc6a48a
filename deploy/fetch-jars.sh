#!/usr/bin/env bash
# Fetch the connector jars listed in pom-deps.txt with Maven into a folder, build the project's
# own jar (jvm/: the telemetry-json format and the late-event marker) into it, and drop jars no
# longer listed there (an old connector version must not linger on the classpath): the one
# way, used by deploy/local/setup.sh and deploy/docker/Dockerfile. Lines marked `client:` are
# jars of the `flink run` client alone (deploy/flink_run.py); they go to OUT_DIR/client/, which
# is neither the job's classpath nor the cluster's.
#   deploy/fetch-jars.sh OUT_DIR          (run from the project root)
set -euo pipefail
OUT=${1:?usage: deploy/fetch-jars.sh OUT_DIR}
mkdir -p "$OUT"
# Maven, quiet: its output (stray colour codes even with -q) is shown only when it fails.
mvn_quiet() { local out; out=$(mvn -q -B -Dstyle.color=never "$@" 2>&1) || { echo "$out" >&2; return 1; }; }
wanted=()
while read -r coord; do
  coord="${coord%%#*}"; coord="$(echo "$coord" | xargs)"
  [ -n "$coord" ] || continue
  folder=""
  case "$coord" in client:*) folder="client/"; coord="$(echo "${coord#client:}" | xargs)" ;; esac
  IFS=: read -r group artifact version <<<"$coord"
  [ -n "$version" ] || { echo "fetch-jars: pom-deps.txt: '$coord' is not group:artifact:version" >&2; exit 1; }
  jar="$folder$artifact-$version.jar"
  wanted+=("$jar")
  if [ ! -s "$OUT/$jar" ]; then
    echo "[jars] fetching $coord with Maven"
    mkdir -p "$OUT/$folder"
    mvn_quiet dependency:copy -Dartifact="$coord" -DoutputDirectory="$OUT/$folder" \
      || { echo "fetch-jars: Maven could not fetch $coord (is Maven Central reachable?)" >&2; exit 1; }
  fi
done < pom-deps.txt
# The project's jar: rebuilt when a file under jvm/ is newer than it.
own="anomaly-flink.jar"
wanted+=("$own")
if [ ! -s "$OUT/$own" ] || [ -n "$(find jvm -path jvm/target -prune -o -newer "$OUT/$own" -type f -print -quit)" ]; then
  echo "[jars] building $own with Maven (jvm/)"
  mvn_quiet -f jvm/pom.xml package \
    || { echo "fetch-jars: building jvm/ failed (the Maven output is above)" >&2; exit 1; }
  # A new file in its place, never written over: a running Flink may have the old one open.
  cp jvm/target/$own "$OUT/$own.new" && mv -f "$OUT/$own.new" "$OUT/$own"
fi
for f in "$OUT"/*.jar "$OUT"/client/*.jar; do
  [ -e "$f" ] || continue
  name=${f#"$OUT"/}; keep=0
  for w in "${wanted[@]}"; do [ "$w" = "$name" ] && keep=1; done
  [ $keep = 1 ] || { echo "[jars] removing $name (not in pom-deps.txt)"; rm -f "$f"; }
done
echo "[jars] ${#wanted[@]} jars in $OUT (connectors, the project's own, and the client's in client/)"
