"""The unit tier's guard (tests/unit/conftest.py) can fail: a unit test that opens a socket or starts a process
fails with UnitTierError, and what stays in-process (asyncio's loop, Starlette's TestClient) passes.

The cases run in a fresh pytest: a temporary unit folder with the real guard as its conftest and a planted
test file, then a folder of another tier in the same session, whose sockets and processes must still work;
outcomes are read back from the JUnit report.
"""

import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]

PLANTED = textwrap.dedent(
    """
    import asyncio
    import os
    import socket
    import subprocess
    import sys
    import urllib.request

    import grpc
    import pytest

    @pytest.fixture(scope="module")
    def module_listener():
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
            yield listener

    def test_module_scoped_fixture_socket(module_listener):
        pass

    def test_inet_socket():
        socket.socket(socket.AF_INET, socket.SOCK_STREAM).close()

    def test_default_socket():
        socket.socket().close()

    def test_unix_socket():
        socket.socket(socket.AF_UNIX, socket.SOCK_STREAM).close()

    def test_http_request():
        urllib.request.urlopen("http://127.0.0.1:9/", timeout=1)

    async def test_asyncio_server():
        await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)

    def test_grpc_server():
        grpc.aio.server()

    def test_grpc_channel():
        grpc.insecure_channel("unix:///tmp/nothing.sock")

    def test_subprocess_run():
        subprocess.run([sys.executable, "-c", "pass"], check=False)

    async def test_asyncio_subprocess():
        await asyncio.create_subprocess_exec(sys.executable, "-c", "pass")

    def test_fork():
        os.fork()

    def test_posix_spawn():
        os.posix_spawn(sys.executable, [sys.executable, "-c", "pass"], {})

    def test_os_system():
        os.system("true")

    async def test_in_process_asyncio_is_allowed():
        await asyncio.sleep(0)

    def test_socketpair_is_allowed():
        a, b = socket.socketpair()
        a.close()
        b.close()

    def test_starlette_test_client_is_allowed():
        from fastapi import FastAPI
        from fastapi.testclient import TestClient

        app = FastAPI()

        @app.get("/")
        def root():
            return {"ok": True}

        with TestClient(app) as client:
            assert client.get("/").json() == {"ok": True}
    """
)

REFUSED = [
    "test_module_scoped_fixture_socket",
    "test_inet_socket",
    "test_default_socket",
    "test_unix_socket",
    "test_http_request",
    "test_asyncio_server",
    "test_grpc_server",
    "test_grpc_channel",
    "test_subprocess_run",
    "test_asyncio_subprocess",
    "test_fork",
    "test_posix_spawn",
    "test_os_system",
]
ALLOWED = [
    "test_in_process_asyncio_is_allowed",
    "test_socketpair_is_allowed",
    "test_starlette_test_client_is_allowed",
]


OTHER_TIER = textwrap.dedent(
    """
    import socket
    import subprocess
    import sys

    def test_other_tier_socket():
        socket.socket(socket.AF_INET, socket.SOCK_STREAM).close()

    def test_other_tier_process():
        subprocess.run([sys.executable, "-c", "pass"], check=True)
    """
)


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Each planted test's name and its failure text ("" when it passed): the real tests/unit/conftest.py as
    the conftest of a planted unit folder, run in one session before a planted folder of another tier."""
    where = tmp_path_factory.mktemp("guard")
    (where / "unit").mkdir()
    (where / "unit" / "conftest.py").write_text((ROOT / "tests" / "unit" / "conftest.py").read_text())
    (where / "unit" / "test_planted.py").write_text(PLANTED)
    (where / "other").mkdir()
    (where / "other" / "test_other_tier.py").write_text(OTHER_TIER)
    report = where / "report.xml"
    argv = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", f"--junitxml={report}",
            "-c", str(ROOT / "pyproject.toml"), "--rootdir", str(where), str(where / "unit"), str(where / "other")]  # fmt: skip
    subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    cases = ET.parse(report).getroot().iter("testcase")
    return {
        case.attrib["name"]: " ".join(
            (bad.attrib.get("message", "") + (bad.text or ""))
            for bad in case
            if bad.tag in ("failure", "error")
        )
        for case in cases
    }


@pytest.mark.parametrize("name", REFUSED)
def test_a_unit_test_that_opens_a_socket_or_a_process_fails_with_the_guards_error(
    outcomes: dict[str, str], name: str
) -> None:
    assert "UnitTierError" in outcomes[name]


@pytest.mark.parametrize("name", ALLOWED)
def test_what_stays_in_process_passes_under_the_guard(outcomes: dict[str, str], name: str) -> None:
    assert outcomes[name] == ""


@pytest.mark.parametrize("name", ["test_other_tier_socket", "test_other_tier_process"])
def test_the_guard_is_undone_for_the_other_tiers_of_the_same_session(
    outcomes: dict[str, str], name: str
) -> None:
    assert outcomes[name] == ""
