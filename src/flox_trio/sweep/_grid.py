"""Grids of parameters, and the variants they expand to.

``--grid fast=5,8,12 --grid slow=21,26`` is six variants, every combination.
Values are read as JSON (``8``, ``0.5``, ``true``, ``"x"``), else kept as text,
like ``--param``. A variant is the strategy's base parameters with the grid
point on top; its label names only what the grid set (``fast=8 slow=21``).
"""

from __future__ import annotations

import itertools
import json
import random
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

import attrs

from .._errors import ConfigError

Order = Literal["grid", "random"]


@attrs.frozen
class Variant:
    """One point of a grid: ``params`` (the base with ``point`` on top) and a label for people."""

    index: int
    point: dict[str, Any]
    params: dict[str, Any]

    @property
    def label(self) -> str:
        return " ".join(f"{k}={_show(v)}" for k, v in self.point.items()) or "base"


def _show(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_grid(specs: Iterable[str]) -> dict[str, list[Any]]:
    """``["fast=5,8,12", "slow=21,26"]`` → ``{"fast": [5, 8, 12], "slow": [21, 26]}``.

    Raises:
        ConfigError: a spec is not ``key=v1,v2,...``, a key repeats, or a key has a repeated value.
    """
    grid: dict[str, list[Any]] = {}
    for spec in specs:
        key, sep, values = spec.partition("=")
        key = key.strip()
        if not sep or not key or not values.strip():
            raise ConfigError(f"--grid takes key=v1,v2,... (e.g. --grid fast=5,8,12), got {spec!r}")
        if key in grid:
            raise ConfigError(f"--grid {key} is given twice: put all its values in one --grid {key}=...")
        parsed = [_value(v.strip()) for v in values.split(",") if v.strip()]
        if len({json.dumps(v, sort_keys=True) for v in parsed}) != len(parsed):
            raise ConfigError(f"--grid {spec!r} repeats a value")
        grid[key] = parsed
    return grid


def expand(grid: Mapping[str, Sequence[Any]], base: Mapping[str, Any] | None = None) -> list[Variant]:
    """Every combination of the grid's values, in grid order, on top of ``base``."""
    keys = list(grid)
    out = []
    for i, combo in enumerate(itertools.product(*(grid[k] for k in keys))):
        point = dict(zip(keys, combo, strict=True))
        out.append(Variant(i, point, {**(base or {}), **point}))
    return out


def schedule(variants: Sequence[Variant], rounds: int = 1, order: Order = "grid",
             seed: int | None = None) -> list[Variant]:
    """The variants in the order a live sweep runs them: ``rounds`` rounds, each variant once per round.

    Rounds interleave (ABC ABC, not AABBCC) so a drift of the market over the
    sweep does not favour whichever variant ran first; ``random`` shuffles each
    round on its own (reproducibly with ``seed``).
    """
    if rounds < 1:
        raise ConfigError(f"rounds must be >= 1, got {rounds}")
    rng = random.Random(seed)
    out: list[Variant] = []
    for _ in range(rounds):
        one = list(variants)
        if order == "random":
            rng.shuffle(one)
        out.extend(one)
    return out
