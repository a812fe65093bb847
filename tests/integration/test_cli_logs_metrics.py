"""Logs and ``kube_vgpu_build_info`` of both binaries.

``--log-format=json`` runs each binary's real ``main`` in a child process (it configures the process's root
logger), with only the parts that need a cluster replaced; every stderr line must be one JSON object, and
the fields the code passes with ``extra=`` must be in it. The text format keeps them too (``key=value``).
``kube_vgpu_build_info`` is read from each binary's real ``/metrics``: the extender's metrics app and the
plugin's node exporter on a real port.
"""

import json
import logging
import subprocess
import sys
import textwrap
import urllib.request
from importlib import metadata

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from extender.__main__ import build
from extender.app import create_metrics_app
from extender.settings import Settings as ExtenderSettings
from extender.signing import AssignmentKeys
from kube_vgpu_cli.logs import LogFormat, _formatter
from plugin.__main__ import node_exporter
from plugin.metrics.sources import XidTally
from tests.builders.plugin import a10x4
from tests.fakes.extender import KEY, SIGNER
from tests.fakes.gpu_source import FakeGpuSource
from tests.fixtures.plugin_env import make_settings
from tests.sim.node import free_port

PLUGIN = """
    import logging, sys
    import plugin.__main__ as m

    async def run(settings, keys):  # instead of the API server, NVML and the kubelet
        logging.getLogger("plugin.mig_partition").warning("kept MIG GPU instance", extra={"gpu": "GPU-1", "gi": 3})
        logging.getLogger("plugin").debug("below the threshold")

    m._run = run
    sys.exit(m.main(["--node-name=n1", "--uninstall", "--log-format=json"]))
"""
EXTENDER = """
    import asyncio, logging, sys, threading, types
    import uvicorn
    import extender.__main__ as m

    class Watcher:
        def start(self): pass
        def stop(self): pass

    state = types.SimpleNamespace(synced=threading.Event())
    m._key = lambda settings: None
    m._api_client = lambda settings: None
    m.build = lambda settings, api, key: (types.SimpleNamespace(state=state), Watcher())
    def listeners(settings, deps):  # a real uvicorn.Config: it installs uvicorn's own text log handlers
        config = uvicorn.Config(app=None, host="127.0.0.1", port=8888, log_level=settings.log_level)
        return [types.SimpleNamespace(name="scheduler", config=config)]

    async def serve(*args):  # uvicorn's own lines, as uvicorn.Server writes them
        logging.getLogger("uvicorn.error").info("Uvicorn running on %s://%s:%d", "http", "127.0.0.1", 8888)
        logging.getLogger("uvicorn.access").info('%s - "%s %s HTTP/%s" %d', "1.2.3.4:5", "GET", "/", "1.1", 200)

    m.listeners = listeners
    m.serve = serve
    sys.exit(m.main(["--log-format=json", "--log-level=INFO"]))
"""


def _json_lines(script: str) -> list[dict[str, object]]:
    child = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert child.returncode == 0, child.stderr
    lines = child.stderr.splitlines()
    assert lines
    return [json.loads(line) for line in lines]  # every line one JSON object


def test_plugin_json_logs_keep_the_structured_fields():
    records = _json_lines(PLUGIN)
    assert len(records) == 1  # the debug line is below --log-level=info
    assert records[0]["message"] == "kept MIG GPU instance"
    assert (records[0]["gpu"], records[0]["gi"]) == ("GPU-1", 3)
    assert (records[0]["level"], records[0]["logger"]) == ("WARNING", "plugin.mig_partition")
    assert "time" in records[0]


def test_extender_json_logs_keep_the_structured_fields():
    records = _json_lines(EXTENDER)
    serving = [r for r in records if r["message"] == "serving"]
    assert serving == [serving[0]]
    assert serving[0]["scheduler"] == "127.0.0.1:8888"  # log.info("serving", extra={listener: address})
    assert (serving[0]["level"], serving[0]["logger"]) == ("INFO", "extender")
    assert {r["logger"] for r in records} >= {"uvicorn.error", "uvicorn.access"}  # uvicorn's lines too


def test_text_logs_keep_the_structured_fields_too():
    record = logging.makeLogRecord(
        {"name": "plugin", "levelname": "WARNING", "msg": "kept", "gpu": "GPU-1", "why": "in use"}
    )
    line = _formatter(LogFormat.TEXT).format(record)
    assert line.endswith("WARNING plugin: kept gpu=GPU-1 why='in use'")


def _build_info(text: str) -> dict[str, str]:
    found = [
        s.labels
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "kube_vgpu_build_info" and s.value == 1.0
    ]
    assert len(found) == 1, text
    return found[0]


def test_extender_metrics_carry_build_info():
    deps, _ = build(ExtenderSettings(), api_client=None, key=AssignmentKeys(SIGNER, KEY))
    reply = TestClient(create_metrics_app(deps)).get("/metrics")
    assert reply.status_code == 200
    labels = _build_info(reply.text)
    assert (labels["binary"], labels["version"]) == ("extender", metadata.version("kube-vgpu"))
    assert labels["python_version"].startswith("3.")


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        return str(reply.read().decode())


def test_plugin_metrics_carry_build_info(tmp_path):
    settings = make_settings(tmp_path, metrics_port=free_port())
    with node_exporter(settings, FakeGpuSource(a10x4()), a10x4().gpus, XidTally(), None) as port:
        text = _scrape(port)
    labels = _build_info(text)
    assert (labels["binary"], labels["version"]) == ("plugin", metadata.version("kube-vgpu"))
    assert "kube_vgpu_" in text.replace("kube_vgpu_build_info", "")  # the node's own series still there
