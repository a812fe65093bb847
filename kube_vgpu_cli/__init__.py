"""What both binaries share on their command line: one settings loader (:mod:`kube_vgpu_cli.options`),
logging in text or JSON (:mod:`kube_vgpu_cli.logs`), ``kube_vgpu_build_info`` (:mod:`kube_vgpu_cli.build`)
and the Ed25519 public-key files of the assignment keys (:mod:`kube_vgpu_cli.keyfiles`).

Imports neither ``extender`` nor ``plugin`` (import-linter), so that the two stay independent.
"""
