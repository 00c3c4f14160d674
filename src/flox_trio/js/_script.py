"""Loading JavaScript strategies: one fresh QuickJS context per script, and its host.

Everything runs on the Trio thread (a QuickJS context must only be used from
the thread that created it) and crosses into JS once per call: per batch of
events, per lifecycle callback, per factory call.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import weakref
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import quickjs

from .._core._clock import real_seconds
from .._core._events import Book, Gap, SymbolRef, Trade, parse_symbols
from .._core._host import StrategyHost
from .._core._ports import SlotPort, StrategyRequests
from .._errors import (
    FloxError,
    JSError,
    SandboxError,
    StrategyLoadError,
    StrategyTypeError,
    describe_exception,
)
from ._codec import codec

if TYPE_CHECKING:
    from .._core._runner import Runner

log = logging.getLogger("flox_trio.js")

_PRELUDE = resources.files(__package__).joinpath("_prelude.js").read_text()

#: A context with a typical strategy uses ~0.3 MB; the spec's budget is 5 MB per JS slot.
DEFAULT_TIME_LIMIT = 0.25  # seconds of CPU per call (one batch, one callback)
DEFAULT_MEMORY_LIMIT = 5 * 1024 * 1024
#: QuickJS's own allocation cap, as a multiple of ``memory_limit``. The limit
#: itself is checked after every call (a context over it is retired); the hard
#: cap sits far above it because this QuickJS build can crash while unwinding an
#: out-of-memory error through several JS frames, so a runaway script should
#: meet the time limit, or our check, long before it meets the allocator's wall.
HARD_MEMORY_FACTOR = 32
DEFAULT_STACK_LIMIT = 256 * 1024
#: The state directory is mirrored into the context; keep the mirror well inside the memory limit.
MAX_STATE_BYTES = 1024 * 1024


class Script:
    """A loaded script: its QuickJS context, its state directory and the strategies it made."""

    def __init__(
        self,
        source: str,
        *,
        path: str,
        state_dir: str | os.PathLike[str] = "state",
        requests: StrategyRequests | None = None,
        sym: str = "BTCUSDT",
        time_limit: float = DEFAULT_TIME_LIMIT,
        memory_limit: int = DEFAULT_MEMORY_LIMIT,
        stack_limit: int = DEFAULT_STACK_LIMIT,
    ) -> None:
        self.path = path
        self.source = source
        self.source_hash = hashlib.sha256(source.encode()).hexdigest()
        self.state_dir = Path(state_dir)
        #: Where the script's ``runner.replaceStrategy`` / ``addStrategy`` go (None: not bound yet).
        self.requests = requests
        self.time_limit = time_limit
        self.memory_limit = memory_limit
        self._stamps: dict[str, tuple[float, int]] = {}
        self._synced_at = 0.0
        #: Set when the context ran out of memory: it is never called again (reload the script).
        self.dead: str | None = None
        self._pending: list[list[Any]] = []  # runner requests made before a runner was bound
        # How many JsStrategy objects hold each JS handle; handles nobody holds
        # any more are released in JS at the start of the next call.
        self._holds: dict[int, int] = {}
        self._unheld: set[int] = set()
        self.ctx = quickjs.Context()
        self.ctx.set_memory_limit(memory_limit * HARD_MEMORY_FACTOR)
        self.ctx.set_max_stack_size(stack_limit)
        try:
            # Padded so that prelude frames in a stack trace have line numbers no
            # script has: QuickJS names every evaluated source "<input>".
            self.ctx.eval("\n" * _PRELUDE_LINE_OFFSET + _PRELUDE)
            self.ctx.eval(f"var sym = {orjson.dumps(sym).decode()};")
        except quickjs.JSException as exc:  # pragma: no cover - the prelude is ours
            raise JSError(f"the flox-trio JS prelude failed: {exc}") from exc
        self._fn = {name: self.ctx.eval(f"__flox.{name}") for name in
                    ("call", "factory", "registeredInfo", "sync", "release", "salvage")}
        self.sync_files()
        self.ctx.set_time_limit(time_limit)
        try:
            self.ctx.eval(source)
        except quickjs.JSException as exc:
            raise StrategyLoadError(f"{path}: {_js_message(exc, path)}") from None
        except quickjs.StackOverflow as exc:  # pragma: no cover - subclass of JSException
            raise StrategyLoadError(f"{path}: stack overflow while loading: {exc}") from None
        self._after(self._call("registeredInfo"), None)

    # --- calls into JS -------------------------------------------------------------------

    def _call(self, name: str, *args: Any) -> dict[str, Any]:
        if self.dead is not None:
            raise JSError(f"{self.path}: this script's context is retired ({self.dead}); load the script again")
        if self._unheld:
            handles, self._unheld = sorted(self._unheld), set()
            self._fn["release"](orjson.dumps(handles).decode())
        try:
            raw = self._fn[name](*args)
        except quickjs.JSException as exc:
            # QuickJS reports running out of memory only as the text of a JSException.
            if "out of memory" in str(exc):
                self.dead = f"ran out of memory (cap {self.memory_limit * HARD_MEMORY_FACTOR} bytes)"
            raise
        finally:
            self._check_memory()
        result: dict[str, Any] = orjson.loads(raw)
        return result

    def salvage(self) -> dict[str, Any] | None:
        """What an abandoned call had collected, and ``n``: the index after the event it was on.

        None when nothing can be recovered (the context has no memory left).
        """
        try:
            raw = self._fn["salvage"]()
        except quickjs.JSException:
            return None
        result: dict[str, Any] = orjson.loads(raw)
        return result

    def _hold(self, handle: int) -> None:
        self._holds[handle] = self._holds.get(handle, 0) + 1
        self._unheld.discard(handle)

    def _unhold(self, handle: int) -> None:
        # Runs from weakref.finalize: touches Python state only, never the context.
        left = self._holds.get(handle, 0) - 1
        if left > 0:
            self._holds[handle] = left
        else:
            self._holds.pop(handle, None)
            self._unheld.add(handle)

    def _check_memory(self) -> None:
        used = self.ctx.memory()["memory_used_size"]
        if used > self.memory_limit and self.dead is None:
            self.dead = f"out of memory: it used {used} bytes, over its limit of {self.memory_limit}"
            log.error("%s: %s; its strategies are quarantined", self.path, self.dead)

    def _after(self, out: dict[str, Any], slot: SlotPort | None) -> None:
        """Apply what a call returned: file writes, logs, runner requests."""
        for rel, text in out.get("writes", ()):
            self._write(rel, text)
        for level, text in out.get("logs", ()):
            log.log(logging.getLevelName(level.upper()), "[%s] %s", Path(self.path).name, text)
        for req in out.get("requests", ()):
            self._request(req, slot)

    def _request(self, req: list[Any], slot: SlotPort | None) -> None:
        if self.requests is None:
            self._pending.append(req)
            return
        op, index, info = req
        try:
            strategy = JsStrategy(self, info)
            if op == "replace":
                self.requests.request_replace(int(index), strategy)
            else:
                self.requests.add_strategy(strategy)
        except FloxError as exc:
            # A refused request is the script's error, never the engine's.
            if slot is not None:
                slot.record_error(exc, where=f"in runner.{'replaceStrategy' if op == 'replace' else 'addStrategy'}")
            else:
                log.error("%s: runner request refused: %s", self.path, describe_exception(exc))

    def bind(self, requests: StrategyRequests) -> None:
        """Bind the script's ``runner`` global; requests made before are performed now."""
        if self.requests is None:
            self.requests = requests
            pending, self._pending = self._pending, []
            for req in pending:
                self._request(req, None)

    # --- the state directory -------------------------------------------------------------

    def maybe_sync_files(self, every: float = 1.0) -> None:
        """``sync_files`` at most once per ``every`` seconds: cheap enough for the batch path."""
        now = real_seconds()
        if now - self._synced_at >= every:
            self.sync_files()

    def sync_files(self) -> None:
        """Mirror what changed in the state directory into the context (before lifecycle calls)."""
        self._synced_at = real_seconds()
        changes: dict[str, str | None] = {}
        seen = set()
        total = 0
        if self.state_dir.is_dir():
            for p in self.state_dir.rglob("*"):
                if not p.is_file():
                    continue
                rel = p.relative_to(self.state_dir).as_posix()
                st = p.stat()
                total += st.st_size
                seen.add(rel)
                stamp = (st.st_mtime, st.st_size)
                if self._stamps.get(rel) != stamp:
                    if total > MAX_STATE_BYTES:
                        raise SandboxError(f"{self.path}: the state directory {self.state_dir} holds more than "
                                           f"{MAX_STATE_BYTES} bytes; strategies keep small snapshots there")
                    changes[rel] = p.read_text(errors="replace")
                    self._stamps[rel] = stamp
        for rel in set(self._stamps) - seen:
            changes[rel] = None
            del self._stamps[rel]
        if changes:
            self._fn["sync"](orjson.dumps(changes).decode())

    def _write(self, rel: str, text: str) -> None:
        root = self.state_dir.resolve()
        target = (root / rel).resolve()
        if not target.is_relative_to(root):  # the JS side refuses this already; never trust one layer
            raise SandboxError(f"{self.path}: write to {rel!r} leaves the state directory {root}")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        st = target.stat()
        self._stamps[rel] = (st.st_mtime, st.st_size)

    # --- strategies ----------------------------------------------------------------------------

    @property
    def registered(self) -> JsStrategy:
        """The strategy the script passed to ``flox.register()``."""
        info = self._call("registeredInfo").get("value")
        if info is None:
            raise StrategyLoadError(f"{self.path}: the script never called flox.register(strategy)")
        return JsStrategy(self, info, spec=f"{self.path}:register")

    def call(self, name: str, *args: Any) -> JsStrategy:
        """Call a global factory (``makeStrategy('v2')``) and return the strategy it builds."""
        try:
            out = self._call("factory", name, orjson.dumps(list(args)).decode())
        except quickjs.JSException as exc:
            leftover = self.salvage()
            if leftover is not None:
                self._after(leftover, None)
            raise StrategyLoadError(f"{self.path}: {name}(...) threw: {_js_message(exc, self.path)}") from None
        self._after(out, None)
        return JsStrategy(self, out["value"], spec=f"{self.path}:{name}", params={"factory": name, "args": list(args)})

    def eval(self, code: str) -> Any:
        """Evaluate an expression in the script's context (inspection and tests)."""
        return self.ctx.eval(code)

    def memory(self) -> dict[str, int]:
        mem: dict[str, int] = self.ctx.memory()
        return mem


