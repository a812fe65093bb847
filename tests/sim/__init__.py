"""A SIMULATED kube-vgpu cluster for ``make demo`` and ``tests/e2e``: no real control plane, no GPU.

What is real and what is simulated (also in ``docs/simulation.md``):

* real: the extender (``kube-vgpu-extender``, its own process, real HTTP), the device plugin
  (``kube-vgpu-plugin``, one process per node, real gRPC on Unix sockets, real pynvml), the vcuda contract,
  the shim config files the plugin writes, and the node exporter;
* simulated: the API server (kmock, an in-memory object store over HTTP, see :mod:`tests.sim.apiserver`),
  kube-scheduler (:mod:`tests.sim.scheduler`, the extender protocol as kube-scheduler speaks it, with a
  reduced built-in filter), the kubelet (:mod:`tests.sim.kubelet`, device-manager behaviour only: no
  containers are run), and the GPUs (the fake ``libnvidia-ml.so.1`` from ``tests/fakes/nvml``).
"""
