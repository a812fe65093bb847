"""dra_resourceslice_bytes_8xh200: the JSON size of the ResourceSlice a node of 8 x H200 publishes.

The object as the publisher creates it (``plugin.slicepublisher``: apiVersion, kind, generateName, the owner
reference to the Node, the spec), in the compact JSON the API server stores; every GPU with a PCIe root and
a NUMA node, all eight joined by NVLink, with UUIDs of NVIDIA's shape (``GPU-`` and 36 characters).
"""

import dataclasses
import json
import uuid

from plugin.core.gpu import NodeGpus
from plugin.core.resourceslice import SliceOptions, driver_name, pool_specs
from plugin.slicepublisher import slice_object
from tests.builders.plugin import h200x8
from vcuda.model import GpuUuid

NODE = "gpu-node-0001"


def _real_uuids(node: NodeGpus) -> NodeGpus:
    new = {g.uuid: GpuUuid(f"GPU-{uuid.uuid5(uuid.NAMESPACE_OID, g.uuid)}") for g in node.gpus}
    gpus = tuple(dataclasses.replace(g, uuid=new[g.uuid]) for g in node.gpus)
    links = tuple(dataclasses.replace(lk, a=new[lk.a], b=new[lk.b]) for lk in node.links)
    return dataclasses.replace(node, gpus=gpus, links=links)


def run() -> list[tuple[str, float, str]]:
    gpus = _real_uuids(h200x8(NODE))
    roots = {g.uuid: f"pci0000:{g.index * 16:02x}" for g in gpus.gpus}
    driver = driver_name("nvidia.com")
    options = SliceOptions(driver=driver, node=NODE, unhealthy={}, pcie_roots=roots)
    specs = pool_specs(gpus, options, generation=1)
    owner = {"name": NODE, "uid": "5f0c3f5e-8a53-4a5e-9d7e-0d4a4e0a9f11"}
    body = slice_object(specs[0], owner)
    size = len(json.dumps(body, separators=(",", ":")).encode())
    return [("dra_resourceslice_bytes_8xh200", size, "bytes"), ("dra_resourceslices_8xh200", len(specs), "")]
