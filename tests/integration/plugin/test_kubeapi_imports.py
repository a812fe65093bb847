"""The plugin imports the real ``kubernetes`` client without its package ``__init__`` files (memory on every
GPU node), and nothing behaves differently for code that asks for more.

Cases (each in a fresh interpreter, since imports are process state): the plugin's import leaves out the
client's parts a node agent never uses, and the kubeconfig loader; a package under :func:`defer_init` runs its
``__init__`` only on the first name it lacks, once, and then answers as if imported normally; the real client
stays whole for anyone who asks (``kubernetes.dynamic``, ``config.load_kube_config``).
"""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

UNUSED = [
    "kubernetes.dynamic",
    "kubernetes.stream",
    "kubernetes.informer",
    "kubernetes.leaderelection",
    "kubernetes.config.kube_config",
    "kubernetes_validate",
    "oauthlib",
    "requests_oauthlib",
]


def _run(code: str, cwd: Path | None = None) -> object:
    """Runs ``code`` in a new interpreter; answers what it prints as JSON on its last line."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, cwd=cwd, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_plugin_imports_none_of_the_client_parts_it_never_uses() -> None:
    loaded = _run(f"""
        import json, sys
        import plugin.__main__
        print(json.dumps([m for m in {UNUSED!r} if m in sys.modules]))
    """)
    assert loaded == []


def test_the_client_is_whole_for_code_that_asks_for_more() -> None:
    answers = _run("""
        import json
        import plugin.kubeapi
        import kubernetes
        from kubernetes import config, watch
        print(json.dumps([
            kubernetes.__version__ != "", kubernetes.dynamic.DynamicClient.__name__, watch.Watch.__name__,
            config.load_kube_config.__name__, config.ConfigException is plugin.kubeapi.ConfigException,
        ]))
    """)
    assert answers == [True, "DynamicClient", "Watch", "load_kube_config", True]


def test_a_deferred_package_runs_its_init_once_on_the_first_name_it_lacks(tmp_path: Path) -> None:
    package = tmp_path / "heavy"
    package.mkdir()
    (package / "__init__.py").write_text("import builtins\nbuiltins.RUNS = getattr(builtins, 'RUNS', 0) + 1\n"
                                         "from . import light\nEXTRA = 'from __init__'\n")  # fmt: skip
    (package / "light.py").write_text("VALUE = 7\n")
    answers = _run(
        """
        import builtins, json
        from plugin.kubeapi import defer_init
        defer_init("heavy")
        from heavy.light import VALUE
        before = getattr(builtins, "RUNS", 0)
        import heavy
        extra = heavy.EXTRA
        again = heavy.EXTRA
        try:
            heavy.missing
            missing = "found"
        except AttributeError as err:
            missing = str(err)
        print(json.dumps([VALUE, before, extra, builtins.RUNS, missing]))
        """,
        cwd=tmp_path,
    )
    assert answers == [7, 0, "from __init__", 1, "module 'heavy' has no attribute 'missing'"]
