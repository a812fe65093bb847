"""Serve an extender app (or the extender's own listeners) with real uvicorn servers on loopback ports, inside
the test's event loop."""

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any

import uvicorn

STARTUP_TIMEOUT_S = 10.0


@contextlib.asynccontextmanager
async def serving(app: Any, **config: Any) -> AsyncIterator[int]:
    """Yield the port of a running uvicorn server for ``app``; stop it on exit (bounded waits)."""
    config.setdefault("timeout_keep_alive", 120)  # a busy test machine must not see idle sockets closed
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", **config))
    task = asyncio.create_task(server.serve())
    async with asyncio.timeout(STARTUP_TIMEOUT_S):
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
    try:
        yield server.servers[0].sockets[0].getsockname()[1]
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, STARTUP_TIMEOUT_S)


@contextlib.asynccontextmanager
async def serving_listeners(listeners: Sequence[Any]) -> AsyncIterator[None]:
    """Run the extender's own listeners (``extender.listeners.Listener``) in this event loop, as ``__main__``
    does; stop them on exit (bounded waits)."""
    servers = [uvicorn.Server(item.config) for item in listeners]
    tasks = [asyncio.create_task(server.serve()) for server in servers]
    async with asyncio.timeout(STARTUP_TIMEOUT_S):
        while not all(server.started for server in servers):
            for task in tasks:
                if task.done():
                    task.result()
            await asyncio.sleep(0.01)
    try:
        yield
    finally:
        for server in servers:
            server.should_exit = True
        await asyncio.wait_for(asyncio.gather(*tasks), STARTUP_TIMEOUT_S)
