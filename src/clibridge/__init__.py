"""clibridge: the claude and codex CLIs as a local OpenAI / Anthropic compatible model API."""

from __future__ import annotations

from ._config import Config, PoolConfig
from ._errors import BridgeError
from ._events import Request

__version__ = "0.1.0"

__all__ = ["BridgeError", "Config", "PoolConfig", "Request", "__version__"]
