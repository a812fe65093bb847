"""The real-Kubernetes tier: etcd, kube-apiserver, kube-scheduler and kubelet built from Kubernetes' Go modules
(``tests/k8s/controlplane``), run on loopback with the real extender and plugin (docs/testing.md)."""
