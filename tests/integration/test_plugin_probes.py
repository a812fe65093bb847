"""The plugin's probe endpoints over real HTTP (plugin.probes): liveness follows the event loop, readiness
the kubelet registration; anything else is 404. A stalled loop is a loop blocked in ``time.sleep``; the
limit itself is checked with an injected clock and a loop that never answers."""

import asyncio
import threading
import time
import urllib.error
import urllib.request

import pytest

from plugin.probes import Heartbeat, serve_probes


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


async def test_readiness_follows_registration_and_liveness_answers_while_the_loop_runs() -> None:
    registered = asyncio.Event()
    async with serve_probes(0, registered.is_set, addr="127.0.0.1") as port:
        assert await asyncio.to_thread(get, port, "/healthz") == (200, "ok\n")
        status, text = await asyncio.to_thread(get, port, "/readyz")
        assert (status, text) == (503, "not registered with the kubelet\n")
        registered.set()
        assert await asyncio.to_thread(get, port, "/readyz?verbose") == (200, "ok\n")
        assert (await asyncio.to_thread(get, port, "/metrics"))[0] == 404


async def test_a_blocked_loop_answers_503_once_stalled_past_the_limit_and_200_after() -> None:
    answers: list[tuple[int, str]] = []

    def probe_twice(port: int) -> None:
        answers.append(get(port, "/healthz"))  # asked now; 0.1 s of silence is within the limit
        time.sleep(0.6)
        answers.append(get(port, "/healthz"))  # the same question open for 0.7 s

    async with serve_probes(0, lambda: True, addr="127.0.0.1", stall_s=0.3, wait_s=0.1) as port:
        prober = threading.Thread(target=probe_twice, args=(port,))
        prober.start()
        time.sleep(1.2)  # the event loop is wedged
        prober.join()
        assert answers[0] == (200, "ok\n")
        assert answers[1][0] == 503
        assert "event loop stalled" in answers[1][1]
        assert await asyncio.to_thread(get, port, "/healthz") == (200, "ok\n")


class _SilentLoop:
    def call_soon_threadsafe(self, callback: object) -> None:
        pass  # a wedged loop: the beat never runs


@pytest.mark.parametrize(("silent_s", "stalled"), [(29.0, False), (31.0, True)])
def test_a_question_open_past_the_limit_is_reported_stalled(silent_s: float, stalled: bool) -> None:
    now = [100.0]
    heartbeat = Heartbeat(stall_s=30.0, clock=lambda: now[0])
    assert heartbeat.ask(_SilentLoop(), wait_s=0.0) is None  # type: ignore[arg-type]
    now[0] += silent_s
    assert (heartbeat.ask(_SilentLoop(), wait_s=0.0) is not None) is stalled  # type: ignore[arg-type]
    heartbeat.beat()
    assert heartbeat.stalled_for() is None