def load(
    path: str | os.PathLike[str],
    state_dir: str | os.PathLike[str] = "state",
    *,
    runner: Runner | None = None,
    sym: str | None = None,
    time_limit: float = DEFAULT_TIME_LIMIT,
    memory_limit: int = DEFAULT_MEMORY_LIMIT,
    stack_limit: int = DEFAULT_STACK_LIMIT,
) -> Script:
    """Evaluate a strategy script in a fresh QuickJS context.

    ``state_dir`` is the only place the script's ``require('fs')`` reaches
    (``/tmp/x.json`` there is ``STATE_DIR/tmp/x.json``). ``runner`` binds the
    script's ``runner`` global now, so a top-level ``runner.replaceStrategy``
    acts as the script loads; ``sym`` is the script's ``sym`` global (default:
    the first symbol of the runner's slot 0, else "BTCUSDT").
    """
    p = Path(path)
    try:
        source = p.read_text()
    except OSError as exc:
        raise StrategyLoadError(f"cannot read JavaScript strategy {p}: {exc.strerror}") from None
    return Script(source, path=str(p), state_dir=state_dir,
                  requests=runner.strategy_requests() if runner is not None else None,
                  sym=sym if sym is not None else _default_symbol(runner), time_limit=time_limit,
                  memory_limit=memory_limit, stack_limit=stack_limit)


