from __future__ import annotations

import httpx
import trio

import flox_trio as flox
from flox_trio.control import serve_metrics

from .conftest import Scripted, trade


async def test_prometheus_endpoint_reports_slots_and_events() -> None:
    feed = flox.feeds.PushFeed(["BTCUSDT"])
    async with flox.open_runner(feed) as runner, trio.open_nursery() as nursery:
        runner.add_strategy(Scripted())
        port = await nursery.start(serve_metrics, runner, 0)
        await feed.push([trade("1"), trade("2")])
        await runner.wait_idle()
        async with httpx.AsyncClient() as client:
            page = await client.get(f"http://127.0.0.1:{port}/metrics")
            missing = await client.get(f"http://127.0.0.1:{port}/nope")
        assert page.status_code == 200
        assert 'flox_slot_events_dispatched_total{language="python",slot="0"} 2.0' in page.text
        assert "flox_events_published_total 2.0" in page.text
        assert 'flox_slot_quarantined{language="python",slot="0"} 0.0' in page.text
        # Pushed events carry no receive time on the engine's clock: the latency gauge stays empty.
        assert "# TYPE flox_slot_receive_to_dispatch_seconds gauge" in page.text
        assert 'flox_slot_receive_to_dispatch_seconds{' not in page.text
        assert missing.status_code == 404
        nursery.cancel_scope.cancel()
        feed.close()
