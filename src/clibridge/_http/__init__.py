"""The HTTP front end: a Quart-Trio app on Hypercorn (see :mod:`.app` for the routes)."""

from __future__ import annotations

from .app import BridgeApp, create_app, estimate_tokens
from .server import banner, serve_http

__all__ = ["BridgeApp", "banner", "create_app", "estimate_tokens", "serve_http"]
