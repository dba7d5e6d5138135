#!/usr/bin/env bash
# GitHub Actions only: kind, kubectl, helm and argo at the versions the workflow pins, each verified
# with sha256sum against the checksum its publisher releases with it before it is made executable.
# Usage: install-cluster-tools.sh BIN_DIR   (KIND_VERSION, KUBECTL_VERSION, HELM_VERSION, ARGO_VERSION)
set -euo pipefail
bin=${1:?usage: install-cluster-tools.sh BIN_DIR}
: "${KIND_VERSION:?}" "${KUBECTL_VERSION:?}" "${HELM_VERSION:?}" "${ARGO_VERSION:?}"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
get() { curl -fsSLo "$1" "$2"; }

get kind-linux-amd64 "https://github.com/kubernetes-sigs/kind/releases/download/$KIND_VERSION/kind-linux-amd64"
get kind.sha256sum "https://github.com/kubernetes-sigs/kind/releases/download/$KIND_VERSION/kind-linux-amd64.sha256sum"
sha256sum --check --strict kind.sha256sum

get kubectl "https://dl.k8s.io/release/$KUBECTL_VERSION/bin/linux/amd64/kubectl"
get kubectl.sha256 "https://dl.k8s.io/release/$KUBECTL_VERSION/bin/linux/amd64/kubectl.sha256"
echo "$(cat kubectl.sha256)  kubectl" | sha256sum --check --strict

helm_tgz="helm-$HELM_VERSION-linux-amd64.tar.gz"
get "$helm_tgz" "https://get.helm.sh/$helm_tgz"
get helm.sha256sum "https://get.helm.sh/$helm_tgz.sha256sum"
sha256sum --check --strict helm.sha256sum
tar -xzf "$helm_tgz" --strip-components=1 linux-amd64/helm

get argo-linux-amd64.gz "https://github.com/argoproj/argo-workflows/releases/download/$ARGO_VERSION/argo-linux-amd64.gz"
get argo-checksums.txt "https://github.com/argoproj/argo-workflows/releases/download/$ARGO_VERSION/argo-workflows-cli-checksums.txt"
grep ' argo-linux-amd64.gz$' argo-checksums.txt | sha256sum --check --strict
gunzip argo-linux-amd64.gz

install -m 0755 kind-linux-amd64 "$bin/kind"
install -m 0755 kubectl helm "$bin/"
install -m 0755 argo-linux-amd64 "$bin/argo"
