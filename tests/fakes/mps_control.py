#!/usr/bin/env python3
"""FAKE ``nvidia-cuda-mps-control``: records what it is told and plays the control daemon's life cycle.

What of the real program it reproduces:

- ``-d`` starts a control daemon in the background and returns at once (exit 0): here a detached child
  process (no pipes of its caller kept open) whose pid is written to
  ``$CUDA_MPS_PIPE_DIRECTORY/nvidia-cuda-mps-control.pid``, the file the real daemon writes there; a second
  ``-d`` on a pipe directory whose daemon still runs fails (exit 1), as the real one refuses a second instance;
- without arguments it reads commands from stdin, one per line, as ``echo <cmd> | nvidia-cuda-mps-control``;
  with no daemon running it fails (exit 1, "Cannot find MPS control daemon process"), which is how the
  plugin's health check finds a dead daemon; ``quit`` stops the daemon; ``get_default_active_thread_percentage``
  prints the value set by ``set_default_active_thread_percentage``; other commands print nothing;
- the daemon can be made to die: kill the pid in ``nvidia-cuda-mps-control.pid`` (tests do, to check the restart).

Every call appends one JSON line to ``$FAKE_MPS_LOG`` (argv, the CUDA_* environment, the stdin commands).
It does not start MPS servers, talk to a GPU or enforce any limit.
"""

import json
import os
import signal
import sys
import time
from pathlib import Path


def _alive(pid_file: Path) -> int | None:
    try:
        pid = int(pid_file.read_text())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    try:  # a killed child that nobody reaped is a zombie: not a running daemon
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None
    return None if state == "Z" else pid


def _daemon(pipe: Path) -> int:
    if _alive(pipe / "nvidia-cuda-mps-control.pid") is not None:
        print("An instance of this daemon is already running", file=sys.stderr)
        return 1
    if os.fork() == 0:
        os.setsid()
        if os.fork() != 0:
            os._exit(0)
        devnull = os.open(os.devnull, os.O_RDWR)  # a daemon keeps none of its caller's pipes
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        (pipe / "nvidia-cuda-mps-control.pid").write_text(str(os.getpid()))
        signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
        while (pipe / "nvidia-cuda-mps-control.pid").exists():
            time.sleep(0.05)
        os._exit(0)
    os.wait()
    deadline = time.monotonic() + 5
    while _alive(pipe / "nvidia-cuda-mps-control.pid") is None and time.monotonic() < deadline:
        time.sleep(0.01)
    return 0


def _command(pipe: Path, commands: list[str]) -> int:
    pid = _alive(pipe / "nvidia-cuda-mps-control.pid")
    if pid is None:
        print("Cannot find MPS control daemon process", file=sys.stderr)
        return 1
    settings = pipe / "settings.json"
    values = json.loads(settings.read_text()) if settings.exists() else {}
    for command in commands:
        name, _, arg = command.partition(" ")
        if name == "quit":
            (pipe / "nvidia-cuda-mps-control.pid").unlink(missing_ok=True)
            os.kill(pid, signal.SIGTERM)
        elif name == "set_default_active_thread_percentage":
            values["thread"] = arg
        elif name == "get_default_active_thread_percentage":
            print(values.get("thread", "100.0"))
    settings.write_text(json.dumps(values))
    return 0


def main() -> int:
    pipe = Path(os.environ.get("CUDA_MPS_PIPE_DIRECTORY", "/tmp/nvidia-mps"))
    commands = [] if "-d" in sys.argv[1:] else [c.strip() for c in sys.stdin.read().splitlines() if c.strip()]
    entry = {
        "argv": sys.argv[1:],
        "env": {k: v for k, v in os.environ.items() if k.startswith("CUDA_")},
        "stdin": commands,
    }
    with open(os.environ.get("FAKE_MPS_LOG", "/dev/null"), "a") as log:
        log.write(json.dumps(entry) + "\n")
    return _daemon(pipe) if "-d" in sys.argv[1:] else _command(pipe, commands)


if __name__ == "__main__":
    sys.exit(main())
