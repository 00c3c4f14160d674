"""Feeds: where events come from (offline lists, pushed events, tapes; connectors live in flox_trio.connectors)."""

from .._core._ports import Feed as Feed
from .._core._ports import FeedHub as FeedHub
from ._list import ListFeed as ListFeed
from ._list import PushFeed as PushFeed

__all__ = ["Feed", "FeedHub", "ListFeed", "PushFeed"]


def __getattr__(name: str) -> object:
    # TapeFeed lives with the tape format; imported lazily to keep the import graph acyclic.
    if name == "TapeFeed":
        from ..tape import TapeFeed

        return TapeFeed
    raise AttributeError(f"module 'flox_trio.feeds' has no attribute {name!r}")
