"""kube-vgpu's shared contract: resource names, units, annotations, inventory and shim file layouts.

Imported by the extender, the plugin and the tooling; it imports nothing but the standard library.
"""
