"""Feeds: where events come from. ``ListFeed`` and ``PushFeed`` here, ``TapeFeed`` from the tape package;
exchange connectors are feeds too (``flox_trio.connectors``)."""

from .._core._ports import Feed as Feed
from .._core._ports import FeedHub as FeedHub
from .._core._status import FeedStatus as FeedStatus
from ..tape import TapeFeed as TapeFeed
from ._list import ListFeed as ListFeed
from ._list import ListFeedStatus as ListFeedStatus
from ._list import PushFeed as PushFeed
from ._synthetic import random_walk as random_walk

__all__ = ["Feed", "FeedHub", "FeedStatus", "ListFeed", "ListFeedStatus", "PushFeed", "TapeFeed", "random_walk"]
