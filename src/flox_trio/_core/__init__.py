"""The core of flox-trio: everything the engine is, behind ports for everything plugged into it.

Bottom to top: events and the order model (``_events``, ``_money``,
``_orders``), the clock and the ports (``_clock``, ``_ports``), snapshots and
the converter (``_status``, ``_convert``), market state (``_market``), then the
engine itself: strategies and their ``ctx`` (``_strategy``), hosts (``_host``),
the bus (``_bus``), slots and swaps (``_slot``, ``_swap``) and the runner
(``_runner``). Nothing in here imports a feed, a connector, an executor, the
tape or the JavaScript host: they plug into the ports.
"""
