#!/usr/bin/env bash
# docker/compose.yml in containers, as it is, on a machine with podman but no Docker engine and
# no container registry (this project's development and CI machines reach only Debian's and the
# language package registries). `make trial` (root). It
#   1. makes the base image python:3.11-slim-bookworm from Debian bookworm (debootstrap: its
#      Python 3.11), and stand-ins for postgres:16, redis:7 and prom/prometheus from Debian's
#      PostgreSQL 15, Redis 7.0 and Prometheus 2.42 (*.Containerfile), unless those exist;
#   2. builds the ThingLinks image from docker/Dockerfile;
#   3. runs `docker-compose --profile monitoring up` (Debian's Compose v1 on podman's Docker
#      API) for every service but Grafana (not packaged by Debian), with a generated .env
#      (METRICS_TOKEN for Prometheus), two ingest replicas, and limits.yml (this machine cannot grant the edge 200,000
#      open files); podman runs healthchecks from systemd timers, which this machine has not:
#      a loop here runs them (docker/healthcheck.py in the app containers);
#   4. waits until every service is healthy and migrate has exited 0, creates the demo device
#      in the web container, and runs check.py: device -> telemetry -> rule -> command,
#      /metrics listing every process, Prometheus scraping both targets and evaluating every
#      shipped alert without error, and EdgeWorkerRestarts firing after a worker is killed;
#   5. removes the containers and volumes.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
WORK="${TRIAL_DIR:-$ROOT/var/trial}"
PROJECT=tltrial
PY="${PYTHON:-$ROOT/.venv/bin/python}"
BASE_IMAGE=docker.io/library/python:3.11-slim-bookworm
started=$(date +%s)
say() { echo "== trial ($(($(date +%s) - started)) s): $*"; }

[ "$(id -u)" = 0 ] || { echo "docker/trial/run.sh runs rootful podman: run it as root" >&2; exit 2; }
for tool in podman debootstrap docker-compose; do
  command -v "$tool" >/dev/null || { echo "needs $tool (apt-get install podman debootstrap docker-compose)" >&2; exit 2; }
done
# What an earlier run left (TRIAL_KEEP=1, or a run that was killed).
leftover=$(podman ps -aq --filter "label=com.docker.compose.project=$PROJECT")
[ -z "$leftover" ] || podman rm -f $leftover >/dev/null 2>&1
leftover=$(podman volume ls -q --filter "label=com.docker.compose.project=$PROJECT")
[ -z "$leftover" ] || podman volume rm -f $leftover >/dev/null 2>&1
for port in 8000 11883 18999 18901 18080 9090; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "port $port is in use: compose.yml publishes it (stop what listens there)" >&2; exit 2
  fi
done
mkdir -p "$WORK"
# This machine's hard open-files limit is below podman's default: name the limits.
export CONTAINERS_CONF="$WORK/containers.conf"
printf '[containers]\ndefault_ulimits = ["nofile=16384:16384", "nproc=4096:4096"]\n' > "$CONTAINERS_CONF"

if ! podman image exists "$BASE_IMAGE"; then
  say "base image from Debian bookworm (debootstrap)"
  rm -rf "$WORK/rootfs"
  debootstrap --variant=minbase \
    --include=python3,python3-pip,python3-venv,python-is-python3,ca-certificates \
    bookworm "$WORK/rootfs" http://deb.debian.org/debian > "$WORK/debootstrap.log"
  # pip installs system-wide in the image, as in the official one.
  rm -f "$WORK"/rootfs/usr/lib/python3.*/EXTERNALLY-MANAGED
  # The machine's extra certificate authorities (a proxy in front of the package registries).
  if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
    cp /usr/local/share/ca-certificates/*.crt "$WORK/rootfs/usr/local/share/ca-certificates/"
    chroot "$WORK/rootfs" update-ca-certificates >/dev/null
  fi
  rm -rf "$WORK"/rootfs/var/cache/apt/archives/*.deb "$WORK"/rootfs/var/lib/apt/lists/*
  tar -C "$WORK/rootfs" -c . | podman import -q - "$BASE_IMAGE" >/dev/null
  rm -rf "$WORK/rootfs"
fi
for image in library/postgres:16 library/redis:7 prom/prometheus:v3.5.0; do
  if ! podman image exists "docker.io/$image"; then
    say "stand-in image $image"
    name=${image#*/}
    podman build -q --network host -f "docker/trial/${name%%:*}.Containerfile" \
      -t "docker.io/$image" docker/trial >/dev/null
  fi
