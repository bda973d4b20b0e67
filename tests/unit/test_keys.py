"""Named keys: hashed storage, the ``clibridge keys`` command, the KeyRing's quotas."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import stat
from pathlib import Path

import pytest
import trio
import trio.testing

from clibridge._cli import main
from clibridge._config_load import ConfigError, load_config
from clibridge._errors import QuotaExceeded
from clibridge._http._keyring import KeyRing
from clibridge._keys import KEY_PREFIX, KeysError, KeyStore, Quotas, keys_path, today


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv), environ={})
    out, err = capsys.readouterr()
    return code, out, err


def test_keys_are_stored_hashed_in_a_private_file(tmp_path: Path) -> None:
    store = KeyStore.open(tmp_path)
    try:
        key = store.add("alice", Quotas(rpm=5))
    finally:
        store.close()
    assert key.startswith(KEY_PREFIX) and len(key) >= 40
    path = keys_path(tmp_path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(tmp_path.stat().st_mode) == 0o700
    raw = path.read_bytes()
    assert key.encode() not in raw
    assert key[len(KEY_PREFIX) + 4 :].encode() not in raw  # not even its secret part
    with sqlite3.connect(path) as db:
        (digest,) = db.execute("SELECT digest FROM keys WHERE name = 'alice'").fetchone()
    assert digest == hashlib.sha256(key.encode()).digest()


def test_cli_round_trip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    home = str(tmp_path / "state")
    code, key, err = _cli(
        capsys, "keys", "add", "alice", "--concurrency", "2", "--rpm", "30",
        "--daily-tokens", "1000", "--state-dir", home,
    )  # fmt: skip
    assert code == 0, err
    key = key.strip()
    assert key.startswith(KEY_PREFIX) and "shown this once" in err
    code, admin_key, err = _cli(capsys, "keys", "add", "ops", "--admin", "--state-dir", home)
    assert code == 0, err

    code, out, _ = _cli(capsys, "keys", "list", "--state-dir", home)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:6] == ["NAME", "KEY", "ADMIN", "CONCURRENCY", "RPM", "DAILY"]
    alice = next(line for line in lines if line.startswith("alice")).split()
    assert alice[1:7] == [key[:7] + "...", "no", "2", "30", "1000", "0"]
    ops = next(line for line in lines if line.startswith("ops")).split()
    assert ops[2:6] == ["yes", "-", "-", "-"]
    assert key not in out and admin_key.strip() not in out

    code, _, err = _cli(capsys, "keys", "add", "alice", "--state-dir", home)
    assert code == 1 and "exists" in err
    code, _, err = _cli(capsys, "keys", "revoke", "alice", "--state-dir", home)
    assert code == 0, err
    code, out, _ = _cli(capsys, "keys", "list", "--state-dir", home)
    assert "alice" not in out and "ops" in out
    code, _, err = _cli(capsys, "keys", "revoke", "alice", "--state-dir", home)
    assert code == 1 and "no key named 'alice'" in err


def test_cli_set_changes_quotas_in_place(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = str(tmp_path / "state")
    code, key, err = _cli(capsys, "keys", "add", "ci", "--rpm", "30", "--daily-tokens", "1000",
                          "--state-dir", home)  # fmt: skip
    assert code == 0, err
    code, _, err = _cli(capsys, "keys", "set", "ci", "--concurrency", "2", "--rpm", "none",
                        "--state-dir", home)  # fmt: skip
    assert code == 0, err
    assert "key 'ci' now: concurrency 2, rpm unlimited, daily tokens 1000" in err
    store = KeyStore.open(Path(home))
    try:
        (record,) = store.records()
    finally:
        store.close()
    # the same key, only its quotas changed (the one not named kept)
    assert record.quotas == Quotas(concurrency=2, rpm=None, daily_tokens=1000)
    assert record.digest == hashlib.sha256(key.strip().encode()).digest()
    code, _, err = _cli(capsys, "keys", "set", "ci", "--daily-tokens", "None", "--state-dir", home)
    assert code == 0 and "daily tokens unlimited" in err and "concurrency 2" in err


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["set", "ci"], 1, "name a quota to change"),
        (["set", "nobody", "--rpm", "3"], 1, "no key named 'nobody'"),
        (["set", "ci", "--rpm", "0"], 2, "at least 1, not 0 ('none': unlimited)"),
        (["set", "ci", "--concurrency", "lots"], 2, "not a number or 'none'"),
    ],
)
def test_cli_set_refuses_bad_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], code: int, message: str
) -> None:
    assert _cli(capsys, "keys", "add", "ci", "--rpm", "5", "--state-dir", str(tmp_path))[0] == 0
    if code == 2:  # argparse refuses the value itself
        with pytest.raises(SystemExit) as exited:
            _cli(capsys, "keys", *argv, "--state-dir", str(tmp_path))
        assert exited.value.code == 2
        out, err = capsys.readouterr()
    else:
        got, out, err = _cli(capsys, "keys", *argv, "--state-dir", str(tmp_path))
        assert got == code
    assert message in err and out == ""
    store = KeyStore.open(tmp_path)
    try:
        assert [r.quotas for r in store.records()] == [Quotas(rpm=5)]  # unchanged
    finally:
        store.close()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["add", "a/b"], "not a key name"),
        (["add", "default"], "--auth-token"),
        (["add", "x", "--rpm", "0"], "--rpm must be at least 1"),
        (["add", "x", "--daily-tokens", "-3"], "--daily-tokens must be at least 1"),
    ],
)
def test_cli_refuses_bad_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    code, out, err = _cli(capsys, "keys", *argv, "--state-dir", str(tmp_path))
    assert code == 1 and message in err and out == ""


def test_store_refuses_bad_names(tmp_path: Path) -> None:
    store = KeyStore.open(tmp_path)
    try:
        for name in ("", "-x", "a b", "x" * 65):
            with pytest.raises(KeysError):
                store.add(name, Quotas())
    finally:
        store.close()


def _ring_with(tmp_path: Path, name: str, quotas: Quotas) -> tuple[KeyRing, str]:
    store = KeyStore.open(tmp_path)
    try:
        key = store.add(name, quotas)
    finally:
        store.close()
    return KeyRing(tmp_path, poll_interval=0.05), key


async def test_rpm_window_slides(tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    ring, key = _ring_with(tmp_path, "a", Quotas(rpm=3))
    async with trio.open_nursery() as nursery:
        await nursery.start(ring.run)
        record = ring.authenticate(key)
        assert record is not None and ring.authenticate(key + "x") is None
        for _ in range(3):
            ring.admit(record).release()
            await trio.sleep(10)
        with pytest.raises(QuotaExceeded, match="rpm quota is 3") as refused:
            ring.admit(record)
        # the first admission (at t=0) leaves the window at t=60: now is t=30
        assert refused.value.retry_after == pytest.approx(30)
        await trio.sleep(30)
        ring.admit(record).release()
        nursery.cancel_scope.cancel()


async def test_concurrency_released_once(tmp_path: Path) -> None:
    ring, key = _ring_with(tmp_path, "a", Quotas(concurrency=2))
    async with trio.open_nursery() as nursery:
        await nursery.start(ring.run)
        record = ring.authenticate(key)
        assert record is not None
        first, second = ring.admit(record), ring.admit(record)
        with pytest.raises(QuotaExceeded, match="concurrency quota is 2"):
            ring.admit(record)
        first.release()
        first.release()  # a second release gives nothing back
        assert ring.in_flight("a") == 1
        third = ring.admit(record)
        with pytest.raises(QuotaExceeded):
            ring.admit(record)
        second.release()
        third.release()
        assert ring.in_flight("a") == 0
        nursery.cancel_scope.cancel()


async def test_daily_tokens_persist_across_rings(tmp_path: Path) -> None:
    ring, key = _ring_with(tmp_path, "a", Quotas(daily_tokens=100))
    async with trio.open_nursery() as nursery:
        await nursery.start(ring.run)
        record = ring.authenticate(key)
        assert record is not None
        ring.admit(record).release()
        ring.count_tokens("a", 60)
        ring.admit(record).release()
        ring.count_tokens("a", 60)  # a request under way when the limit passes finishes
        with pytest.raises(QuotaExceeded, match="used 120 of its 100 tokens") as refused:
            ring.admit(record)
        assert refused.value.retry_after is not None and 0 < refused.value.retry_after <= 86400
        nursery.cancel_scope.cancel()  # the last sync writes the count on the way out
    again = KeyRing(tmp_path)
    async with trio.open_nursery() as nursery:
        await nursery.start(again.run)
        assert again.tokens_today("a") == 120
        record = again.authenticate(key)
        assert record is not None
        with pytest.raises(QuotaExceeded):
            again.admit(record)
        nursery.cancel_scope.cancel()
    store = KeyStore.open(tmp_path)
    try:
        assert store.tokens_on(today()) == {"a": 120}
    finally:
        store.close()


async def test_ring_follows_the_file(tmp_path: Path) -> None:
    ring = KeyRing(tmp_path, poll_interval=0.02)
    async with trio.open_nursery() as nursery:
        await nursery.start(ring.run)
        assert not ring.active
        store = KeyStore.open(tmp_path)
        try:
            key = store.add("late", Quotas())
            with trio.fail_after(5):
                # Why polling: the ring follows the file on its own clock
                while ring.authenticate(key) is None:  # noqa: ASYNC110
                    await trio.sleep(0.01)
            assert ring.active
            store.set_quotas("late", {"rpm": 7})
            with trio.fail_after(5):
                while (found := ring.authenticate(key)) is None or found.quotas.rpm != 7:  # noqa: ASYNC110
                    await trio.sleep(0.01)
            store.revoke("late")
            with trio.fail_after(5):
                while ring.authenticate(key) is not None:  # noqa: ASYNC110
                    await trio.sleep(0.01)
            assert not ring.active
        finally:
            store.close()
        nursery.cancel_scope.cancel()


async def test_ring_opens_the_file_only_when_it_changed(tmp_path: Path) -> None:
    """The ring's look is a stat: an unchanged file (and no tokens to write) is not opened;
    a change made meanwhile is still seen at the next look."""
    ring, key = _ring_with(tmp_path, "a", Quotas())
    path = keys_path(tmp_path)

    def age_the_file() -> None:  # older than the racy window: its stamp can be trusted
        old = path.stat().st_mtime - 10
        os.utime(path, (old, old))

    async with trio.open_nursery() as nursery:
        age_the_file()
        await nursery.start(ring.run)
        assert ring.authenticate(key) is not None and ring.syncs == 1  # the load
        await trio.sleep(0.3)  # ~15 looks at poll_interval 0.02
        assert ring.syncs == 1  # nothing changed: not opened
        store = KeyStore.open(tmp_path)
        try:
            store.set_quotas("a", {"rpm": 4})
        finally:
            store.close()
        with trio.fail_after(5):
            while (found := ring.authenticate(key)) is None or found.quotas.rpm != 4:  # noqa: ASYNC110
                await trio.sleep(0.01)
        ring.count_tokens("a", 5)  # tokens to write: synced although the file is unchanged
        age_the_file()
        syncs = ring.syncs
        with trio.fail_after(5):
            while ring.syncs == syncs:  # noqa: ASYNC110 - the ring has no event for it
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    store = KeyStore.open(tmp_path)
    try:
        assert store.tokens_on(today()) == {"a": 5}
    finally:
        store.close()


def test_named_keys_allow_a_server_off_loopback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "state"
    flags = {"server.host": "0.0.0.0", "state_dir": str(home)}
    with pytest.raises(ConfigError, match="clibridge keys add NAME"):
        load_config(flags, {}, None)
    # the first key is made while the server still cannot start
    env = {"CLIBRIDGE_HOST": "0.0.0.0", "CLIBRIDGE_STATE_DIR": str(home)}
    assert main(["keys", "add", "first"], environ=env) == 0
    capsys.readouterr()
    assert load_config(flags, {}, None).server.auth_token is None
    assert main(["keys", "revoke", "first"], environ=env) == 0
    with pytest.raises(ConfigError):
        load_config(flags, {}, None)
