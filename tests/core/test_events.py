from __future__ import annotations

import pickle
from decimal import Decimal

import attrs
import msgspec
import pytest

import flox_trio as flox
from flox_trio._core._events import SymbolRef, parse_symbol, parse_symbols


@pytest.mark.parametrize("cls", [flox.Book, flox.Bar, flox.OrderUpdate, flox.Fill])
def test_events_are_frozen_slotted_attrs(cls: type) -> None:
    assert attrs.has(cls)
    assert "__slots__" in cls.__dict__
    fields = attrs.fields(cls)
    ev = cls(*[_sample(f) for f in fields])
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        setattr(ev, fields[0].name, "x")


def test_a_trade_is_a_frozen_slotted_struct_that_compares_and_hashes_by_value() -> None:
    """Trades are msgspec Structs (built and decoded far faster than attrs): the same promises."""
    t = flox.Trade("BTCUSDT", 100.5, 0.25, "buy", "7", 1, 2)
    assert isinstance(t, msgspec.Struct) and not hasattr(t, "__dict__")
    with pytest.raises(AttributeError):
        t.price = 1.0  # type: ignore[misc]
    same = flox.Trade("BTCUSDT", 100.5, 0.25, "buy", "7", 1, 2)
    assert t == same and hash(t) == hash(same) and t != flox.Trade("BTCUSDT", 100.5, 0.25, "sell", "7", 1, 2)
    assert flox.Trade(symbol="ETHUSDT", price=1.0, qty=2.0, side="sell").venue == ""
    assert pickle.loads(pickle.dumps(t)) == t
    assert repr(t).startswith("Trade(symbol='BTCUSDT', price=100.5")


def _sample(field: attrs.Attribute) -> object:  # type: ignore[type-arg]
    t = str(field.type)
    if "Decimal" in t:
        return Decimal("1.5")
    if "tuple" in t:
        return ((1.0, 2.0),)
    if "float" in t:
        return 1.0
    if "int" in t:
        return 1
    return "x"


def test_symbols_with_and_without_venue() -> None:
    assert parse_symbol("btcusdt") == SymbolRef("BTCUSDT", "")
    ref = parse_symbol("Binance:BTCUSDT")
    assert (ref.symbol, ref.venue, str(ref)) == ("BTCUSDT", "binance", "binance:BTCUSDT")
    assert [str(s) for s in parse_symbols("ETHUSDT")] == ["ETHUSDT"]


@pytest.mark.parametrize("bad", ["", ":BTC", "binance:", 42, [], None])
def test_bad_symbols_raise_flox_errors(bad: object) -> None:
    with pytest.raises(flox.FloxError, match="symbol"):
        parse_symbols(bad)


def test_every_error_is_a_flox_error() -> None:
    for name in dir(flox):
        obj = getattr(flox, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, flox.FloxError), name
