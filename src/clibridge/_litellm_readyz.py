"""A LiteLLM proxy callback that keeps requests away from clibridge instances that are not ready.

Not imported by clibridge: ``clibridge litellm-config --out DIR`` copies this file to
``DIR/clibridge_readyz.py`` and the generated ``config.yaml`` names it under
``litellm_settings.callbacks``, so it runs inside the LiteLLM proxy (its own venv, where
``litellm`` and ``httpx`` are installed).

Theory of operation
-------------------
Every deployment of the generated config names its instance in
``model_info.clibridge_instance``. The router asks every callback to filter the healthy
deployments of a request (:meth:`ReadyzFilter.async_filter_deployments`); the filter
learns the instances from them, starts one probe task on the proxy's event loop the first
time, and leaves out the deployments of instances whose last ``GET /readyz`` did not
answer 200 (a dead, draining, crash-looping or not-logged-in instance). When no instance
is ready the deployments are left as they are, so the client gets the instances' own
error rather than LiteLLM's "no deployments". LiteLLM's own health checks are not used:
they send a completion to every deployment, a paid turn each time.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx
from litellm.integrations.custom_logger import (  # type: ignore[import-not-found,unused-ignore]
    CustomLogger,
)

#: seconds between two probes of one instance, and the timeout of one probe
INTERVAL = 2.0
PROBE_TIMEOUT = 2.0

log = logging.getLogger("clibridge.readyz")


def _instance(deployment: Any) -> str | None:
    info = deployment.get("model_info") if isinstance(deployment, dict) else None
    value = info.get("clibridge_instance") if isinstance(info, dict) else None
    return value if isinstance(value, str) else None


class ReadyzFilter(CustomLogger):  # type: ignore[misc,unused-ignore]
    """Drops the deployments of instances that are not ready (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self.instances: set[str] = set()
        self.not_ready: set[str] = set()
        self._task: asyncio.Task[None] | None = None

    async def _probe(self, client: httpx.AsyncClient, root: str) -> None:
        try:
            response = await client.get(root + "/readyz")
            ready = response.status_code == 200
        except httpx.HTTPError:
            ready = False
        if ready and root in self.not_ready:
            log.warning("clibridge instance %s is ready again", root)
            self.not_ready.discard(root)
        elif not ready and root not in self.not_ready:
            log.warning("clibridge instance %s is not ready: requests go elsewhere", root)
            self.not_ready.add(root)

    async def _run(self) -> None:
        async with httpx.AsyncClient(timeout=PROBE_TIMEOUT, trust_env=False) as client:
            while True:
                await asyncio.gather(*(self._probe(client, r) for r in sorted(self.instances)))
                await asyncio.sleep(INTERVAL)

    async def async_filter_deployments(
        self,
        model: str,
        healthy_deployments: list[Any],
        messages: Any,
        request_kwargs: Any = None,
        parent_otel_span: Any = None,
    ) -> list[Any]:
        for deployment in healthy_deployments:
            root = _instance(deployment)
            if root is not None:
                self.instances.add(root)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())
        kept = [d for d in healthy_deployments if _instance(d) not in self.not_ready]
        return kept or healthy_deployments


readyz_filter = ReadyzFilter()
