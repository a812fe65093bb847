"""kube-vgpu's node agent: GPU discovery, kubelet device plugins, allocation, health, reclaim, metrics."""
