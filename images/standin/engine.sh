#!/usr/bin/env bash
# Make a Docker engine answer `docker info`, the way CI on these machines needs it: install Debian's
# docker.io (and debootstrap, for the stand-in bases) when missing — only as root, through apt-get —
# then start dockerd in the background when no daemon answers, and wait for it.
# Prints nothing when the engine already answers. Fails (exit 1) with the reason otherwise.
set -euo pipefail

DOCKER=${DOCKER:-docker}
LOG=${DOCKERD_LOG:-/var/log/contribflow-dockerd.log}
WAIT_S=${DOCKERD_WAIT_S:-60}

if "$DOCKER" info >/dev/null 2>&1; then
  exit 0
fi

missing=()
command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
command -v "$DOCKER" >/dev/null 2>&1 || missing+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
if ((${#missing[@]})); then
  if [[ $(id -u) != 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
    echo "engine.sh: ${missing[*]} missing, and installing needs root and apt-get (Debian/Ubuntu)." >&2
    exit 1
  fi
  echo "==> apt-get install ${missing[*]}"
  apt-get update -qq
  mapfile -t packages < <(printf '%s\n' "${missing[@]}" | sort -u)
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
fi

if ! pgrep -x dockerd >/dev/null 2>&1; then
  if [[ $(id -u) != 0 ]]; then
    echo "engine.sh: no Docker daemon answers and starting dockerd needs root." >&2
    exit 1
  fi
  echo "==> starting dockerd in the background (log: $LOG)"
  nohup dockerd >"$LOG" 2>&1 </dev/null &
fi
for _ in $(seq "$WAIT_S"); do
  "$DOCKER" info >/dev/null 2>&1 && exit 0
  sleep 1
done
echo "engine.sh: dockerd did not answer 'docker info' within ${WAIT_S}s; its log ($LOG) ends:" >&2
tail -n 20 "$LOG" >&2 || true
exit 1
