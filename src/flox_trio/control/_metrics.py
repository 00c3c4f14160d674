"""A Prometheus endpoint on loopback, served by a Trio task (no server thread left behind).

Metrics are read from ``runner.status()`` at scrape time by a custom
collector, so the hot path pays nothing for them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING

import h11
import trio
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

if TYPE_CHECKING:
    from .._core._runner import Runner

log = logging.getLogger("flox_trio.metrics")

#: Scrapes served at once; a connection beyond this is closed at once.
MAX_CONNECTIONS = 32


class RunnerCollector:
    """Engine, slot and connector numbers for one runner."""

    def __init__(self, runner: Runner) -> None:
        self.runner = runner

    def collect(self) -> Iterator[Metric]:
        st = self.runner.status()
        yield CounterMetricFamily("flox_events_published", "Events published on the bus", value=st.published)
        labels = ["slot", "language"]
        dispatched = CounterMetricFamily("flox_slot_events_dispatched", "Events a slot delivered", labels=labels)
        depth = GaugeMetricFamily("flox_slot_queue_depth", "Events queued for a slot", labels=labels)
        errors = CounterMetricFamily("flox_slot_errors", "Errors raised by a slot's strategies", labels=labels)
        swaps = CounterMetricFamily("flox_slot_swaps", "Completed swaps", labels=labels)
        dropped = CounterMetricFamily("flox_slot_events_dropped", "Events dropped by the overflow policy", labels=labels)
        quarantined = GaugeMetricFamily("flox_slot_quarantined", "1 while the slot is quarantined", labels=labels)
        latency = GaugeMetricFamily("flox_slot_receive_to_dispatch_seconds",
                                    "Smoothed time from a market event's receipt to its delivery", labels=labels)
        for s in st.slots:
            lv = [str(s.index), s.language]
            dispatched.add_metric(lv, s.dispatched)
            depth.add_metric(lv, s.queue_depth)
            errors.add_metric(lv, s.errors)
            swaps.add_metric(lv, s.swaps)
            dropped.add_metric(lv, s.dropped)
            quarantined.add_metric(lv, 1.0 if s.quarantined else 0.0)
            if s.latency_us is not None:
                latency.add_metric(lv, s.latency_us / 1e6)
        yield from (dispatched, depth, errors, swaps, dropped, quarantined, latency)
        # Connectors report these; other feeds (lists, tapes) do not have them.
        feed = st.feed
        for key in ("messages", "gaps", "resyncs", "errors", "connect_count"):
            value = getattr(feed, key, None)
            if isinstance(value, int | float):
                yield CounterMetricFamily(f"flox_feed_{key}", f"Feed {key.replace('_', ' ')}", value=value)
        age = getattr(feed, "last_message_age", None)
        if isinstance(age, int | float):
            yield GaugeMetricFamily("flox_feed_last_message_age_seconds", "Seconds since the last message", value=age)


async def serve_metrics(
    runner: Runner,
    port: int = 9464,
    *,
    host: str = "127.0.0.1",
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``/metrics`` on loopback until cancelled; reports the bound port through ``task_status``."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RunnerCollector(runner))
    listeners = await trio.open_tcp_listeners(port, host=host)
    bound = listeners[0].socket.getsockname()[1]
    log.info("metrics on http://%s:%d/metrics", host, bound)
    open_connections = [0]

    async def serve(stream: trio.SocketStream) -> None:
        try:
            await _handle(stream, registry)
        finally:
            open_connections[0] -= 1

    async def accept_loop(listener: trio.SocketListener, nursery: trio.Nursery) -> None:
        # Like trio.serve_listeners, but at most MAX_CONNECTIONS at once (more are closed at
        # once), so scrapers cannot take the file descriptors the engine's connections need.
        async with listener:
            await _accept(listener, nursery)

    async def _accept(listener: trio.SocketListener, nursery: trio.Nursery) -> None:
        backoff = 0.0
        while True:
            try:
                stream = await listener.accept()
            except OSError as exc:
                if not backoff:
                    log.error("metrics: accept() failed (%s); retrying", exc.strerror or exc)
                backoff = min(1.0, backoff * 2 or 0.05)
                await trio.sleep(backoff)
                continue
            backoff = 0.0
            if open_connections[0] >= MAX_CONNECTIONS:
                await trio.aclose_forcefully(stream)
                continue
            open_connections[0] += 1
            nursery.start_soon(serve, stream)

    async with trio.open_nursery() as nursery:
        for listener in listeners:
            nursery.start_soon(accept_loop, listener, nursery)
        task_status.started(bound)


async def _handle(stream: trio.abc.Stream, registry: CollectorRegistry) -> None:
    conn = h11.Connection(h11.SERVER)
    try:
        with trio.move_on_after(10):
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    data = await stream.receive_some(65536)
                    if not data:
                        return
                    conn.receive_data(bytes(data))
                    continue
                if isinstance(event, h11.Request):
                    ok = event.target.split(b"?")[0] == b"/metrics"
                    body = generate_latest(registry) if ok else b"not found: try /metrics\n"
                    headers = [("content-type", "text/plain; version=0.0.4; charset=utf-8"),
                               ("content-length", str(len(body))), ("connection", "close")]
                    await stream.send_all(conn.send(h11.Response(status_code=200 if ok else 404, headers=headers)))
                    await stream.send_all(conn.send(h11.Data(data=body)))
                    await stream.send_all(conn.send(h11.EndOfMessage()))
                return
    except (h11.RemoteProtocolError, h11.LocalProtocolError, trio.BrokenResourceError):
        return
    except Exception:  # a collector that fails must not take the engine down with the scrape
        log.exception("metrics: serving a scrape failed")
        return
    finally:
        await trio.aclose_forcefully(stream)
