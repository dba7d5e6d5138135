#!/usr/bin/env bash
# `make base-image`: make the base images the builds and the e2e need present in the local engine.
#
#   base-image.sh python   PYTHON_BASE      the Python base images/Dockerfile builds FROM
#   base-image.sh postgres POSTGRES_IMAGE   the chart's PostgreSQL image (helm values postgresql.image)
#
# For each: nothing to do when the image is already present locally; else `docker pull` it; only
# when that fails too (no registry answers, as on the project's own machines) build a stand-in from
# Debian bookworm and tag it with the very same name, so the unchanged Dockerfiles and the chart's
# container spec use it. Stand-ins carry the label org.contribflow.standin=<what it stands in for>.
# A machine with registry access therefore always gets the real images. How the stand-ins differ
# from the real ones: docs/images.md.
set -euo pipefail

DOCKER=${DOCKER:-docker}
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
WORK=${STANDIN_WORK:-$ROOT/.tools/standin}
DEBIAN_STANDIN=${DEBIAN_STANDIN:-contribflow-standin/debian:bookworm}
PGSERVER_VERSION=${PGSERVER_VERSION:-0.1.4}
PYTHON=${PYTHON:-python3}  # with pip, for the pgserver wheel (`make base-image` passes the project's venv)
export DOCKER_BUILDKIT=0

log() { echo "==> $*"; }
present() { "$DOCKER" image inspect "$1" >/dev/null 2>&1; }

# The Debian mirror this machine's apt uses (first deb.debian.org-style URI), else the public one.
debian_mirror() {
  if [[ -n ${DEBIAN_MIRROR:-} ]]; then echo "$DEBIAN_MIRROR"; return; fi
  local uri
  uri=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null \
        | grep -v '^[[:space:]]*#' | grep -Eo 'https?://[^ ]+/debian/?( |$)' | head -n 1 | tr -d ' ' || true)
  echo "${uri:-http://deb.debian.org/debian}"
}

