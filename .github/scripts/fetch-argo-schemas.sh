#!/usr/bin/env bash
# GitHub Actions only: the Argo Workflows v4.1.2 schemas the tests validate against, which on the
# project's own machines come from ../shared/argo-v4.1.2. Each file is checked against the sha256
# of the copy the tests were written against, so a changed upstream file fails here, not later.
# Usage: fetch-argo-schemas.sh DEST   (then CONTRIBFLOW_SHARED_DIR=DEST for the tests)
set -euo pipefail
dest=${1:?usage: fetch-argo-schemas.sh DEST}
base=https://raw.githubusercontent.com/argoproj/argo-workflows/v4.1.2
mkdir -p "$dest/argo-v4.1.2/crds"
cd "$dest/argo-v4.1.2"
curl -fsSLo schema.json "$base/api/jsonschema/schema.json"
for kind in cronworkflows workflows workflowtemplates; do
  curl -fsSLo "crds/$kind.yaml" "$base/manifests/base/crds/full/argoproj.io_$kind.yaml"
done
sha256sum --check --strict <<'SUMS'
3f84c5722c48a5aa815fe69119a9375fc3635114f8046da20ede55a8596529f5  schema.json
31abde1c89c6c11cf1c97753676327e02b2f8dc47827e49383732ac6b1d828c6  crds/cronworkflows.yaml
35ffc0d16c9c71db69ae113e562d90057eac75a60e7371aa3012a3171ccd8c39  crds/workflows.yaml
e932631a04a0f3a226b2ca8c68d43214c071c5d8aa6961b23298b81cbea3d9a5  crds/workflowtemplates.yaml
SUMS
