"""The Continue CLI's recorded requests replayed against the server (fast; ``cn`` need not be
installed).

The samples (``tests/testing/samples/continue``, see its README) are real
``@continuedev/cli 1.5.47`` traffic over Continue's ``openai`` and ``anthropic`` providers.
Each request body is sent as recorded to a server on the fake claude (scripted as in the
recording); in a tool loop the call id of the recorded run is mapped to the one this run
issued. The answers must match the recording, and the tool result must resume the worker
that paused on the call.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from tests.aider.test_aider_samples import answer_text
from tests.e2e.conftest import open_e2e_server

from .cases import FAKE_SCENARIO, PLAIN_REPLY
from .harness import NOTE_CONTENT

SAMPLES = Path(__file__).parents[1] / "testing" / "samples" / "continue"
NAMES = sorted(p.stem for p in SAMPLES.glob("*.jsonl"))
OUR_ID = re.compile(r"call[0-9a-f]{24}")


def exchanges(name: str) -> list[dict[str, Any]]:
    """A sample's exchanges in arrival order: one per model round."""
    lines = [line for line in (SAMPLES / f"{name}.jsonl").read_text().splitlines() if line]
    return sorted((json.loads(line) for line in lines), key=lambda e: int(e["seq"]))


async def replay(
    client: httpx.AsyncClient, recorded: dict[str, Any], ids: dict[str, str]
) -> httpx.Response:
    body = json.dumps(recorded["request"])
    for old, new in ids.items():
        body = body.replace(old, new)
    headers = {"content-type": "application/json"}
    for name in ("anthropic-version", "anthropic-beta"):
        if name in recorded["headers"]:
            headers[name] = recorded["headers"][name]
    return await client.post(recorded["path"], content=body, headers=headers)


def test_samples_present() -> None:
    assert set(NAMES) == {
        "openai_plain",
        "openai_tool_loop",
        "anthropic_plain",
        "anthropic_tool_loop",
    }


@pytest.mark.parametrize("name", NAMES)
async def test_replayed_requests_answer_as_recorded(tmp_path: Path, name: str) -> None:
    recorded = exchanges(name)
    with trio.fail_after(60):
        async with (
            open_e2e_server(tmp_path, scenario=FAKE_SCENARIO) as server,
            httpx.AsyncClient(base_url=server.base_url, timeout=30) as client,
        ):
            first = await replay(client, recorded[0], {})
            assert first.status_code == 200, first.text
            responses = [first]
            if len(recorded) == 2:
                old = list(dict.fromkeys(OUR_ID.findall(json.dumps(recorded[1]["request"]))))
                new = list(dict.fromkeys(OUR_ID.findall(first.text)))
                assert len(old) == len(new) == 1, (old, new)
                responses.append(
                    await replay(client, recorded[1], dict(zip(old, new, strict=True)))
                )
            stats = await server.stats()
            await server.assert_clean()
    assert len(responses) == len(recorded)
    for response in responses:
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("text/event-stream")
    final = answer_text(recorded[-1]["path"], True, responses[-1].text)
    if name.endswith("_plain"):
        assert final == PLAIN_REPLY
        assert stats["resume_hits"] == 0, stats
    else:
        assert '"Read"' in responses[0].text  # the model called cn's Read tool
        assert NOTE_CONTENT in final
        # the tool result resumed the worker that paused on the call
        assert (stats["resume_hits"], stats["resume_misses"]) == (1, 0), stats
