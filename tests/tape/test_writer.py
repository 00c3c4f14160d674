from __future__ import annotations

import errno
import logging
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import trio

import flox_trio as flox
from flox_trio.tape import TapeReader, TapeWriter, open_tape_writer
from flox_trio.tape._format import looks_secret

from .conftest import make_trades


@pytest.mark.parametrize("key", [
    "api_key", "apiKey", "API_KEY", "key", "secret", "apiSecret", "secret_key", "token", "access_token",
    "password", "db_passwd", "passphrase", "privateKey", "listenKey", "x-api-key", "Authorization",
])
def test_secret_looking_keys(key: str) -> None:
    assert looks_secret(key)


@pytest.mark.parametrize("key", ["venue", "symbols", "monkey", "keyboard", "feed", "flush_bytes", "spec"])
def test_ordinary_keys(key: str) -> None:
    assert not looks_secret(key)


@pytest.mark.parametrize("meta", [
    {"api_key": "abc"},
    {"venue": "binance", "binance": {"apiSecret": "x"}},
    {"accounts": [{"name": "a", "passphrase": "p"}]},
])
def test_meta_with_credentials_is_refused(tmp_path: Path, meta: dict[str, Any]) -> None:
    with pytest.raises(flox.TapeError, match="looks like a credential"):
        TapeWriter(tmp_path / "t", meta=meta)
    assert not (tmp_path / "t").exists() or not any((tmp_path / "t").iterdir())


def test_params_and_connector_info_secrets_are_redacted(tmp_path: Path) -> None:
    with TapeWriter(tmp_path / "t") as w:
        w.write_swap(seq=0, slot=0, at_market_event=0, slot_market_event=0, old_hash="a", new_hash="b", old_language="python",
                     new_language="python", params={"fast": 8, "auth": {"token": "T0P"}})
        w.write_slot(seq=0, slot=1, action="add", hash="h", language="js", params={"api_key": "K3Y"})
        w.write_connector("connect", {"url": "wss://x", "listenKey": "L1"}, 5)
    raw = b"".join(p.read_bytes() for p in (tmp_path / "t").iterdir())
    for secret in (b"T0P", b"K3Y", b"L1"):
        assert secret not in raw
    reader = TapeReader(tmp_path / "t")
    assert reader.swaps()[0].params == {"fast": 8, "auth": "<redacted>"}
    assert reader.slot_records()[0].params == {"api_key": "<redacted>"}
    assert reader.connector_records()[0].info == {"url": "wss://x", "listenKey": "<redacted>"}


def test_writer_api_takes_no_credentials() -> None:
    import inspect

    names = set(inspect.signature(TapeWriter).parameters)
    assert not any(looks_secret(n) for n in names), names


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(flox.TapeError, match="unknown tape compression 'lz4'"):
        TapeWriter(tmp_path / "a", compression="lz4")
    with pytest.raises(flox.TapeError, match="segment_bytes"):
        TapeWriter(tmp_path / "b", segment_bytes=0)
    with pytest.raises(flox.TapeError, match="meta must be a dict"):
        TapeWriter(tmp_path / "c", meta=["x"])  # type: ignore[arg-type]
    with pytest.raises(flox.TapeError, match=r"meta\['obj'\] must be JSON-like"):
        TapeWriter(tmp_path / "d", meta={"obj": object()})


def test_existing_tape_is_not_overwritten(tmp_path: Path) -> None:
    with TapeWriter(tmp_path / "t") as w:
        w.write_events(0, make_trades(3))
    with pytest.raises(flox.TapeError, match="already holds a tape"):
        TapeWriter(tmp_path / "t")
    assert len(list(TapeReader(tmp_path / "t").iter_events())) == 3


def test_unrecordable_event_is_refused_and_the_tape_stays_whole(tmp_path: Path) -> None:
    with TapeWriter(tmp_path / "t", flush_bytes=1 << 20) as w:
        w.write_events(0, make_trades(2))
        with pytest.raises(flox.TapeError, match=r"cannot record events at seq 2 .*surrogates"):
            w.write_events(2, [flox.Trade("BAD\ud800", 1.0, 1.0, "buy")])
        with pytest.raises(flox.TapeError, match=r"cannot record events at seq 2 .*64"):
            w.write_events(2, [make_trades(1)[0], flox.Trade("X", 1.0, 1.0, "buy", exchange_ts_ns=2**64)])
        with pytest.raises(flox.TapeError, match="only Trade, Book, Bar, Gap, OrderUpdate and Fill"):
            w.write_events(2, [make_trades(1)[0], "not an event"])  # type: ignore[list-item]
        with pytest.raises(flox.TapeError, match="seq must be an int"):
            w.write_error(seq="1", slot=0, message="x")  # type: ignore[arg-type]
        with pytest.raises(flox.TapeError, match=r"swap params.* must be JSON-like"):
            w.write_swap(seq=1, slot=0, at_market_event=1, slot_market_event=1, old_hash="a", new_hash="b", old_language="python",
                         new_language="python", params={"x": object()})
        w.write_events(2, make_trades(1, 2))
    assert list(TapeReader(tmp_path / "t").iter_events()) == make_trades(3)


def test_decimal_params_are_kept_exact_as_text(tmp_path: Path) -> None:
    with TapeWriter(tmp_path / "t") as w:
        w.write_slot(seq=0, slot=0, action="add", hash="h", language="python",
                     params={"qty": Decimal("0.10"), "levels": (1, 2)})
    [rec] = TapeReader(tmp_path / "t").slot_records()
    assert rec.params == {"qty": "0.10", "levels": [1, 2]}


