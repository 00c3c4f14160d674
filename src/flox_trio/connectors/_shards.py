"""Which connection carries which symbols: a session's symbols sharded within a venue's streams per connection.

A venue caps the streams one connection may carry (Binance: 1024), so a
whole-market session needs several connections. ``ShardMap`` assigns each
desired symbol to one ``Shard`` (one connection over time) with room for
all its streams (one per channel), and keeps it there while it stays
desired: a symbol never moves while it streams, so nothing arrives twice
or out of order from two connections. A new symbol goes where its last
shard was (its unsubscribe may still be on the wire there), else to the
first shard with room, else to a new shard; a removed symbol leaves a hole
the next new symbol fills.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import trio

from ._status import SessionState

if TYPE_CHECKING:
    from ._connection import Connection


class Shard:
    """The symbols one connection carries, and how that connection is doing."""

    __slots__ = ("changed", "connect_count", "connection_id", "index", "last_recv_ns", "messages", "serving",
                 "state", "streams", "symbols")

    def __init__(self, index: int) -> None:
        self.index = index
        #: The symbols assigned here (changed in place, so every holder sees the same set).
        self.symbols: set[str] = set()
        #: Streams those symbols take (within the cap).
        self.streams = 0
        #: Set when symbols are assigned to an empty shard (its supervisor waits for that).
        self.changed = trio.Event()
        # --- the shard's connection, kept up to date by the supervisor ---
        self.state: SessionState = "idle"
        #: The ``Connection`` serving the shard's symbols, None between connections.
        self.serving: Connection | None = None
        self.connection_id: int | None = None
        self.connect_count = 0
        self.messages = 0
        self.last_recv_ns: int | None = None

    def __repr__(self) -> str:
        return f"<Shard {self.index}: {len(self.symbols)} symbols, {self.streams} streams, {self.state}>"


class ShardMap:
    """Desired symbols assigned to shards of at most ``cap`` streams each; see the module docstring."""

    __slots__ = ("_cost", "_last", "_where", "cap", "shards")

    def __init__(self, cap: int, cost: Callable[[str], int]) -> None:
        self.cap = cap
        self._cost = cost
        self.shards: list[Shard] = []
        self._where: dict[str, Shard] = {}
        # Where a removed symbol was, to put it back there if it returns.
        self._last: dict[str, Shard] = {}

    def shard_of(self, symbol: str) -> Shard | None:
        return self._where.get(symbol)

    def update(self, desired: frozenset[str] | set[str]) -> list[Shard]:
        """Assign ``desired`` (removals first, so their room is reused); return the shards it had to open."""
        where = self._where
        for s in [s for s in where if s not in desired]:
            left = where.pop(s)
            left.symbols.discard(s)
            left.streams -= self._cost(s)
            self._last[s] = left
        opened: list[Shard] = []
        for s in sorted(s for s in desired if s not in where):
            need = self._cost(s)
            if need > self.cap:
                raise ValueError(f"{s} takes {need} streams, more than {self.cap} per connection")
            shard: Shard | None = self._last.pop(s, None)
            if shard is None or shard.streams + need > self.cap:
                shard = next((sh for sh in self.shards if sh.streams + need <= self.cap), None)
            if shard is None:
                shard = Shard(len(self.shards))
                self.shards.append(shard)
                opened.append(shard)
            if not shard.symbols:
                shard.changed.set()
                shard.changed = trio.Event()
            shard.symbols.add(s)
            shard.streams += need
            where[s] = shard
        return opened
