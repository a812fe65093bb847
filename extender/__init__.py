"""kube-vgpu's kube-scheduler extender: topology-aware filter, prioritize and bind over HTTP."""
