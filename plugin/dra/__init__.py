"""The node side of the kube-vgpu DRA driver (docs/dra.md "Node side"): the kubelet plugin.

- :mod:`plugin.dra.registration`: the plugin-registration service and the sockets' supervision;
- :mod:`plugin.dra.service`: the ``DRAPlugin`` gRPC service, ``v1`` and ``v1beta1``;
- :mod:`plugin.dra.prepare`: prepare / unprepare of claims (files, CDI spec, checkpoint);
- :mod:`plugin.dra.checkpoint`, :mod:`plugin.dra.claims`: the checkpoint file, the ResourceClaim reads;
- :mod:`plugin.dra.node`: the pieces put together for :mod:`plugin.agent`.

Decisions live in :mod:`plugin.core.dra`, :mod:`plugin.core.dra_plan` and :mod:`plugin.core.dra_params`.
"""