def test_closed_writer_refuses_writes(tmp_path: Path) -> None:
    w = TapeWriter(tmp_path / "t")
    w.close()
    w.close()
    assert w.closed
    with pytest.raises(flox.TapeError, match="is closed"):
        w.write_events(0, make_trades(1))
    with pytest.raises(flox.TapeError, match="is closed"):
        w.write_error(seq=0, slot=0, message="x")


def test_flush_bytes_bounds_what_is_buffered(tmp_path: Path) -> None:
    w = TapeWriter(tmp_path / "t", flush_bytes=4096, flush_interval_s=3600)
    for i in range(200):
        w.write_events(i, make_trades(1, i))
        assert w.pending_bytes < 4096 + 200
        # What was flushed is on disk and readable while the writer is open.
        assert len(list(TapeReader(tmp_path / "t").iter_events())) == w.events_flushed
    assert 0 < w.events_flushed < 200
    assert w.frames_written >= 2
    w.close()
    assert w.events_flushed == 200


def test_flush_interval_is_checked_on_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import flox_trio.tape._writer as writer_mod

    now = [1000.0]
    monkeypatch.setattr(writer_mod, "real_seconds", lambda: now[0])
    w = TapeWriter(tmp_path / "t", flush_bytes=1 << 30, flush_interval_s=0.5)
    w.write_events(0, make_trades(10))
    assert w.events_flushed == 0
    now[0] += 0.49
    w.write_events(10, make_trades(10, 10))
    assert w.events_flushed == 0
    now[0] += 0.02
    w.write_events(20, make_trades(10, 20))
    assert w.events_flushed == 30
    w.close()


def test_swaps_and_slot_changes_are_flushed_at_once(tmp_path: Path) -> None:
    w = TapeWriter(tmp_path / "t", flush_bytes=1 << 30, flush_interval_s=3600)
    w.write_events(0, make_trades(5))
    w.write_error(seq=5, slot=0, message="boom")
    assert w.events_flushed == 0
    w.write_swap(seq=5, slot=0, at_market_event=5, slot_market_event=5, old_hash="a", new_hash="b", old_language="python", new_language="js")
    assert w.events_flushed == 5
    assert len(TapeReader(tmp_path / "t").swaps()) == 1
    w.write_slot(seq=5, slot=1, action="remove", hash="c", language="python")
    assert len(TapeReader(tmp_path / "t").slot_records()) == 1
    w.close()


def test_segments_rotate_by_size(tmp_path: Path) -> None:
    with TapeWriter(tmp_path / "t", flush_bytes=2000, segment_bytes=10_000) as w:
        for i in range(0, 2000, 10):
            w.write_events(i, make_trades(10, i))
    segs = TapeReader(tmp_path / "t").segments
    assert len(segs) == len(w.segments) > 5
    # A segment exceeds segment_bytes by at most one frame.
    assert all(p.stat().st_size < 10_000 + 2000 + 1000 for p in segs)
    assert list(TapeReader(tmp_path / "t").iter_events()) == make_trades(2000)


def test_disk_error_is_a_tape_error_and_the_tape_stays_readable(tmp_path: Path) -> None:
    w = TapeWriter(tmp_path / "t", flush_bytes=1 << 30, flush_interval_s=3600)
    w.write_events(0, make_trades(10))
    w.flush()
    w.write_events(10, make_trades(10, 10))
    assert w._file is not None
    real_file = w._file

    class Full:
        """Writes half of what it is given, then reports a full disk."""

        def __init__(self) -> None:
            self.calls = 0

        def write(self, data: Any) -> int:
            self.calls += 1
            if self.calls == 1:
                return real_file.write(bytes(data)[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")

        def __getattr__(self, name: str) -> Any:
            return getattr(real_file, name)

    w._file = Full()  # type: ignore[assignment]
    with pytest.raises(flox.TapeError, match="No space left on device"):
        w.flush()
    # The half-written frame was cut off: the tape reads cleanly, without a torn tail.
    reader = TapeReader(tmp_path / "t")
    assert list(reader.iter_events()) == make_trades(10)
    assert reader.torn_tail is None
    # Space is back: the buffered batch goes out with the next flush.
    w._file = real_file
    w.close()
    assert list(TapeReader(tmp_path / "t").iter_events()) == make_trades(20)


async def test_open_tape_writer_flushes_an_idle_writer(tmp_path: Path, autojump_clock: trio.abc.Clock) -> None:
    async with open_tape_writer(tmp_path / "t", flush_bytes=1 << 30, flush_interval_s=1.0) as w:
        w.write_events(0, make_trades(5))
        assert w.events_flushed == 0
        await trio.sleep(0.5)
        assert w.events_flushed == 0
        await trio.sleep(1.0)
        assert w.events_flushed == 5
        assert len(list(TapeReader(tmp_path / "t").iter_events())) == 5
        w.write_events(5, make_trades(1, 5))
    assert w.closed
    assert list(TapeReader(tmp_path / "t").iter_events()) == make_trades(6)


def test_close_logs_a_summary(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="flox_trio.tape"), TapeWriter(tmp_path / "t") as w:
        w.write_events(0, make_trades(3))
    assert "3 events" in caplog.text


def test_non_int_seq_is_refused(tmp_path: Path) -> None:
    with TapeWriter(tmp_path / "t") as w:
        with pytest.raises(flox.TapeError, match="seq must be an int"):
            w.write_events(1.0, make_trades(1))  # type: ignore[arg-type]
        w.write_events(0, make_trades(1))
    assert list(TapeReader(tmp_path / "t").iter_events()) == make_trades(1)
