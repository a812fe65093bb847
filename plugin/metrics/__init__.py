"""The node exporter: per-container and per-GPU metrics for Prometheus (see ``docs/metrics.md``).

Pure parts (``cgroups``, ``attribution``, ``families``) do no I/O; ``procfs`` and ``usage`` read files
under an injected root; ``exporter`` is the prometheus_client glue. Nothing here imports pynvml or grpc
directly: NVML and the kubelet arrive through the Protocols in :mod:`plugin.metrics.sources`.
"""
