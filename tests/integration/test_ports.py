"""The test servers' ports: none from the kernel's ephemeral range, none handed out twice."""

from tests.ports import _ephemeral_range, free_port


def test_free_ports_avoid_the_ephemeral_range_and_never_repeat() -> None:
    ports = [free_port() for _ in range(200)]
    ephemeral = _ephemeral_range()
    assert len(set(ports)) == len(ports)
    assert not [port for port in ports if port in ephemeral]
