#!/usr/bin/env bash
# Render the plain manifests in deploy/manifests/ from the Helm chart, with deploy/manifests/values.yaml.
# Usage: make manifests   (or HELM=/path/to/helm deploy/render-manifests.sh)
# The output is deterministic (no generated secrets or certificates), so tests compare it with a fresh render.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
helm="${HELM:-$here/../build/helm/bin/helm}"
chart="$here/helm/kube-vgpu"
out="$here/manifests/kube-vgpu.yaml"

# The chart ships a copy of the dashboard (helm can only read files inside the chart).
cp "$here/dashboards/kube-vgpu.json" "$chart/dashboards/kube-vgpu.json"

home="$(mktemp -d)"
trap 'rm -rf "$home"' EXIT
{
  echo "# kube-vgpu plain manifests, rendered from deploy/helm/kube-vgpu by deploy/render-manifests.sh"
  echo "# with deploy/manifests/values.yaml. Do not edit: change the chart and run 'make manifests'."
  echo "# Before applying, create the assignment key pair (see docs/install.md and docs/security.md):"
  echo "#   openssl genpkey -algorithm ed25519 -out signing.key && openssl pkey -in signing.key -pubout -out signing.pem"
  echo "#   kubectl -n kube-system create secret generic kube-vgpu-assignment-key --from-file=key=signing.key"
  echo "#   kubectl -n kube-system create configmap kube-vgpu-assignment-public-keys --from-file=signing.pem"
  HOME="$home" XDG_CACHE_HOME="$home" XDG_CONFIG_HOME="$home" XDG_DATA_HOME="$home" \
    "$helm" template kube-vgpu "$chart" --namespace kube-system --kube-version v1.31.0 \
    --values "$here/manifests/values.yaml"
} > "$out.tmp"
mv "$out.tmp" "$out"
echo "wrote $out"
