#!/usr/bin/env bash
# Entrypoint of the PostgreSQL stand-in (images/standin/postgres.Dockerfile), written for this
# project to the documented contract of the official postgres image:
# - `postgres …` (or only flags): on an empty $PGDATA, initdb with POSTGRES_USER (default postgres)
#   and the password from POSTGRES_PASSWORD or the file POSTGRES_PASSWORD_FILE names, password
#   (scram-sha-256) logins for every host over TCP, then a socket-only server runs
#   /docker-entrypoint-initdb.d/* in name order (*.sh executed, or sourced when not executable;
#   *.sql through psql; anything else is refused), creating POSTGRES_DB first; then the server runs
#   in the foreground as PID 1's program.
# - As root it prepares $PGDATA and re-executes itself as `postgres`; as any other uid it runs as is.
# - Any other command is executed unchanged.
set -Eeuo pipefail

if [[ ${1:-} == -* ]]; then set -- postgres "$@"; fi
if [[ ${1:-} != postgres ]]; then exec "$@"; fi

if [[ $(id -u) == 0 ]]; then
  mkdir -p "$PGDATA" && chown -R postgres:postgres "$PGDATA" && chmod 700 "$PGDATA"
  exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
fi

# POSTGRES_PASSWORD or POSTGRES_PASSWORD_FILE, never both.
if [[ -n ${POSTGRES_PASSWORD_FILE:-} ]]; then
  if [[ -n ${POSTGRES_PASSWORD:-} ]]; then
    echo "docker-entrypoint.sh: both POSTGRES_PASSWORD and POSTGRES_PASSWORD_FILE are set" >&2; exit 1
  fi
  POSTGRES_PASSWORD=$(<"$POSTGRES_PASSWORD_FILE")
fi
export POSTGRES_USER=${POSTGRES_USER:-postgres}
export POSTGRES_DB=${POSTGRES_DB:-$POSTGRES_USER}

if [[ ! -s $PGDATA/PG_VERSION ]]; then
  if [[ -z ${POSTGRES_PASSWORD:-} ]]; then
    echo "docker-entrypoint.sh: the database is uninitialised and no superuser password is set:" >&2
    echo "  set POSTGRES_PASSWORD or POSTGRES_PASSWORD_FILE." >&2
    exit 1
  fi
  mkdir -p "$PGDATA" && chmod 700 "$PGDATA"
  echo "docker-entrypoint.sh: initdb of $PGDATA for superuser $POSTGRES_USER"
  # The password reaches initdb through a pipe, never a file or an argument.
  # POSTGRES_INITDB_ARGS is split into words, as the official image does.
  read -r -a initdb_args <<<"${POSTGRES_INITDB_ARGS:-}"
  initdb --username="$POSTGRES_USER" --pwfile=<(printf '%s\n' "$POSTGRES_PASSWORD") \
         --auth-local=trust --auth-host=scram-sha-256 "${initdb_args[@]}" >/dev/null
  printf '\n# docker-entrypoint.sh: password logins from any address\nhost all all all scram-sha-256\n' \
    >>"$PGDATA/pg_hba.conf"

  # A server on the socket only, for the init scripts; no TCP client can reach it half-made.
  export PGHOST=/tmp PGPORT=5432
  pg_ctl -D "$PGDATA" -w -o "-c listen_addresses='' -c unix_socket_directories=/tmp" start >/dev/null
  if [[ $POSTGRES_DB != postgres ]]; then
    psql --no-psqlrc -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres -v db="$POSTGRES_DB" <<'SQL' >/dev/null
SELECT format('CREATE DATABASE %I', :'db') \gexec
SQL
  fi
  shopt -s nullglob
  for file in /docker-entrypoint-initdb.d/*; do
    case $file in
      *.sh)
        echo "docker-entrypoint.sh: running $file"
        if [[ -x $file ]]; then "$file"; else # shellcheck disable=SC1090
          . "$file"; fi ;;
      *.sql)
        echo "docker-entrypoint.sh: running $file"
        psql --no-psqlrc -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" -f "$file" ;;
      *)
        echo "docker-entrypoint.sh: $file is neither *.sh nor *.sql; this stand-in refuses it" >&2; exit 1 ;;
    esac
  done
  pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
  unset PGHOST PGPORT
  echo "docker-entrypoint.sh: PostgreSQL init process complete; ready for start up."
fi

exec "$@"