def _all_trades(batch: list[Any]) -> bool:
    # The codec already classified this batch: an all-trade batch has no kinds string.
    return codec.encode(batch)[0] == ""


def _pack(*fields: Any) -> str:
    """One string for one QuickJS argument (see ``F.call`` in the prelude for why)."""
    return "\x1f".join([f if isinstance(f, str) else repr(f) for f in fields])


def _default_symbol(runner: Runner | None) -> str:
    if runner is not None:
        for slot in runner.slots:
            return slot.symbols[0].symbol
    return "BTCUSDT"


_LINE = re.compile(r"<input>:(\d+)")
_PRELUDE_LINE_OFFSET = 100_000


def _js_message(exc: BaseException | str, path: str) -> str:
    def where(m: re.Match[str]) -> str:
        line = int(m.group(1))
        return f"flox-prelude.js:{line - _PRELUDE_LINE_OFFSET}" if line > _PRELUDE_LINE_OFFSET else f"{path}:{line}"

    return _LINE.sub(where, str(exc)).replace("<input>", path).replace("\n", " | ")


class JsStrategy:
    """A JavaScript strategy object, usable anywhere a Python strategy is."""

    def __init__(self, script: Script, info: dict[str, Any], *, spec: str | None = None,
                 params: dict[str, Any] | None = None) -> None:
        if not isinstance(info, dict) or "handle" not in info:
            raise StrategyTypeError(f"{script.path}: that is not a strategy object")
        self.script = script
        self.handle = int(info["handle"])
        script._hold(self.handle)
        weakref.finalize(self, script._unhold, self.handle)
        try:
            self.symbols = [str(s) for s in parse_symbols(info.get("symbols"))]
        except Exception as exc:
            raise StrategyTypeError(f"{script.path}: the strategy's symbols are unusable: {exc}") from None
        self.callbacks = frozenset(info.get("callbacks", ()))
        self.spec = spec or f"{script.path}:#{self.handle}"
        self.params = dict(params or {})

    def get(self, name: str) -> Any:
        """A property of the JS strategy object, as JSON-decoded Python (for inspection and tests)."""
        raw = self.script.ctx.eval(f"JSON.stringify(__flox.objs.get({self.handle})[{orjson.dumps(name).decode()}])")
        return None if raw is None else orjson.loads(raw)

    def __flox_host__(self) -> JsHost:
        return JsHost(self)

    def __repr__(self) -> str:
        return f"<JsStrategy {self.spec} {self.symbols}>"


