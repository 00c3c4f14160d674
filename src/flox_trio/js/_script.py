"""Loading JavaScript strategies: one fresh QuickJS context per script, on a thread of its own, and its host.

A script's context lives on its own thread (``_worker``): the engine waits
for a call without blocking, so whatever a script does, the other slots, the
control socket and the signal handlers go on. Each call crosses into JS once
(per batch of events, per lifecycle callback, per factory call), runs the
promise jobs the call queued (async callbacks), and comes back as one JSON
text that ``_boundary`` decodes against a schema. The state directory is
``_sandbox``'s. Whatever goes wrong in a script ends as a ``JSError`` on its
slot: the slot is quarantined, the engine lives.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import weakref
from collections.abc import Collection
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import orjson
import quickjs

from .._core._clock import real_seconds
from .._core._events import Book, Gap, SymbolRef, Trade, parse_symbols
from .._core._host import StrategyHost
from .._core._ports import SlotPort, StrategyRequests
from .._core._swap import DrySlot
from .._errors import (
    FloxError,
    JSError,
    SandboxError,
    StrategyLoadError,
    StrategyTypeError,
    UnknownSlotError,
    describe_exception,
)
from ._boundary import Described, Output, decode_output, decode_value, described, printable
from ._codec import codec
from ._sandbox import StateDir
from ._worker import JsThread, Stuck

if TYPE_CHECKING:
    from .._core._runner import Runner

log = logging.getLogger("flox_trio.js")

_PRELUDE = resources.files(__package__).joinpath("_prelude.js").read_text()

#: A context with a typical strategy uses ~0.3 MB; the spec's budget is 5 MB per JS slot.
DEFAULT_TIME_LIMIT = 0.25  # seconds of CPU per call (one batch, one callback)
DEFAULT_MEMORY_LIMIT = 5 * 1024 * 1024
#: QuickJS's own allocation cap, as a multiple of ``memory_limit``: our check after
#: every call retires a context over ``memory_limit``; the cap gives the garbage
#: collector room to finish the call that crossed it.
HARD_MEMORY_FACTOR = 2
DEFAULT_STACK_LIMIT = 256 * 1024
#: Slots a script may add with ``runner.addStrategy`` unless the operator allows more.
DEFAULT_MAX_NEW_SLOTS = 4
#: Promise jobs one call may queue (async callbacks' continuations); beyond it the script is runaway.
MAX_JOBS = 100_000
_LOG_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
_ENTRIES = ("call", "factory", "registeredInfo", "sync", "release", "salvage", "collect", "inspect", "setSym")


class Abandoned(JSError):
    """A call into the script did not complete; ``salvage`` is what it produced before it stopped."""

    def __init__(self, message: str, salvage: Output | None) -> None:
        super().__init__(message)
        self.salvage = salvage


class Script:
    """A loaded script: its QuickJS context (on its own thread), its state directory, its strategies.

    ``may_swap`` are slots the script's ``runner.replaceStrategy`` may swap
    besides the ones its strategies occupy ("any": every slot);
    ``max_new_slots`` caps its ``runner.addStrategy``.
    """

    def __init__(
        self,
        source: str,
        *,
        path: str,
        state_dir: str | os.PathLike[str] = "state",
        runner: Runner | None = None,
        sym: str = "BTCUSDT",
        time_limit: float = DEFAULT_TIME_LIMIT,
        memory_limit: int = DEFAULT_MEMORY_LIMIT,
        stack_limit: int = DEFAULT_STACK_LIMIT,
        may_swap: Collection[int] | Literal["any"] = (),
        max_new_slots: int = DEFAULT_MAX_NEW_SLOTS,
    ) -> None:
        self.path = path
        self.source = source
        self.source_hash = hashlib.sha256(source.encode("utf-8", "surrogatepass")).hexdigest()
        self.files = StateDir(Path(state_dir), path)
        self.time_limit = time_limit
        self.memory_limit = memory_limit
        #: The longest a call may take before it is abandoned (the time limit is CPU time).
        self.deadline = max(1.0, 4 * time_limit)
        # RequestPolicy: what the operator allows this script beyond its own slots.
        self.grants: frozenset[int] | None = None if may_swap == "any" else frozenset(may_swap)
        self.max_new_slots = max_new_slots
        self.new_slots = 0
        #: Where the script's ``runner.replaceStrategy`` / ``addStrategy`` go.
        self.requests: StrategyRequests | None = runner.strategy_requests(self) if runner is not None else None
        # Runner requests are held until one of the script's strategies is in a slot:
        # only then does the script own something, and a refused load asked for nothing.
        self._in_slot = False
        self._pending: list[tuple[str, int, Described]] = []
        self._parked: list[JsStrategy] = []
        self._synced_at = 0.0
        #: Set when the script is retired (out of memory, stuck): it is never called again.
        self.dead: str | None = None
        # How many JsStrategy objects hold each JS handle; handles nobody holds
        # any more are released in JS at the start of the next call.
        self._holds: dict[int, int] = {}
        self._unheld: set[int] = set()
        self._thread = JsThread(f"flox-js {Path(path).name}")
        weakref.finalize(self, self._thread.close)
        self._ctx: quickjs.Context | None = None
        self._fn: dict[str, Any] = {}
        changes = self._changes_json()
        try:
            self._thread.run_sync(lambda: self._open(source, sym, stack_limit, changes), self.deadline + 5)
        except Stuck:
            self.dead = "loading it did not finish"
            raise StrategyLoadError(f"{path}: loading the script did not finish within {self.deadline:g} s") from None
        except quickjs.JSException as exc:
            raise StrategyLoadError(f"{path}: {_js_message(exc, path)}") from None
        self._after(self._invoke_sync("registeredInfo"), None)

    def __repr__(self) -> str:
        return f"script {self.path}"

    # --- on the script's thread ----------------------------------------------------------------

    def _open(self, source: str, sym: str, stack_limit: int, changes: str | None) -> None:
        ctx = self._ctx = quickjs.Context()
        ctx.set_memory_limit(self.memory_limit * HARD_MEMORY_FACTOR)
        ctx.set_max_stack_size(stack_limit)
        # Padded so that prelude frames in a stack trace have line numbers no
        # script has: QuickJS names every evaluated source "<input>".
        ctx.eval("\n" * _PRELUDE_LINE_OFFSET + _PRELUDE)
        self._fn = {name: ctx.eval(f"__flox_entry.{name}") for name in _ENTRIES}
        ctx.eval("delete globalThis.__flox_entry")
        self._fn["setSym"](sym)
        if changes:
            self._fn["sync"](changes)
        ctx.set_time_limit(self.time_limit)
        ctx.eval(source)
        self._run_jobs()

    def _run(self, name: str, args: tuple[Any, ...], release: str | None, changes: str | None
             ) -> tuple[Any, BaseException | None, Any, Any, int]:
        """One call and the promise jobs it queued: (result, error, salvage, jobs' result, memory in use)."""
        ctx, fn = self._ctx, self._fn
        assert ctx is not None
        if release:
            fn["release"](release)
        if changes:
            fn["sync"](changes)
        raw: Any = None
        error: BaseException | None = None
        salvage: Any = None
        jobs: Any = None
        try:
            raw = fn[name](*args)
            jobs = self._run_jobs()
        except quickjs.JSException as exc:
            error = exc
            try:
                salvage = fn["salvage"]()
            except quickjs.JSException:
                salvage = None
        used = int(ctx.memory()["malloc_size"])
        return raw, error, salvage, jobs, used

    def _run_jobs(self) -> Any:
        """Run the promise jobs queued so far (async callbacks), within a budget; their output, if any."""
        ctx = self._ctx
        assert ctx is not None
        ran = 0
        started = real_seconds()
        while ctx.execute_pending_job():
            ran += 1
            if ran >= MAX_JOBS or real_seconds() - started > self.time_limit:
                raise quickjs.JSException(f"InternalError: the call left more than {ran} promise jobs running "
                                          f"(a promise loop?)")
        return self._fn["collect"]() if ran else None

    # --- calls, from the Trio thread ------------------------------------------------------------

    def _prepare(self) -> str | None:
        """Refuse a retired script; the handles to release in JS with this call."""
        if self.dead is not None:
            raise JSError(f"{self.path}: this script is retired ({self.dead}); load the script again")
        if not self._unheld:
            return None
        handles, self._unheld = sorted(self._unheld), set()
        return orjson.dumps(handles).decode()

    def _finish(self, result: tuple[Any, BaseException | None, Any, Any, int], what: str) -> Output:
        raw, error, salvage, jobs, used = result
        if used > self.memory_limit and self.dead is None:
            self.dead = f"out of memory: it used {used} bytes, over its limit of {self.memory_limit}"
            log.error("%s: %s; its strategies are quarantined", self.path, self.dead)
        if error is not None:
            message = _js_message(error, self.path)
            if message.split(" | ")[0].strip() == "null" and self.dead is None:
                # QuickJS throws null, with no stack, when an allocation fails.
                self.dead = f"ran out of memory (limit {self.memory_limit * HARD_MEMORY_FACTOR} bytes)"
                log.error("%s: %s; its strategies are quarantined", self.path, self.dead)
            leftover = None
            if salvage is not None:
                try:
                    leftover = decode_output(salvage, self.path)
                except JSError:
                    leftover = None
            if self.dead is not None and self.dead not in message:
                message = f"{message}; {self.dead}"
            raise Abandoned(f"{self.path}: {what} was stopped: {message}", leftover)
        out = decode_output(raw, self.path)
        if jobs is not None:
            later = decode_output(jobs, self.path)
            out.logs.extend(later.logs)
            out.intents.extend(later.intents)
            out.requests.extend(later.requests)
            out.writes.extend(later.writes)
            out.errors.extend(later.errors)
        return out

    def _retire_stuck(self, what: str) -> Abandoned:
        self.dead = f"{what} did not return within {self.deadline:g} s"
        log.error("%s: %s; its strategies are quarantined", self.path, self.dead)
        return Abandoned(f"{self.path}: {self.dead}", None)

    def _invoke_sync(self, name: str, *args: Any) -> Output:
        release = self._prepare()
        try:
            result = self._thread.run_sync(lambda: self._run(name, args, release, None), self.deadline)
        except Stuck:
            raise self._retire_stuck(name) from None
        return self._finish(result, name)

    async def invoke(self, name: str, *args: Any, sync_files: bool = False) -> Output:
        """Call an entry point of the prelude on the script's thread, waiting for it without blocking."""
        release = self._prepare()
        changes = self._changes_json() if sync_files else None
        try:
            result = await self._thread.run(lambda: self._run(name, args, release, changes), self.deadline)
        except Stuck:
            raise self._retire_stuck(name) from None
        return self._finish(result, name)

    def _changes_json(self) -> str | None:
        self._synced_at = real_seconds()
        changes = self.files.changes()
        return orjson.dumps(changes).decode() if changes else None

    def files_due(self, every: float = 1.0) -> bool:
        """Whether the state directory's mirror should be refreshed (at most once per ``every`` s)."""
        return real_seconds() - self._synced_at >= every

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

    # --- what a call returned ----------------------------------------------------------------------

    def _after(self, out: Output, slot: SlotPort | None) -> None:
        """Apply file writes, logs and runner requests. Raises ``SandboxError`` for a refused write."""
        for rel, text in out.writes:
            self.files.write(rel, text)
        name = Path(self.path).name
        for level, text in out.logs:
            log.log(_LOG_LEVELS[level], "[%s] %s", name, printable(text))
        for req in out.requests:
            self._request(req.op, req.index, req.strategy, slot)

    def _granted(self, op: str, index: int) -> bool:
        return self.grants is None or (op == "replace" and index in self.grants)

    def _request(self, op: str, index: int, info: Described, slot: SlotPort | None) -> None:
        if self.requests is None or not (self._in_slot or self._granted(op, index)):
            self._pending.append((op, index, info))
            return
        try:
            strategy = JsStrategy(self, info)
            if op == "replace":
                self.requests.request_replace(index, strategy)
            else:
                self.requests.add_strategy(strategy)
        except FloxError as exc:
            if isinstance(exc, UnknownSlotError) and not self._in_slot:
                # Made while the script loads (``runner=`` granted it at once), for a slot
                # that exists once the script's strategy is added: held until then (and
                # its strategy kept, so that its JS object is not released meanwhile).
                self._pending.append((op, index, info))
                self._parked.append(strategy)
                return
            # A refused request is the script's error, never the engine's.
            where = f"in runner.{'replaceStrategy' if op == 'replace' else 'addStrategy'}"
            if slot is not None:
                slot.record_error(exc, where=where)
            else:
                log.error("%s: %s refused: %s", self.path, where, describe_exception(exc))

    def entered_slot(self, requests: StrategyRequests) -> None:
        """One of the script's strategies is in a slot: its held requests are made now."""
        if self.requests is None:
            self.requests = requests
        if not self._in_slot:
            self._in_slot = True
            pending, self._pending = self._pending, []
            for op, index, info in pending:
                self._request(op, index, info, None)
            self._parked.clear()

    # --- strategies ----------------------------------------------------------------------------

    @property
    def registered(self) -> JsStrategy:
        """The strategy the script passed to ``flox.register()``."""
        value = self._invoke_sync("registeredInfo").value
        if value is None:
            raise StrategyLoadError(f"{self.path}: the script never called flox.register(strategy)")
        return JsStrategy(self, described(value, self.path), spec=f"{self.path}:register")

    def call(self, name: str, *args: Any) -> JsStrategy:
        """Call a global factory (``makeStrategy('v2')``) and return the strategy it builds."""
        try:
            out = self._invoke_sync("factory", name, orjson.dumps(list(args)).decode())
        except Abandoned as exc:
            if exc.salvage is not None:
                self._after(exc.salvage, None)
            raise StrategyLoadError(f"{self.path}: {name}(...) threw: {exc}") from None
        self._after(out, None)
        return JsStrategy(self, described(out.value, self.path), spec=f"{self.path}:{name}",
                          params={"factory": name, "args": list(args)})

    def inspect(self, handle: int, name: str) -> Any:
        def run() -> Any:
            return self._fn["inspect"](handle, name)

        raw = self._thread.run_sync(run, self.deadline)
        return None if raw is None else decode_value(raw, self.path)

    def eval(self, code: str) -> Any:
        """Evaluate an expression in the script's context (inspection and tests); objects come back as JSON."""
        def run() -> Any:
            assert self._ctx is not None
            value = self._ctx.eval(code)
            return orjson.loads(value.json()) if isinstance(value, quickjs.Object) else value

        return self._thread.run_sync(run, self.deadline)

    def memory(self) -> dict[str, int]:
        def run() -> dict[str, int]:
            assert self._ctx is not None
            mem: dict[str, int] = self._ctx.memory()
            return mem

        return self._thread.run_sync(run, self.deadline)


def load(
    path: str | os.PathLike[str],
    state_dir: str | os.PathLike[str] = "state",
    *,
    runner: Runner | None = None,
    sym: str | None = None,
    time_limit: float = DEFAULT_TIME_LIMIT,
    memory_limit: int = DEFAULT_MEMORY_LIMIT,
    stack_limit: int = DEFAULT_STACK_LIMIT,
    may_swap: Collection[int] | Literal["any"] | None = None,
    max_new_slots: int = DEFAULT_MAX_NEW_SLOTS,
) -> Script:
    """Evaluate a strategy script in a fresh QuickJS context.

    ``state_dir`` is the only place the script's ``require('fs')`` reaches
    (``/tmp/x.json`` there is ``STATE_DIR/tmp/x.json``). ``runner`` binds the
    script's ``runner`` global. A script may swap the slots its strategies
    occupy and the ones in ``may_swap``; by default a script you load with
    ``runner=`` yourself may swap any slot (``"any"``), as the seed's example
    does from its top level. A script without that grant (the control socket
    and configs load them so) has its requests held until one of its
    strategies is in a slot, then checked. ``sym`` is the script's ``sym``
    global (default: the first symbol of the runner's slot 0, else "BTCUSDT").
    """
    p = Path(path)
    try:
        source = p.read_text(encoding="utf-8")
    except (OSError, UnicodeError) as exc:
        raise StrategyLoadError(f"cannot read JavaScript strategy {p}: {describe_exception(exc)}") from None
    if may_swap is None:
        may_swap = "any" if runner is not None else ()
    return Script(source, path=str(p), state_dir=state_dir, runner=runner,
                  sym=sym if sym is not None else _default_symbol(runner), time_limit=time_limit,
                  memory_limit=memory_limit, stack_limit=stack_limit, may_swap=may_swap, max_new_slots=max_new_slots)


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

    text = exc if isinstance(exc, str) else describe_exception(exc).partition(": ")[2]
    return printable(_LINE.sub(where, text).replace("<input>", path).replace("\n", " | "))


class JsStrategy:
    """A JavaScript strategy object, usable anywhere a Python strategy is."""

    def __init__(self, script: Script, info: Described, *, spec: str | None = None,
                 params: dict[str, Any] | None = None) -> None:
        self.script = script
        self.handle = info.handle
        script._hold(self.handle)
        weakref.finalize(self, script._unhold, self.handle)
        try:
            self.symbols = [str(s) for s in parse_symbols(info.symbols)]
        except Exception as exc:
            raise StrategyTypeError(f"{script.path}: the strategy's symbols are unusable: "
                                    f"{describe_exception(exc)}") from None
        self.callbacks = frozenset(info.callbacks)
        self.spec = spec or f"{script.path}:#{self.handle}"
        self.params = dict(params or {})

    def get(self, name: str) -> Any:
        """A property of the JS strategy object, as JSON-decoded Python (for inspection and tests)."""
        return self.script.inspect(self.handle, name)

    def __flox_host__(self) -> JsHost:
        return JsHost(self)

    def __repr__(self) -> str:
        return f"<JsStrategy {self.spec} {self.symbols}>"


class JsHost(StrategyHost):
    """Hosts a JavaScript strategy: one QuickJS call per batch, on the script's thread."""

    language = "javascript"

    def __init__(self, strategy: JsStrategy) -> None:
        self.strategy = strategy
        self.script = strategy.script
        self.origin = strategy.script
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
        if not isinstance(slot, DrySlot):  # a warm-up puts the strategy in no slot
            self.script.entered_slot(slot.requests)

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
        slot = self.slot
        try:
            out = await script.invoke("call", _pack("l", self.strategy.handle, name, slot.index, slot.order_seq,
                                                    self._state()), sync_files=True)
        except Abandoned as exc:
            if exc.salvage is not None:
                self._apply(exc.salvage, None)
            raise JSError(str(exc)) from None
        self._apply(out, None)
        if out.errors:
            _, msg, stack = out.errors[0]
            raise JSError(f"{script.path}: {name} threw {_js_message(msg, script.path)}"
                          f"{' | ' + _js_message(stack, script.path) if stack else ''}")

    async def start(self) -> None:
        await self._lifecycle("onStart")

    async def stop(self) -> None:
        await self._lifecycle("onStop")

    async def dispatch(self, batch: list[Any], start: int) -> int:
        slot = self.slot
        script = self.script
        left = slot.errors_left
        budget = 1 << 30 if left is None else max(1, left)
        try:
            # Files changed on disk by others reach onTrade within a second.
            out = await script.invoke("call", _pack("d", self.strategy.handle, slot.index, slot.order_seq,
                                                    self._state(), start, budget, *codec.encode(batch)),
                                      sync_files=script.files_due())
        except Abandoned as exc:
            # The call was abandoned in the middle of an event: the events before
            # it were delivered and what they produced (orders already given ids)
            # still counts; the rest of the batch never reached the strategy.
            leftover = exc.salvage
            done = len(batch)
            if leftover is not None and start < leftover.n <= len(batch):
                done = leftover.n
            elif leftover is not None:
                done = min(len(batch), start + 1)
            if leftover is not None:
                self._guarded(leftover, batch, start, done)
            slot.record_error(JSError(f"{exc} (in event {done - 1 - start} of a batch of {len(batch) - start})"),
                              batch[done - 1])
            slot.quarantine(f"runaway script {script.path}: {exc}")
            return done
        except (JSError, SandboxError) as exc:  # retired before, a refused file, or a malformed result
            slot.record_error(exc, batch[start] if start < len(batch) else None)
            slot.quarantine(f"script {script.path}: {describe_exception(exc)}")
            return len(batch)
        done = out.n
        if not start < done <= len(batch):
            err = JSError(f"{script.path}: the call reported {done} events delivered of a batch of {len(batch)} "
                          f"starting at {start}")
            slot.record_error(err, batch[start])
            slot.quarantine(f"script {script.path}: {err}")
            return len(batch)
        self._guarded(out, batch, start, done)
        if script.dead is not None:
            slot.quarantine(f"runaway script {script.path}: {script.dead}")
        return done

    def _guarded(self, out: Output, batch: list[Any], start: int, done: int) -> None:
        try:
            self._apply(out, batch)
        except (JSError, SandboxError) as exc:
            self.slot.record_error(exc, batch[done - 1])
            self.slot.quarantine(f"script {self.script.path}: {describe_exception(exc)}")
        self._update_ctx(batch, start, done)

    def _apply(self, out: Output, batch: list[Any] | None) -> None:
        slot = self.slot
        self.script._after(out, slot)
        for intent in out.intents:
            try:
                if intent.kind == "cancel":
                    slot.cancel_order(intent.order_id)
                elif intent.kind == "amend":
                    slot.amend_order(intent.order_id, intent.price, intent.qty)
                else:
                    slot.submit_order(intent.symbol, intent.side, intent.kind, intent.qty,  # type: ignore[arg-type]
                                      intent.price, order_id=intent.order_id)
            except Exception as exc:
                slot.record_error(exc, None, where=f"in an order intent from {self.script.path}")
        if batch is not None:
            for k, msg, stack in out.errors:
                where = f"{_js_message(msg, self.script.path)}"
                if stack:
                    where += f" | {_js_message(stack, self.script.path)}"
                slot.record_error(JSError(f"{self.script.path}: {where}"), batch[k] if 0 <= k < len(batch) else None)

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
