# Stand-in for the official postgres image the chart runs (helm values postgresql.image), for
# machines where no registry answers (images/standin/base-image.sh builds it only then). Debian
# bookworm packages only PostgreSQL 15; the chart's init script and the migrations need 16, so the
# server is the PostgreSQL 16 build that PyPI's pgserver wheel bundles. It honours the parts of the
# official image's contract the chart relies on: user `postgres` with the chart's uid/gid (70, as in
# the alpine variant), PGDATA, /docker-entrypoint-initdb.d/*.sh|*.sql run once on an empty data
# folder, POSTGRES_PASSWORD or POSTGRES_PASSWORD_FILE, POSTGRES_USER, POSTGRES_DB, port 5432 on
# every address with password (scram-sha-256) logins over TCP. The entrypoint is this project's own.
# checkov:skip=CKV_DOCKER_7:FROM is the local debootstrap import base-image.sh makes; there is no registry tag to pin
# checkov:skip=CKV_DOCKER_3:starts as root like the official image (the entrypoint drops to postgres); the chart runs it as uid 70
ARG DEBIAN=contribflow-standin/debian:bookworm
FROM ${DEBIAN}
ARG POSTGRES_UID=70
RUN apt-get update && apt-get upgrade -y && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid "$POSTGRES_UID" postgres \
 && useradd --system --uid "$POSTGRES_UID" --gid postgres --home-dir /var/lib/postgresql --shell /bin/sh postgres \
 && mkdir -p /var/lib/postgresql/data /var/run/postgresql /docker-entrypoint-initdb.d \
 && chown -R postgres:postgres /var/lib/postgresql /var/run/postgresql \
 && chmod 3777 /var/run/postgresql && chmod 700 /var/lib/postgresql/data
COPY postgresql/ /usr/lib/postgresql/16-pgserver/
COPY postgres-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
RUN chmod 0755 /usr/lib/postgresql/16-pgserver/pgserver/pginstall/bin/* /usr/local/bin/docker-entrypoint.sh \
 && sample=/usr/lib/postgresql/16-pgserver/pgserver/pginstall/share/postgresql/postgresql.conf.sample \
 && sed -ri "s!^#?(listen_addresses)\s*=\s*\S+.*!\1 = '*'!" "$sample" \
 && sed -ri "s!^#?(unix_socket_directories)\s*=\s*\S+.*!\1 = '/var/run/postgresql,/tmp'!" "$sample" \
 && grep -F "listen_addresses = '*'" "$sample" && grep -F "/var/run/postgresql,/tmp" "$sample"
ENV PATH=/usr/lib/postgresql/16-pgserver/pgserver/pginstall/bin:$PATH \
    PGDATA=/var/lib/postgresql/data \
    LANG=C.UTF-8
VOLUME /var/lib/postgresql/data
STOPSIGNAL SIGINT
# Health is the chart's probes (pg_isready), as with the official image.
HEALTHCHECK NONE
EXPOSE 5432
ENTRYPOINT ["docker-entrypoint.sh"]
CMD ["postgres"]
