"""serve_http (bound address, graceful shutdown) and the startup banner."""

from __future__ import annotations

import shutil
import subprocess

import httpx
import pytest
import trio

from clibridge._config import Config, ServerConfig
from clibridge._events import TextDelta, TurnStarted
from clibridge._http import banner
from clibridge._models import ModelTable
from clibridge._service import Readiness
from clibridge._supervisor import Supervisor

from .conftest import MODEL, Script, ScriptedService, Sleep, ThreadedServer, open_server
from .helpers import PATHS, body_for, parse_sse


async def test_serve_http_reports_the_bound_port_and_drains_on_shutdown() -> None:
    async with open_server(drain_timeout=1.0) as server:
        assert server.base_url.startswith("http://127.0.0.1:")
        assert not server.base_url.endswith(":0")
        server.service.default = Script(steps=[TurnStarted(MODEL), TextDelta("first"), Sleep(60)])
        async with (
            httpx.AsyncClient(base_url=server.base_url) as client,
            trio.open_nursery() as nursery,
        ):
            result: list[httpx.Response] = []

            async def stream() -> None:
                result.append(
                    await client.post(
                        PATHS["anthropic_messages"],
                        json=body_for("anthropic_messages", stream=True),
                    )
                )

            nursery.start_soon(stream)
            with trio.fail_after(5):
                await server.service.wait_until(
                    lambda: bool(server.service.records) and server.service.last().sent > 1
                )
            started = trio.current_time()
            server.shutdown.set()  # the supervisor's trigger: serve_http sets app.draining
        # the stream ended with a final error event, well before Hypercorn would cancel it
        assert parse_sse(result[0].content)[-1][0] == "error"
        assert b"shutting down" in result[0].content
        assert trio.current_time() - started < 1.5
    assert server.service.last().exited


def test_banner_fake_notice_and_auth_curl() -> None:
    service = ScriptedService()
    service.ready = Readiness(True, "claude: 1 idle worker", fake=True)
    text = banner(Config(backend="fake"), "127.0.0.1", 7483, service)
    assert "http://127.0.0.1:7483/v1" in text
    assert "FAKE CLI" in text and "claude: 1 idle worker" in text
    assert "curl -N http://127.0.0.1:7483/v1/chat/completions" in text
    assert "Authorization" not in text
    service.ready = Readiness(True, "claude: 2 idle workers", fake=False)
    config = Config(server=ServerConfig(host="0.0.0.0", auth_token="s3cret"))
    text = banner(config, "0.0.0.0", 7483, service)
    assert "FAKE" not in text.replace("(via", "")  # no notice for a real backend
    assert '"Authorization: Bearer $CLIBRIDGE_API_KEY"' in text
    assert "s3cret" not in text


def test_banner_says_the_fake_was_chosen_on_purpose_with_backend_fake() -> None:
    """Regression: ``--backend fake`` printed "no logged-in claude / codex was found"."""
    table = ModelTable(["claude"], fake_backends=["claude"])
    supervisor = Supervisor({}, table, fake=True, fake_on_purpose=True)
    assert supervisor.readiness().fake
    assert "chosen on purpose" in supervisor.readiness().reason  # /readyz says it too
    text = banner(Config(backend="fake"), "127.0.0.1", 7483, supervisor)
    assert "chosen on purpose" in text and "FAKE CLI" in text
    assert "no logged-in" not in text and "no login" not in text
    assert "pool:                FAKE CLI (backend = fake, chosen on purpose): " in text
    # auto without a login: the fake is a fallback, and the banner says so
    supervisor = Supervisor({}, table, fake=True)
    text = banner(Config(backend="auto"), "127.0.0.1", 7483, supervisor)
    assert "no logged-in claude / codex was found" in text
    assert "chosen on purpose" not in text


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_the_banner_curl_command_works() -> None:
    with ThreadedServer() as server:
        host, port = server.base_url.removeprefix("http://").split(":")
        text = banner(Config(), host, int(port), server.service)
        command = next(
            line.strip() for line in text.splitlines() if line.strip().startswith("curl ")
        )
        proc = subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert "Hello," in proc.stdout and proc.stdout.rstrip().endswith("data: [DONE]")
