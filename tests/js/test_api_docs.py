"""js_strategies/flox.d.ts declares exactly what the host gives a script: checked against a running script."""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import trio

import flox_trio as flox
from flox_trio.js import load

ROOT = Path(__file__).resolve().parents[2]
DTS = ROOT / "js_strategies" / "flox.d.ts"

PROBE = """
var seen = {};
function keys(o) { return Object.keys(o).sort(); }
function members(o) {
  var own = Object.keys(o).filter(function (k) { return k[0] !== '_'; });
  var proto = Object.getOwnPropertyNames(Object.getPrototypeOf(o)).filter(function (k) {
    return k !== 'constructor' && k[0] !== '_'; });
  return own.concat(proto).sort();
}
seen.globals = { sym: typeof sym, flox: keys(flox), runner: keys(runner), console: keys(console),
                 fs: keys(require('fs')) };
var placed = false;
flox.register({ symbols: [sym],
  onTrade: function (ctx, t) { seen.Trade = keys(t.toJSON()); seen.Ctx = members(ctx);
                               if (!placed) { placed = true; ctx.marketBuy(1); } },
  onBook: function (ctx, b) { seen.Book = keys(b); },
  onBar: function (ctx, b) { seen.Bar = keys(b); },
  onGap: function (ctx, g) { seen.Gap = keys(g); },
  onOrderUpdate: function (ctx, u) { seen.OrderUpdate = keys(u); },
  onFill: function (ctx, f) { seen.Fill = keys(f); },
  onStart: function () {}, onStop: function () {} });
"""


def declared() -> dict[str, list[str]]:
    text = DTS.read_text()
    out: dict[str, list[str]] = {}
    for name, body in re.findall(r"interface (\w+) \{(.*?)\n\}", text, re.S):
        out[name] = sorted(set(re.findall(r"^\s+(?:readonly )?(\w+)\??[(:]", body, re.M)))
    for name, body in re.findall(r"declare var (\w+): \{(.*?)\n\};", text, re.S):
        out[name] = sorted(set(re.findall(r"^\s+(\w+)\(", body, re.M)))
    out["globals"] = sorted(re.findall(r"declare (?:var|function) (\w+)", text))
    return out


async def test_the_declarations_match_what_a_script_sees(tmp_path: Path) -> None:
    path = tmp_path / "probe.js"
    path.write_text(PROBE)
    script = load(path, state_dir=tmp_path / "state")
    t0 = 1_700_000_000_000_000_000
    events = [
        flox.Trade("BTCUSDT", 100.0, 1.0, "buy", "1", t0, t0),
        flox.Book("BTCUSDT", ((99.0, 1.0),), ((101.0, 1.0),), t0, t0),
        flox.Bar("BTCUSDT", 1, 2, 0.5, 1.5, 3, 4, t0, t0 + 1, 1.0),
        flox.Gap("BTCUSDT", "trade_ids", 1, "2", "2"),
        *[flox.Trade("BTCUSDT", 100.0, 1.0, "sell", str(i), t0 + i, t0 + i) for i in range(3, 6)],
    ]
    feed = flox.feeds.ListFeed(events, batch_size=1)
    async with flox.open_runner(feed, flox.PaperExecutor(latency=0), lockstep=True) as runner:
        runner.add_strategy(script.registered)
        await runner.wait_idle()
        await trio.sleep(0.01)
    assert [str(o.filled_qty) for o in runner.executor.orders()] == [str(Decimal(1))]
    seen: dict[str, Any] = script.eval("seen")
    want = declared()
    for name in ("Trade", "Book", "Bar", "Gap", "OrderUpdate", "Fill", "Ctx"):
        assert seen[name] == want[name], name
    globals_ = seen["globals"]
    assert sorted("require" if k == "fs" else k for k in globals_) == want["globals"]
    assert globals_["sym"] == "string"
    for name in ("flox", "runner", "console"):
        assert globals_[name] == want[name], name
    assert globals_["fs"] == want["Fs"]
    callbacks = ["onStart", "onStop", "onTrade", "onBook", "onBar", "onGap", "onOrderUpdate", "onFill"]
    assert sorted(["symbols", *callbacks]) == want["Strategy"]
    assert frozenset(callbacks) == script.registered.callbacks
