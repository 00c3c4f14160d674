"""What a script returns, decoded against a schema: the host trusts nothing a script produced.

Every call into JavaScript returns one JSON text: the events it got through,
the order intents, log lines, file writes, runner requests and errors it
produced. A script can make that text anything (override ``JSON.stringify``,
``toJSON``, ``Array.prototype``...), so it is parsed and converted into typed
structs here; anything that does not fit is a ``JSError`` naming the field,
and the script's slot is quarantined.
"""

from __future__ import annotations

import json
import math
from typing import Any, Literal

import msgspec
import orjson

from .._errors import JSError

LogLevel = Literal["debug", "info", "warning", "error"]

#: Per call: beyond these a script is flooding, not trading.
MAX_LOG_LINES = 1000
MAX_LOG_CHARS = 4000
MAX_INTENTS = 10_000
MAX_REQUESTS = 16
MAX_WRITES = 64
MAX_ERRORS = 10_000
#: A JS number: what a quantity or a price can be before the order check sees it.
Number = int | float | str | None


class Described(msgspec.Struct, forbid_unknown_fields=True):
    """A strategy object as the prelude describes it."""

    handle: int
    symbols: Any
    callbacks: list[str]


class Intent(msgspec.Struct, array_like=True):
    order_id: str
    symbol: str
    side: str
    kind: str
    qty: Number
    price: Number


class Request(msgspec.Struct, array_like=True):
    op: Literal["replace", "add"]
    index: int
    strategy: Described


class Output(msgspec.Struct, forbid_unknown_fields=True):
    """One call's result."""

    #: For a dispatch, the index after the last event delivered.
    n: int
    logs: list[tuple[LogLevel, str]]
    intents: list[Intent]
    requests: list[Request]
    writes: list[tuple[str, str]]
    #: (event index in the batch, or -1; message; stack)
    errors: list[tuple[int, str, str]]
    value: Any = None


_DECODE = msgspec.json.Decoder(Output)


def _loads(raw: object, where: str) -> Any:
    if not isinstance(raw, str):
        raise JSError(f"{where}: the script's call returned {type(raw).__name__}, not the host's JSON")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        pass
    try:
        # orjson refuses lone surrogates (console.log('\\udcff')); the stdlib keeps them, and
        # every text the host uses from here on is made printable where it is used.
        return json.loads(raw, parse_constant=lambda name: math.nan)
    except ValueError as exc:
        raise JSError(f"{where}: the script's call returned text that is not JSON ({exc})") from None


def decode_output(raw: object, where: str) -> Output:
    if isinstance(raw, str):
        try:
            out = _DECODE.decode(raw)
        except (msgspec.DecodeError, UnicodeError):
            out = _convert(_loads(raw, where), where)
    else:
        out = _convert(_loads(raw, where), where)
    _check_sizes(out, where)
    return out


def decode_value(raw: object, where: str) -> Any:
    return _loads(raw, where)


def _convert(data: Any, where: str) -> Output:
    try:
        return msgspec.convert(data, Output)
    except msgspec.ValidationError as exc:
        raise JSError(f"{where}: the script's call returned a malformed result: {exc}") from None


def _check_sizes(out: Output, where: str) -> None:
    for what, items, cap in (("log lines", out.logs, MAX_LOG_LINES), ("order intents", out.intents, MAX_INTENTS),
                             ("runner requests", out.requests, MAX_REQUESTS), ("file writes", out.writes, MAX_WRITES),
                             ("errors", out.errors, MAX_ERRORS)):
        if len(items) > cap:
            raise JSError(f"{where}: one call produced {len(items)} {what}, more than the {cap} a call may")


def printable(text: str, limit: int = MAX_LOG_CHARS) -> str:
    """A script's text as something a log line, a tape and a terminal can take."""
    if len(text) > limit:
        text = text[:limit] + f"… ({len(text) - limit} more characters)"
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def described(value: Any, where: str) -> Described:
    try:
        return msgspec.convert(value, Described)
    except msgspec.ValidationError as exc:
        raise JSError(f"{where}: that is not a strategy object ({exc})") from None
