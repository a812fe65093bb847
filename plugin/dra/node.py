"""The DRA driver of one node, built from the settings: the preparer, its checkpoint and the served plugin.

:class:`DraNode` is what :mod:`plugin.agent` runs instead of the device plugins when ``--front-end=dra``.
"""

import logging
from collections.abc import Callable, Collection, Mapping
from pathlib import Path

import grpc

from plugin.core.allocate import PlanOptions
from plugin.core.cdi import DriverFiles
from plugin.core.dra import cdi_kind, driver_name, pool_name
from plugin.core.gpu import Gpu
from plugin.core.mig import MigDevice
from plugin.dra.checkpoint import Checkpoint
from plugin.dra.claims import ClaimSource
from plugin.dra.prepare import ClaimPreparer, DriverInfo
from plugin.dra.registration import DraPlugin
from plugin.dra.service import SUPPORTED_VERSIONS, add_dra_services
from plugin.settings import Settings
from plugin.statedir import StateDir

__all__ = ["CHECKPOINT_PATH", "DraNode"]

log = logging.getLogger(__name__)
CHECKPOINT_PATH = Path("dra") / "claims"
"""The checkpoint's folder under the state directory (a host path that outlives the plugin's container)."""


class DraNode:
    def __init__(
        self,
        settings: Settings,
        *,
        claims: ClaimSource,
        state: StateDir,
        gpus: Callable[[], Mapping[str, Gpu | MigDevice]],
        unhealthy: Callable[[], Collection[str]],
        plan: PlanOptions,
        files: DriverFiles,
        poll_s: float = 0.2,
    ) -> None:
        s = settings
        self.driver = driver_name(s.resource_domain)
        info = DriverInfo(
            driver=self.driver,
            domain=s.resource_domain,
            pool=pool_name(s.node_name),
            cdi_kind=cdi_kind(s.resource_domain),
            cdi_dir=s.cdi_dir,
            cdi_version=s.cdi_spec_version,
            plan=plan,
            files=files,
        )
        checkpoint = Checkpoint(s.state_dir / CHECKPOINT_PATH)
        self.preparer = ClaimPreparer(
            info=info, claims=claims, state=state, checkpoint=checkpoint, gpus=gpus, unhealthy=unhealthy
        )
        self.plugin = DraPlugin(
            driver=self.driver,
            registry_dir=s.dra_registry_dir,
            plugins_dir=s.dra_plugins_dir,
            versions=SUPPORTED_VERSIONS,
            add_services=self._add_services,
            poll_s=poll_s,
        )

    def _add_services(self, server: grpc.aio.Server) -> None:
        add_dra_services(server, self.preparer)

    async def run(self) -> None:
        restored = self.preparer.restore()
        if restored:
            log.info("wrote the files of %d prepared claims again from the checkpoint", restored)
        await self.plugin.run()
