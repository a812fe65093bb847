"""``kubectl vgpu``, the read-only kubectl plugin (console script ``kubectl-vgpu``): node GPU tables, MIG
instances and vGPU pods (:mod:`kube_vgpu_kubectl.cli`) and the DRA driver's claims
(:mod:`kube_vgpu_kubectl.claims`), built from the API server with the user's kubeconfig.

Runs as the user, not as a component: imports neither ``extender`` nor ``plugin`` (import-linter), only the
contract (``vcuda``), ``kube_vgpu_cli`` and the official client.
"""
