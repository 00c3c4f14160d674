"""A writer killed with SIGKILL mid-stream leaves a tape readable up to its last whole record."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from flox_trio.tape import TapeReader, tape_info

from .conftest import make_trades

# The child writes forever with small, varied batches so that a kill lands at
# an arbitrary point of a frame write or a rotation, and prints how many events
# the writer reports as handed to the OS after every flush.
CHILD = textwrap.dedent("""
    import sys
    sys.path.insert(0, sys.argv[3])
    from conftest import make_trades
    from flox_trio.tape import TapeWriter

    w = TapeWriter(sys.argv[1], compression=sys.argv[2] or None, flush_bytes=8192,
                   flush_interval_s=0.005, segment_bytes=256 * 1024)
    seq = 0
    reported = 0
    k = 0
    while True:
        n = 1 + (k * 37) % 300
        w.write_events(seq, make_trades(n, seq))
        seq += n
        k += 1
        if w.events_flushed != reported:
            reported = w.events_flushed
            print(reported, flush=True)
""")

TARGET = 60_000


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
@pytest.mark.parametrize("compression", ["", "zstd"])
def test_sigkill_mid_stream_reads_back_everything_flushed(
    tmp_path: Path, compression: str, caplog: pytest.LogCaptureFixture
) -> None:
    tape = tmp_path / "tape"
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(tape), compression, str(Path(__file__).parent)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    assert child.stdout is not None
    reported = 0
    deadline = time.monotonic() + 60
    try:
        while reported < TARGET:
            line = child.stdout.readline()
            if not line:
                pytest.fail(f"child died early: {child.stderr.read() if child.stderr else ''}")
            reported = int(line)
            assert time.monotonic() < deadline, "child too slow"
        os.kill(child.pid, signal.SIGKILL)
    finally:
        if child.poll() is None:
            child.kill()
        rest, err = child.communicate(timeout=30)
    assert child.returncode == -signal.SIGKILL, err
    # Lines the child printed before it died count too: each was printed after
    # the flush it reports had returned.
    for line in rest.split():
        reported = max(reported, int(line))

    reader = TapeReader(tape)
    with caplog.at_level(logging.WARNING, logger="flox_trio.tape"):
        batches = list(reader.iter_batches())
    events = [e for b in batches for e in b.events]
    assert len(events) >= reported
    assert events == make_trades(len(events))
    seq = 0
    for b in batches:
        assert b.seq == seq
        seq += len(b.events)
    assert len(reader.segments) > 1
    if reader.torn_tail is not None:
        assert "torn tail" in caplog.text
    info = tape_info(tape)
    assert info.events == len(events)
    assert info.last_seq == len(events) - 1
