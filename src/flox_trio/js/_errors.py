"""JavaScript errors as flox errors: script path, line and the script's own stack."""

from __future__ import annotations

import re

from .._errors import JSError, SandboxError, StrategyLoadError

#: Every eval in the quickjs binding is named "<input>"; the prelude is
#: evaluated after this many blank lines so that its frames are told apart by
#: line number (QuickJS keeps line numbers at least up to ~70k reliably).
PRELUDE_LINE_BASE = 50_000

_FRAME = re.compile(r"<input>(?::(\d+))?")


class ScriptError(JSError):
    """A JavaScript exception from a strategy script.

    ``str()`` is one line (``path:line: Name: message (in onTrade)``); the JS
    stack is in ``js_stack`` and attached as a note, so tracebacks show it.
    """

    def __init__(
        self,
        script: str,
        js_name: str,
        js_message: str,
        *,
        line: int | None = None,
        js_stack: str = "",
        where: str = "",
        hint: str = "",
    ) -> None:
        self.script = script
        self.line = line
        self.js_name = js_name
        self.js_message = js_message
        self.js_stack = js_stack
        self.where = where
        place = f"{script}:{line}" if line is not None else script
        text = f"{place}: {js_name}: {js_message}" if js_message else f"{place}: {js_name}"
        if where:
            text += f" (in {where})"
        if hint:
            text += f"; {hint}"
        super().__init__(text)
        if js_stack:
            self.add_note(f"JavaScript stack:\n{js_stack}")


class ScriptLoadError(ScriptError, StrategyLoadError):
    """The script did not compile, or threw while it was evaluated."""


class ScriptSandboxError(ScriptError, SandboxError):
    """The script tried to leave its sandbox (a path out of its state directory)."""


class RunawayError(ScriptError):
    """A call ran past its CPU time limit or out of memory; the call was abandoned.

    ``kind`` is ``"time"`` or ``"memory"``. A slot whose strategy runs away is
    quarantined.
    """

    def __init__(self, script: str, kind: str, message: str, *, where: str = "") -> None:
        self.kind = kind
        super().__init__(script, "RunawayError", message, where=where)


def script_stack(stack: str, script: str) -> tuple[str, int | None]:
    """The JS stack with prelude frames dropped and ``<input>`` renamed to the script path.

    Returns the stack and the line of its first script frame.
    """
    lines: list[str] = []
    first: int | None = None
    for raw in stack.splitlines():
        if not raw.strip():
            continue
        m = _FRAME.search(raw)
        if m is None:
            lines.append(raw)
            continue
        if m.group(1) is None:
            lines.append(raw.replace("<input>", script))
            continue
        line = int(m.group(1))
        if line >= PRELUDE_LINE_BASE:
            continue
        if first is None:
            first = line
        lines.append(raw[: m.start()] + f"{script}:{line}" + raw[m.end():])
    return "\n".join(lines), first


def from_js(
    script: str, name: str, message: str, stack: str, code: str = "", where: str = "",
    *, cls: type[ScriptError] = ScriptError,
) -> ScriptError:
    """Build the flox error for a JS exception record collected by the prelude."""
    clean, line = script_stack(stack, script)
    if code == "EFLOXSANDBOX" or name == "SandboxError":
        cls = ScriptSandboxError if cls is ScriptError else cls
    hint = ""
    if name == "ReferenceError" and message.startswith("sym is not defined"):
        hint = "pass sym=... (or symbols=[...]) to flox.js.load, or load it with runner= holding a slot"
    return cls(script, name, message, line=line, js_stack=clean, where=where, hint=hint)


def from_exception_text(script: str, text: str, *, cls: type[ScriptError] = ScriptError,
                        where: str = "") -> ScriptError:
    """Build the flox error from a ``quickjs.JSException`` text: "Name: message\\n    at ...".

    Syntax errors come this way, with the position as the first frame.
    """
    head, _, stack = text.partition("\n")
    name, sep, message = head.partition(": ")
    if not sep or " " in name:
        name, message = "Error", head
    return from_js(script, name, message, stack, where=where, cls=cls)