# Debian bookworm, minbase, imported as an image: the root of both stand-ins.
debian_standin() {
  present "$DEBIAN_STANDIN" && return 0
  command -v debootstrap >/dev/null 2>&1 || { echo "base-image.sh: debootstrap is missing (apt-get install debootstrap)" >&2; exit 1; }
  [[ $(id -u) == 0 ]] || { echo "base-image.sh: debootstrap needs root" >&2; exit 1; }
  local mirror rootfs started
  mirror=$(debian_mirror)
  rootfs=$(mktemp -d "${TMPDIR:-/tmp}/contribflow-rootfs.XXXXXX")
  started=$(date +%s)
  log "debootstrap --variant=minbase bookworm from $mirror (about 1.5 min)"
  debootstrap --variant=minbase --include=ca-certificates bookworm "$rootfs" "$mirror" >"$rootfs.log" 2>&1 \
    || { tail -n 30 "$rootfs.log" >&2; rm -rf "$rootfs" "$rootfs.log"; exit 1; }
  cat >"$rootfs/etc/apt/sources.list" <<SOURCES
deb $mirror bookworm main
deb $mirror bookworm-updates main
deb ${mirror%/debian*}/debian-security bookworm-security main
SOURCES
  # Slim, the way Debian's own container images are: no docs, man pages, caches or logs, and apt
  # keeps none of them afterwards either.
  cat >"$rootfs/etc/dpkg/dpkg.cfg.d/contribflow-slim" <<'DPKG'
path-exclude /usr/share/doc/*
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
DPKG
  cat >"$rootfs/etc/apt/apt.conf.d/docker-clean" <<'APT'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache ""; Dir::Cache::srcpkgcache "";
APT
  rm -rf "$rootfs"/usr/share/{doc,man,info}/* "$rootfs"/var/cache/apt/* "$rootfs"/var/lib/apt/lists/* \
         "$rootfs"/var/log/* "$rootfs"/var/cache/debconf/*-old
  find "$rootfs/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} +
  log "docker import $DEBIAN_STANDIN"
  tar -C "$rootfs" --numeric-owner -c . | "$DOCKER" import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'LABEL org.contribflow.standin=debian:bookworm' \
    --change 'CMD ["bash"]' - "$DEBIAN_STANDIN" >/dev/null
  rm -rf "$rootfs" "$rootfs.log"
  log "$DEBIAN_STANDIN built in $(( $(date +%s) - started ))s"
}

# What a stand-in is built from: a change to any of it rebuilds the stand-in on the next run.
source_hash() {
  local files=("$HERE/$1.Dockerfile")
  [[ $1 == postgres ]] && files+=("$HERE/postgres-entrypoint.sh")
  { cat "${files[@]}"; echo "$PGSERVER_VERSION"; } | sha256sum | cut -c1-16
}

label() {
  "$DOCKER" image inspect -f "{{index .Config.Labels \"$2\"}}" "$1" 2>/dev/null | sed 's/^<no value>$//'
}

ensure() {  # ensure KIND NAME
  local kind=$1 name=$2 started hash
  hash=$(source_hash "$kind")
  if present "$name"; then
    if [[ -z $(label "$name" org.contribflow.standin) ]]; then
      log "$name: present"
      return 0
    fi
    if [[ $(label "$name" org.contribflow.standin.source) == "$hash" ]]; then
      log "$name: present (a local stand-in, see docs/images.md)"
      return 0
    fi
    log "$name: a stand-in built from older sources of images/standin: rebuilding it"
  fi
  if "$DOCKER" pull "$name" >/dev/null 2>&1; then
    log "$name: pulled"
    return 0
  fi
  log "$name: docker pull failed (no registry answers): building a stand-in"
  debian_standin
  started=$(date +%s)
  case $kind in
    python)
      "$DOCKER" build -q -f "$HERE/python.Dockerfile" --build-arg "DEBIAN=$DEBIAN_STANDIN" \
        --label "org.contribflow.standin=$name" --label "org.contribflow.standin.source=$hash" \
        -t "$name" "$HERE" >/dev/null ;;
    postgres)
      local ctx="$WORK/postgres-context"
      rm -rf "$ctx" && mkdir -p "$ctx" "$WORK/wheels"
      if ! compgen -G "$WORK/wheels/pgserver-$PGSERVER_VERSION-*.whl" >/dev/null; then
        log "pip download pgserver==$PGSERVER_VERSION (its PostgreSQL 16 binaries)"
        "$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --dest "$WORK/wheels" \
          "pgserver==$PGSERVER_VERSION"
      fi
      "$PYTHON" -m zipfile -e "$(compgen -G "$WORK/wheels/pgserver-$PGSERVER_VERSION-*.whl" | head -n 1)" "$ctx/wheel"
      mkdir -p "$ctx/postgresql/pgserver"
      mv "$ctx/wheel/pgserver/pginstall" "$ctx/postgresql/pgserver/pginstall"
      mv "$ctx/wheel/pgserver.libs" "$ctx/postgresql/pgserver.libs"
      rm -rf "$ctx/wheel"
      cp "$HERE/postgres.Dockerfile" "$HERE/postgres-entrypoint.sh" "$ctx/"
      "$DOCKER" build -q -f "$ctx/postgres.Dockerfile" --build-arg "DEBIAN=$DEBIAN_STANDIN" \
        --label "org.contribflow.standin=$name" --label "org.contribflow.standin.source=$hash" \
        -t "$name" "$ctx" >/dev/null
      rm -rf "$ctx" ;;
    *) echo "base-image.sh: unknown kind $kind (python or postgres)" >&2; exit 2 ;;
  esac
  log "$name: stand-in built in $(( $(date +%s) - started ))s"
}

[[ $# == 2 ]] || { echo "usage: base-image.sh python|postgres IMAGE" >&2; exit 2; }
ensure "$1" "$2"
