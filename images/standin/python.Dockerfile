# Stand-in for the official python:3.11-slim-bookworm image, for machines where no registry answers
# (images/standin/base-image.sh builds it only then). Debian bookworm's own Python 3.11, its venv
# module and headers, and pip from Debian's pip wheel (Debian disables ensurepip), installed where
# the official image has them: `python`, `python3` and `pip` on PATH in /usr/local/bin.
# checkov:skip=CKV_DOCKER_7:FROM is the local debootstrap import base-image.sh makes; there is no registry tag to pin
# checkov:skip=CKV_DOCKER_3:a base image, root like the official python image; every image built on it sets USER 10001
ARG DEBIAN=contribflow-standin/debian:bookworm
FROM ${DEBIAN}
RUN apt-get update \
 && apt-get upgrade -y \
 && apt-get install -y --no-install-recommends python3.11 python3.11-venv libpython3.11-dev python3-pip-whl \
      netbase tzdata \
 && rm -f /usr/lib/python3.11/EXTERNALLY-MANAGED \
 && ln -s /usr/bin/python3.11 /usr/local/bin/python3 \
 && ln -s /usr/bin/python3.11 /usr/local/bin/python \
 && wheel=$(ls /usr/share/python-wheels/pip-*.whl) \
 && python3.11 "$wheel/pip" install --no-index --no-cache-dir --disable-pip-version-check "$wheel" \
 && apt-get purge -y python3-pip-whl \
 && rm -rf /var/lib/apt/lists/* /root/.cache
HEALTHCHECK NONE
CMD ["python3"]
