"""Tapes: recording everything the engine sees and does, and replaying it.

A tape is a directory of append-only segment files of checksummed frames
(see ``_format`` for the layout). ``TapeWriter`` records, ``TapeReader``
reads back, ``TapeFeed`` replays the market data into a runner, and
``tape_info`` summarises a tape. Replays and bundles live above the runner,
in ``flox_trio.replay``.
"""

from ._feed import TapeFeed as TapeFeed
from ._feed import TapeFeedStatus as TapeFeedStatus
from ._format import FORMAT_VERSION as FORMAT_VERSION
from ._reader import TapeInfo as TapeInfo
from ._reader import TapeReader as TapeReader
from ._reader import tape_info as tape_info
from ._records import ConnectorRecord as ConnectorRecord
from ._records import ControlRecord as ControlRecord
from ._records import ErrorRecord as ErrorRecord
from ._records import EventsRecord as EventsRecord
from ._records import Record as Record
from ._records import SlotRecord as SlotRecord
from ._records import SwapRecord as SwapRecord
from ._records import TapeHeader as TapeHeader
from ._records import TornTail as TornTail
from ._writer import TapeWriter as TapeWriter
from ._writer import open_tape_writer as open_tape_writer
