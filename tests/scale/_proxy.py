"""The LiteLLM proxy (pinned by ``scripts/install-litellm.sh``) as a child process, in front of
clibridge instances, for tests/scale and bench/litellm_sticky.py.

:func:`litellm_proxy` writes the config with ``clibridge litellm-config --out`` (the real
command, so the test covers what users run), starts ``litellm --config`` on a loopback port
in a session of its own, waits until it answers, and on exit stops it (SIGTERM, then
SIGKILL to its group) and waits until nothing of it is alive. LiteLLM's own log goes to a
file next to the config (its tail is in every failure message).
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager, suppress
from pathlib import Path

import attrs
import httpx
import pytest
import trio

from clibridge._cli import main as clibridge_main
from tests._procs import alive, in_groups, wait_gone

ROOT = Path(__file__).resolve().parents[2]
#: where scripts/install-litellm.sh puts it (CLIBRIDGE_LITELLM_DIR overrides, as there)
LITELLM_DIR = Path(os.environ.get("CLIBRIDGE_LITELLM_DIR", ROOT / ".cache" / "litellm"))
LITELLM_EXE = LITELLM_DIR / "venv" / "bin" / "litellm"
#: the key every instance in these tests wants, and the proxy's own
INSTANCE_KEY = "scale-test-key"


def free_port() -> int:
    """A loopback port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def litellm_exe() -> Path:
    """The pinned LiteLLM; skips (fails under ``CI``) when it is not installed."""
    if LITELLM_EXE.exists() and (LITELLM_DIR / ".installed").exists():
        return LITELLM_EXE
    problem = f"{LITELLM_EXE} not found: run scripts/install-litellm.sh"
    if os.environ.get("CI"):
        pytest.fail(f"LiteLLM missing in CI: {problem}", pytrace=False)
    pytest.skip(f"LiteLLM missing: {problem}")


@attrs.frozen
class Proxy:
    url: str
    master_key: str
    log: Path
    pid: int

    def log_tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""


def write_config(directory: Path, instances: Sequence[str], *extra: str) -> Path:
    """``clibridge litellm-config --out directory`` for ``instances``; the config path."""
    argv = ["litellm-config", "--key", INSTANCE_KEY, "--out", str(directory), *extra]
    for url in instances:
        argv += ["--instance", url]
    assert clibridge_main(argv, environ={}) == 0
    return directory / "config.yaml"


@asynccontextmanager
async def litellm_proxy(
    directory: Path, instances: Sequence[str], *extra: str, start_within: float = 60.0
) -> AsyncIterator[Proxy]:
    """LiteLLM on a free loopback port routing to ``instances``; ``extra`` goes to
    ``clibridge litellm-config``."""
    exe = litellm_exe()
    config = write_config(directory, instances, *extra)
    port = free_port()
    master_key = "sk-" + secrets.token_hex(16)
    log = directory / "litellm.log"
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(directory),
        "LITELLM_MASTER_KEY": master_key,
        # the model price map ships in the package; without this LiteLLM fetches it
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "NO_PROXY": "127.0.0.1,localhost",
        "PYTHONUNBUFFERED": "1",
    }
    argv = [str(exe), "--config", str(config), "--host", "127.0.0.1", "--port", str(port)]
    with log.open("wb") as sink:
        process = await trio.lowlevel.open_process(
            argv,
            cwd=str(directory),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    proxy = Proxy(f"http://127.0.0.1:{port}", master_key, log, process.pid)
    try:
        async with httpx.AsyncClient(trust_env=False, timeout=5.0) as client:
            with trio.fail_after(start_within):
                while True:
                    if process.poll() is not None:
                        raise AssertionError(f"litellm exited early: {proxy.log_tail()}")
                    with suppress(httpx.HTTPError):
                        response = await client.get(proxy.url + "/health/liveliness")
                        if response.status_code == 200:
                            break
                    await trio.sleep(0.2)
        yield proxy
    finally:
        with trio.CancelScope(shield=True):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                with trio.move_on_after(10):
                    await process.wait()
            with suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
            left = {p for p in in_groups({process.pid}) if alive(p)}
            await wait_gone(left, within=5.0)