class JsHost(StrategyHost):
    """Hosts a JavaScript strategy: one QuickJS call per batch."""

    language = "javascript"

    def __init__(self, strategy: JsStrategy) -> None:
        self.strategy = strategy
        self.script = strategy.script
        self.symbols: tuple[SymbolRef, ...] = parse_symbols(strategy.symbols)
        self.source_hash = self.script.source_hash
        self.spec = strategy.spec
        self.params = dict(strategy.params)
        self.wants_bars = "onBar" in strategy.callbacks

    def source(self) -> str | None:
        return self.script.source

    @property
    def name(self) -> str:
        path, _, how = self.spec.rpartition(":")
        base = Path(path or self.script.path).name
        return base if how in ("", "register") or how.startswith("#") else f"{base}:{how}"

    def attach(self, slot: SlotPort) -> None:
        super().attach(slot)
        self.script.bind(slot.requests)

    def _state(self) -> str:
        slot = self.slot
        ex = slot.portfolio
        state = {}
        for sym, ctx in slot.ctxs.items():
            state[sym] = [float(ex.position(slot.index, sym).qty), ctx.last_price, ctx.best_bid, ctx.best_ask,
                          [o.order_id for o in ex.open_orders(slot.index, sym)]]
        return orjson.dumps(state).decode()

    async def _lifecycle(self, name: str) -> None:
        if name not in self.strategy.callbacks:
            return
        script = self.script
        script.sync_files()
        slot = self.slot
        try:
            out = script._call("call", _pack("l", self.strategy.handle, name, slot.index, slot.order_seq,
                                             self._state()))
        except quickjs.JSException as exc:
            leftover = script.salvage()
            if leftover is not None:
                self._apply(leftover, None)
            raise JSError(f"{script.path}: {name} was stopped: {_js_message(exc, script.path)}") from None
        self._apply(out, None)
        if out["errors"]:
            _, msg, stack = out["errors"][0]
            raise JSError(f"{script.path}: {name} threw {_js_message(msg, script.path)}"
                          f"{' | ' + _js_message(stack, script.path) if stack else ''}")

    async def start(self) -> None:
        await self._lifecycle("onStart")

    async def stop(self) -> None:
        await self._lifecycle("onStop")

    async def dispatch(self, batch: list[Any], start: int) -> int:
        slot = self.slot
        script = self.script
        script.maybe_sync_files()  # files changed on disk by others reach onTrade within a second
        left = getattr(slot, "errors_left", None)
        budget = 1 << 30 if left is None else max(1, left)
        try:
            out = script._call("call", _pack("d", self.strategy.handle, slot.index, slot.order_seq,
                                             self._state(), start, budget, *codec.encode(batch)))
        except quickjs.JSException as exc:
            # The call was abandoned in the middle of an event: the events before
            # it were delivered and what they produced (orders already given ids)
            # still counts; the rest of the batch never reached the strategy.
            message = _js_message(exc, script.path)
            if script.dead is not None and script.dead not in message:
                message = f"{message}; {script.dead}"
            leftover = script.salvage()
            done = len(batch) if leftover is None else min(len(batch), max(start + 1, int(leftover["n"])))
            if leftover is not None:
                self._apply(leftover, batch)
                self._update_ctx(batch, start, done)
            err = JSError(f"{script.path}: stopped while delivering event {done - 1 - start} of a batch of "
                          f"{len(batch) - start}: {message}")
            slot.record_error(err, batch[done - 1])
            slot.quarantine(f"runaway script {script.path}: {message}")
            return done
        except JSError as exc:  # the script's context was retired before: nothing was delivered
            slot.record_error(exc, batch[start] if start < len(batch) else None)
            slot.quarantine(f"runaway script {script.path}: {exc}")
            return start
        done = int(out["n"])
        self._apply(out, batch)
        self._update_ctx(batch, start, done)
        if script.dead is not None:
            slot.quarantine(f"runaway script {script.path}: {script.dead}")
        return done

    def _apply(self, out: dict[str, Any], batch: list[Any] | None) -> None:
        slot = self.slot
        self.script._after(out, slot)
        for oid, sym, side, kind, qty, price in out["intents"]:
            try:
                if kind == "cancel":
                    slot.cancel_order(oid)
                else:
                    slot.submit_order(sym, side, kind, qty, price, order_id=oid)
            except Exception as exc:
                slot.record_error(exc, None, where=f"in an order intent from {self.script.path}")
        if batch is not None:
            for k, msg, stack in out["errors"]:
                where = f"{_js_message(msg, self.script.path)}"
                if stack:
                    where += f" | {_js_message(stack, self.script.path)}"
                slot.record_error(JSError(f"{self.script.path}: {where}"), batch[k])

    def _update_ctx(self, batch: list[Any], start: int, done: int) -> None:
        # Keep the Python ctx (what the executor prices against) in step with what JS saw.
        ctxs = self.slot.ctxs
        pending = set(ctxs)
        for ev in reversed(batch[start:done] if start or done != len(batch) else batch):
            if not pending:
                break
            sym = ev.symbol
            if sym not in pending:
                continue
            if ev.__class__ is Trade:
                ctxs[sym].last_price = ev.price
                pending.discard(sym)
        for ev in () if _all_trades(batch) else batch[start:done]:
            if ev.__class__ is Gap:
                self.slot.note_gap(ev)
            elif ev.__class__ is Book:
                ctx = ctxs[ev.symbol]
                if ev.bids:
                    ctx.best_bid = ev.bids[0][0]
                if ev.asks:
                    ctx.best_ask = ev.asks[0][0]
