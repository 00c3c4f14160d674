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
    task_status.started(bound)

    async def handler(stream: trio.SocketStream) -> None:
        await _handle(stream, registry)

    await trio.serve_listeners(handler, listeners)


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
    except (h11.RemoteProtocolError, trio.BrokenResourceError):
        return
    finally:
        await trio.aclose_forcefully(stream)
