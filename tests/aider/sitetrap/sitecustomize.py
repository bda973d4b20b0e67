"""Loaded by Aider's Python at start (``PYTHONPATH`` names this directory; tests/aider).

Every socket connection to anything but loopback is refused at once and its address appended
to the file named by ``CLIBRIDGE_NET_TRAP_LOG``: the proxy trap of tests/aider/harness.py
sees the HTTP clients that honour ``HTTPS_PROXY``, this sees whatever does not.
"""

from __future__ import annotations

import os
import socket
from typing import Any

_LOG = os.environ.get("CLIBRIDGE_NET_TRAP_LOG")
_LOOPBACK = ("127.", "::1", "localhost")
_connect = socket.socket.connect
_connect_ex = socket.socket.connect_ex


def _refused(sock: socket.socket, address: Any) -> bool:
    if sock.family not in (socket.AF_INET, socket.AF_INET6):
        return False
    host = str(address[0])
    if host.startswith(_LOOPBACK):
        return False
    if _LOG:
        with open(_LOG, "a") as log:
            log.write(f"{host}:{address[1]}\n")
    return True


def _trapped_connect(self: socket.socket, address: Any) -> None:
    if _refused(self, address):
        raise ConnectionRefusedError(f"{address}: tests allow loopback only")
    return _connect(self, address)


def _trapped_connect_ex(self: socket.socket, address: Any) -> int:
    if _refused(self, address):
        return 111  # ECONNREFUSED
    return _connect_ex(self, address)


socket.socket.connect = _trapped_connect  # type: ignore[method-assign,assignment]
socket.socket.connect_ex = _trapped_connect_ex  # type: ignore[method-assign,assignment]
