"""``clibridge litellm-config``: a LiteLLM proxy ``config.yaml`` for several clibridge instances.

Theory of operation
-------------------
One clibridge serves one machine's logins. More machines go behind the LiteLLM proxy
(``litellm[proxy]``): every client model name becomes a LiteLLM *model group* with one
*deployment* per instance, and LiteLLM's router spreads requests over the deployments,
retries a failed one elsewhere and cools a failing deployment down. What is generated,
and why:

* **Models** come from the backend registry (:data:`clibridge._models.BUILTIN`), not from
  a running server: the config can be written before the instances run. Claude models
  are ``anthropic/<name>`` deployments (LiteLLM's ``/v1/messages`` passes Anthropic
  requests through unchanged), codex models ``openai/<name>`` deployments at ``/v1``
  (Chat Completions and Responses pass through). Each deployment has a stable id
  (``<instance>-<model>``) and names its instance in ``model_info.clibridge_instance``.
* **Failures**: a request that fails with 429 (a full queue, or the upstream's rate limit)
  or 503 (not ready, draining, login expired), or cannot connect (an instance that died),
  is retried on another deployment at once, and the deployment is cooled down for
  :data:`COOLDOWN` seconds (``--cooldown``) (``allowed_fails: 0``: the first failure counts). A 400 / 401 /
  404 is the client's and is not retried; nor is a timeout (the turn may have run).
* **Timeouts** fit long agent turns: LiteLLM waits :data:`TIMEOUT_MARGIN` seconds longer
  than the instances' own ``turn_timeout``, so clibridge's 504 (and its cleanup) comes
  first. For streams the same value bounds the silence between chunks, which clibridge
  fills with keep-alives.
* **Keeping a conversation on one instance** (a follow-up that lands on another instance
  is correct but replays the whole history there, see docs/scale-out.md): LiteLLM has no
  content-based stickiness for plain requests. What it offers, and what is enabled:
  ``session_affinity`` (a session id from the ``x-litellm-session-id`` header, another
  ``x-<vendor>-session-id`` / ``x-session-id`` header or ``metadata.session_id`` pins the
  session to the deployment that served it first), ``responses_api_deployment_check``
  (a Responses request with ``previous_response_id`` goes where that response was made;
  inert while clibridge refuses ``previous_response_id``) and ``prompt_caching``
  (Anthropic-style requests with ``cache_control`` whose messages -- the system prompt
  not counted -- reach 1,024 tokens go where that prefix was sent before). Requests with none of these are spread by
  the routing strategy: ``simple-shuffle`` (random). ``least-busy`` (``--routing``) breaks
  ties by order, and a burst of requests all see the same counts: measured, it sent a
  burst to the first instance until its queue overflowed.
* **Health checks** against ``/readyz``: LiteLLM's own health checks send a completion
  to every deployment (a paid turn each time), so they stay off. With ``--out DIR`` the
  command also writes ``clibridge_readyz.py`` (:mod:`clibridge._litellm_readyz`), a
  LiteLLM callback that probes every instance's ``/readyz`` every
  :data:`READYZ_INTERVAL` seconds and keeps requests away from instances that are not
  ready. Without it, an instance that is down is found by the first request that fails
  on it (then retried elsewhere and cooled down).

Pure except :func:`write_config` (the only IO).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

from ._backends import BACKENDS
from ._models import BUILTIN

#: seconds LiteLLM waits beyond the instances' turn_timeout
TIMEOUT_MARGIN: Final = 60.0
#: seconds a failing deployment is left out
COOLDOWN: Final = 10.0
#: retries of one request on other deployments (429 / 503 / connection errors)
RETRIES: Final = 3
#: seconds a session stays pinned to a deployment without requests
AFFINITY_TTL: Final = 3600
#: seconds between two /readyz probes of one instance (the callback file)
READYZ_INTERVAL: Final = 2.0
#: the callback module written next to the config with ``--out``
CALLBACK_MODULE: Final = "clibridge_readyz"

#: how LiteLLM speaks to a backend's models: (provider prefix, path after the instance)
_PROVIDER: Final = {"claude": ("anthropic", ""), "codex": ("openai", "/v1")}


class LiteLLMConfigError(Exception):
    """What is wrong with the arguments, said so the user can fix it."""


def instance_url(url: str) -> str:
    """``url`` as an instance root (``http://host:port``); a ``/v1`` suffix is dropped."""
    root = url.strip().rstrip("/").removesuffix("/v1")
    parts = urlsplit(root)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise LiteLLMConfigError(
            f"--instance {url!r}: expected the URL of a running clibridge, "
            "like http://10.0.0.5:8080"
        )
    if parts.path or parts.query or parts.fragment:
        raise LiteLLMConfigError(f"--instance {url!r}: give the server's root URL, no path")
    return root


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def model_names(backends: Iterable[str] | None = None) -> list[tuple[str, str]]:
    """(client model name, backend) of every built-in model, optionally of some backends."""
    wanted = set(BACKENDS) if backends is None else set(backends)
    unknown = wanted - set(BACKENDS)
    if unknown:
        raise LiteLLMConfigError(
            f"--backend {', '.join(sorted(unknown))}: known backends are {', '.join(BACKENDS)}"
        )
    return [(alias, backend) for alias, backend, _ in BUILTIN if backend in wanted]


def build_config(
    instances: Sequence[str],
    *,
    key: str | None = None,
    models: Sequence[tuple[str, str]] | None = None,
    turn_timeout: float = 600.0,
    cooldown: float = COOLDOWN,
    routing: str = "simple-shuffle",
    readyz_callback: bool = False,
) -> dict[str, Any]:
    """The LiteLLM proxy config for ``instances`` (root URLs) as plain data.

    ``key`` is what LiteLLM sends to the instances (their ``server.auth_token``); None
    reads it from ``CLIBRIDGE_API_KEY`` in LiteLLM's environment.
    """
    roots = [instance_url(u) for u in instances]
    if not roots:
        raise LiteLLMConfigError("name at least one --instance URL")
    if len(set(roots)) != len(roots):
        raise LiteLLMConfigError("an --instance is named twice")
    entries = model_names() if models is None else list(models)
    if not entries:
        raise LiteLLMConfigError("no models to route")
    timeout = turn_timeout + TIMEOUT_MARGIN
    api_key = key if key else "os.environ/CLIBRIDGE_API_KEY"
    model_list = []
    for name, backend in entries:
        provider, suffix = _PROVIDER[backend]
        for root in roots:
            host = urlsplit(root)
            model_list.append(
                {
                    "model_name": name,
                    "litellm_params": {
                        "model": f"{provider}/{name}",
                        "api_base": root + suffix,
                        "api_key": api_key,
                        "timeout": timeout,
                        "stream_timeout": timeout,
                    },
                    "model_info": {
                        "id": _slug(f"{host.hostname}-{host.port or ''}-{name}"),
                        "clibridge_instance": root,
                        "clibridge_backend": backend,
                    },
                }
            )
    router: dict[str, Any] = {
        "routing_strategy": routing,
        "optional_pre_call_checks": [
            "session_affinity",
            "responses_api_deployment_check",
            "prompt_caching",
        ],
        "deployment_affinity_ttl_seconds": AFFINITY_TTL,
        "num_retries": RETRIES,
        "retry_policy": {
            "RateLimitErrorRetries": RETRIES,
            "ServiceUnavailableErrorRetries": RETRIES,
            "InternalServerErrorRetries": RETRIES,
            "TimeoutErrorRetries": 0,
            "BadRequestErrorRetries": 0,
            "AuthenticationErrorRetries": 0,
            "NotFoundErrorRetries": 0,
            "ContentPolicyViolationErrorRetries": 0,
        },
        "allowed_fails": 0,
        "cooldown_time": cooldown,
        "retry_after": 0,
        "timeout": timeout,
        "stream_timeout": timeout,
    }
    settings: dict[str, Any] = {"request_timeout": timeout, "drop_params": False}
    if readyz_callback:
        settings["callbacks"] = [f"{CALLBACK_MODULE}.readyz_filter"]
    return {
        "model_list": model_list,
        "router_settings": router,
        "litellm_settings": settings,
        # LiteLLM refuses to start without its own key (what its clients send)
        "general_settings": {"master_key": "os.environ/LITELLM_MASTER_KEY"},
    }


# --------------------------------------------------------------------------- YAML


def _scalar(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return json.dumps(value)
    # a JSON string is a valid double-quoted YAML scalar
    return json.dumps(str(value), ensure_ascii=False)


def _yaml_lines(data: Any, indent: int) -> list[str]:
    pad = " " * indent
    lines: list[str] = []
    if isinstance(data, Mapping):
        for k, v in data.items():
            if isinstance(v, (Mapping, list)) and v:
                lines.append(f"{pad}{k}:")
                lines += _yaml_lines(v, indent + 2)
            elif isinstance(v, Mapping):
                lines.append(f"{pad}{k}: {{}}")
            elif isinstance(v, list):
                lines.append(f"{pad}{k}: []")
            else:
                lines.append(f"{pad}{k}: {_scalar(v)}")
        return lines
    if isinstance(data, list):
        for item in data:
            inner = _yaml_lines(item, indent + 2)
            if isinstance(item, (Mapping, list)) and inner:
                lines.append(f"{pad}- {inner[0].lstrip()}")
                lines += inner[1:]
            else:
                lines.append(f"{pad}- {_scalar(item)}")
        return lines
    return [pad + _scalar(data)]


def to_yaml(config: Mapping[str, Any], *, header: str = "") -> str:
    """``config`` as YAML (block style; strings double-quoted), with a comment header."""
    comment = "".join(f"# {line}".rstrip() + "\n" for line in header.splitlines())
    blocks = ["\n".join(_yaml_lines({k: v}, 0)) for k, v in config.items()]
    return comment + "\n\n".join(blocks) + "\n"


def header_for(instances: Sequence[str], *, readyz_callback: bool) -> str:
    health = (
        f"{CALLBACK_MODULE}.py (next to this file) probes each instance's /readyz"
        if readyz_callback
        else "no /readyz probe: write the config with --out DIR to get the probe callback"
    )
    return (
        "LiteLLM proxy config for clibridge, generated by `clibridge litellm-config`.\n"
        f"instances: {', '.join(instance_url(u) for u in instances)}\n"
        f"health: {health}\n"
        "run: litellm --config config.yaml --port 4000   (see docs/scale-out.md)"
    )


def callback_source() -> str:
    """The source of the ``/readyz`` callback module LiteLLM loads (``--out``)."""
    return resources.files("clibridge").joinpath("_litellm_readyz.py").read_text()


def write_config(directory: Path, text: str) -> list[Path]:
    """Write ``config.yaml`` and the callback module into ``directory``; the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / "config.yaml"
    callback = directory / f"{CALLBACK_MODULE}.py"
    config.write_text(text)
    callback.write_text(callback_source())
    return [config, callback]
