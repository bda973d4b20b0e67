"""``clibridge openclaw-config``: the OpenClaw provider block for a running clibridge.

Theory of operation
-------------------
OpenClaw (the first client clibridge is built for) names a model API as a *provider* in
its config (``~/.openclaw/openclaw.json``): a base URL, an API type, a key and the models
with their context windows. :func:`provider_block` builds that block from what a running
clibridge lists at ``/v1/models``; :func:`merge_into` puts it into an existing config
(``models.providers.clibridge``, ``models.mode = "merge"`` so OpenClaw's other providers
stay, and the default agent model when none is set). The command fetches the model list,
then prints the block, or writes the merged file after copying the old one aside.

Pure except :func:`fetch_models` and :func:`write_merged` (the only IO).
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

#: the provider name OpenClaw knows clibridge by (``clibridge/<model>`` in its model refs)
PROVIDER: Final = "clibridge"
#: OpenClaw's API types; only ``anthropic-messages`` takes a base URL without ``/v1``
API_TYPES: Final = ("openai-completions", "openai-responses", "anthropic-messages")

#: (context window, output tokens to advertise) per backend. OpenClaw plans compaction with
#: the window; the CLIs manage their own context, so these are the models' documented sizes.
_LIMITS: Final = {"claude": (200_000, 32_000), "codex": (272_000, 32_000)}


class OpenClawConfigError(Exception):
    """What went wrong, said so the user can fix it."""


def base_url_for(server: str, api: str) -> str:
    """The ``baseUrl`` OpenClaw wants for ``api``: its OpenAI clients need ``/v1``."""
    if api not in API_TYPES:
        raise OpenClawConfigError(f"unknown API type {api!r}: one of {', '.join(API_TYPES)}")
    root = server.rstrip("/").removesuffix("/v1")
    return root if api == "anthropic-messages" else root + "/v1"


def provider_block(
    server: str, api: str, key: str, models: Sequence[Mapping[str, Any]]
) -> dict[str, Any]:
    """OpenClaw's ``models.providers.clibridge`` for ``models`` (``/v1/models`` entries)."""
    entries = []
    for model in models:
        window, output = _LIMITS.get(str(model.get("backend")), _LIMITS["claude"])
        entries.append(
            {
                "id": str(model["id"]),
                "name": str(model.get("display_name") or model["id"]),
                "reasoning": False,
                "input": ["text", "image"],
                "contextWindow": int(model.get("context_window") or window),
                "maxTokens": int(model.get("max_output_tokens") or output),
            }
        )
    if not entries:
        raise OpenClawConfigError("the server lists no models (is a backend configured?)")
    return {"baseUrl": base_url_for(server, api), "apiKey": key, "api": api, "models": entries}


def merge_into(config: Mapping[str, Any], block: Mapping[str, Any]) -> dict[str, Any]:
    """``config`` with ``block`` as the clibridge provider; other settings untouched."""
    merged: dict[str, Any] = json.loads(json.dumps(config))  # a deep copy of plain JSON
    models = merged.setdefault("models", {})
    models.setdefault("mode", "merge")
    models.setdefault("providers", {})[PROVIDER] = dict(block)
    model = merged.setdefault("agents", {}).setdefault("defaults", {}).setdefault("model", {})
    if not model.get("primary"):
        model["primary"] = f"{PROVIDER}/{block['models'][0]['id']}"
    return merged


def fetch_models(server: str, key: str | None, timeout: float = 5.0) -> list[dict[str, Any]]:
    """``/v1/models`` of the clibridge at ``server``; OpenClawConfigError when unreachable."""
    import httpx

    url = server.rstrip("/").removesuffix("/v1") + "/v1/models"
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    try:
        response = httpx.get(url, headers=headers, timeout=timeout)
    except httpx.HTTPError as exc:
        raise OpenClawConfigError(
            f"cannot reach clibridge at {url}: {exc} (is `clibridge serve` running? "
            "--url names another address)"
        ) from exc
    if response.status_code != 200:
        raise OpenClawConfigError(
            f"{url} answered {response.status_code}: {response.text[:300]} "
            "(--key gives the server's API key)"
        )
    data = response.json().get("data")
    return [m for m in data if isinstance(m, dict)] if isinstance(data, list) else []


def write_merged(path: Path, block: Mapping[str, Any]) -> Path | None:
    """Merge ``block`` into the JSON config at ``path`` (created if missing).

    The old file is first copied to ``path.bak-<unix time>``, which is returned.
    """
    backup = None
    config: dict[str, Any] = {}
    if path.exists():
        try:
            config = json.loads(path.read_text())
        except ValueError as exc:
            raise OpenClawConfigError(
                f"{path} is not plain JSON ({exc}); print the block without --write "
                "and paste it under models.providers yourself"
            ) from exc
        if not isinstance(config, dict):
            raise OpenClawConfigError(f"{path} does not hold a JSON object")
        backup = path.with_name(f"{path.name}.bak-{int(time.time())}")
        shutil.copy2(path, backup)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(merge_into(config, block), indent=2) + "\n")
    return backup
