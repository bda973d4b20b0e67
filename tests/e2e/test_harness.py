"""The e2e harness can fail: its process-table checks catch a stray process."""

from __future__ import annotations

import json
import subprocess

import pytest
import trio

from .conftest import E2EServer


async def _stray() -> trio.Process:
    return await trio.lowlevel.open_process(
        ["sleep", "30"], stdin=subprocess.DEVNULL, start_new_session=True
    )


async def test_assert_clean_catches_an_unexpected_child(fake_server: E2EServer) -> None:
    stray = await _stray()
    try:
        with pytest.raises(AssertionError, match="unexpected children"):
            await fake_server.assert_clean(settle=1.0)
    finally:
        stray.kill()
        await stray.wait()
    await fake_server.assert_clean()


async def test_assert_clean_catches_a_cli_process_outside_the_pool(
    fake_server: E2EServer,
) -> None:
    stray = await _stray()
    try:
        # what a leaked fake CLI looks like in the record: a pid no pool lists
        with fake_server.record.open("a") as f:
            f.write(json.dumps({"argv": ["claude"], "pid": stray.pid}) + "\n")
        with pytest.raises(AssertionError, match="outside the pools"):
            await fake_server.assert_clean(settle=1.0)
    finally:
        stray.kill()
        await stray.wait()
    await fake_server.assert_clean()
