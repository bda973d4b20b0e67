"""clibridge: the claude and codex CLIs as a local OpenAI / Anthropic compatible model API.

The public names are imported lazily: the bundled fake CLIs import ``clibridge.testing``
on every start and should not pay for the server's modules.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["BridgeError", "Config", "PoolConfig", "Request", "__version__"]

if TYPE_CHECKING:
    from ._config import Config, PoolConfig
    from ._errors import BridgeError
    from ._events import Request

_LAZY = {
    "Config": "._config",
    "PoolConfig": "._config",
    "BridgeError": "._errors",
    "Request": "._events",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module 'clibridge' has no attribute {name!r}")
