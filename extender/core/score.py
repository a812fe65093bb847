"""The 0..10 node score: one formula for ``place_pod`` and for the summary's fast answer, which must agree to
the last bit of the float (a property test in tests/unit/extender/test_core.py holds them to that)."""

__all__ = ["node_score"]


def node_score(
    *, used_cores: int, core_capacity: int, used_mib: int, memory_capacity: int, binpack: bool
) -> int:
    """The node's utilisation after the pod, the mean of its given-out compute and memory fractions capped at
    1, scaled to 0..10: high for a full node under binpack, high for an empty one under spread. Both
    capacities are positive (a node without memory passes 1)."""
    utilisation = (used_cores / core_capacity + used_mib / memory_capacity) / 2
    if utilisation > 1.0:  # not min(): the filter calls this once per distinct node summary, min() costs 1/3
        utilisation = 1.0
    return round(10 * utilisation) if binpack else round(10 * (1.0 - utilisation))