done
say "building the ThingLinks image (docker/Dockerfile)"
podman build -q --network host -f docker/Dockerfile -t docker.io/library/thinglinks:latest . \
  > "$WORK/build.log"

"$PY" - "$WORK/env" <<'PY'
import sys
from pathlib import Path
from edge.crypto import random_token
values = {"DJANGO_SECRET_KEY": random_token(50), "POSTGRES_PASSWORD": random_token(18),
          "REDIS_PASSWORD": random_token(18), "PUBLIC_BASE_URL": "http://localhost:8000",
          "DJANGO_SUPERUSER_PASSWORD": "Trial-" + random_token(12),
          "METRICS_TOKEN": random_token(24)}
lines = []
for line in Path(".env.example").read_text().splitlines():
    key = line.split("=", 1)[0]
    lines.append(f"{key}={values.pop(key)}" if key in values and "=" in line else line)
lines += [f"{k}={v}" for k, v in values.items()]
Path(sys.argv[1]).write_text("\n".join(lines) + "\n")
PY
chmod 600 "$WORK/env"
ADMIN_PASSWORD=$(sed -n 's/^DJANGO_SUPERUSER_PASSWORD=//p' "$WORK/env")
METRICS_TOKEN=$(sed -n 's/^METRICS_TOKEN=//p' "$WORK/env")

rm -f "$WORK/podman.sock"
podman system service --time=0 "unix://$WORK/podman.sock" > "$WORK/podman-service.log" 2>&1 &
SERVICE=$!
(
  while sleep 5; do
    for c in $(podman ps --filter "label=com.docker.compose.project=$PROJECT" --format '{{.Names}}'); do
      podman healthcheck run "$c" >/dev/null 2>&1 || true
    done
  done
) &
HEALTH=$!
export DOCKER_HOST="unix://$WORK/podman.sock"
compose() {
  docker-compose -p "$PROJECT" --env-file "$WORK/env" -f docker/compose.yml \
    -f docker/trial/limits.yml --profile monitoring "$@"
}
finish() {
  status=$?
  if [ "$status" != 0 ]; then
    echo "trial failed; containers:" >&2
    podman ps -a --filter "label=com.docker.compose.project=$PROJECT" \
      --format '{{.Names}} {{.Status}}' >&2 || true
    for c in $(podman ps -a --filter "label=com.docker.compose.project=$PROJECT" --format '{{.Names}}'); do
      echo "--- $c" >&2; podman logs --tail 30 "$c" >&2 2>&1 || true
    done
  fi
  # TRIAL_KEEP=1 leaves the containers running (to look at them; `make trial` again removes them).
  [ -n "${TRIAL_KEEP:-}" ] || compose down -v >/dev/null 2>&1 || true
  kill "$HEALTH" "$SERVICE" 2>/dev/null || true
  wait 2>/dev/null || true
  exit "$status"
}
trap finish EXIT
for _ in $(seq 50); do [ -S "$WORK/podman.sock" ] && break; sleep 0.2; done

say "docker-compose up (postgres, redis, migrate, web, edge with 2 workers, 2 ingest, worker, beat, prometheus)"
compose up -d --scale ingest=2 postgres redis migrate web edge ingest worker beat prometheus \
  > "$WORK/compose-up.log" 2>&1 || { cat "$WORK/compose-up.log" >&2; exit 1; }
deadline=$(($(date +%s) + 300))
while :; do
  states=$(podman ps -a --filter "label=com.docker.compose.project=$PROJECT" --format '{{.Names}} {{.Status}}')
  healthy=$(grep -c '(healthy)' <<<"$states" || true)
  migrated=$(grep -c '_migrate_1 Exited (0)' <<<"$states" || true)
  if [ "$healthy" -ge 9 ] && [ "$migrated" = 1 ]; then break; fi
  if [ "$(date +%s)" -gt "$deadline" ]; then echo "not healthy in 300 s:" >&2; echo "$states" >&2; exit 1; fi
  sleep 3
done
say "every service healthy:"
podman ps -a --filter "label=com.docker.compose.project=$PROJECT" --format '   {{.Names}} {{.Status}}'

SECRET=$(podman exec "${PROJECT}_web_1" python manage.py bootstrap \
  | sed -n "s/.*demo device created: identifier 'demo-001' secret '\([^']*\)'.*/\1/p")
[ -n "$SECRET" ] || { echo "bootstrap printed no demo device secret" >&2; exit 1; }
"$PY" docker/trial/check.py --secret "$SECRET" --password "$ADMIN_PASSWORD" \
  --project "$PROJECT"
say "done"
