"""Builders: functions that return plain values (GPUs, nodes, pods, claims, assignments) for any tier.

A builder holds no state and stands in for no running part; stand-ins for running parts are in tests/fakes."""
