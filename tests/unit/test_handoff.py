"""Items handed from a worker thread to the event loop (`hyrouter.edge._handoff`)."""

from __future__ import annotations

import asyncio
import threading

from hyrouter.edge._handoff import DONE, Handoff


def test_items_reach_the_loop_in_order_and_a_closed_loop_is_reported_gone() -> None:
    gone = threading.Event()

    async def main() -> tuple[Handoff, list[object]]:
        handoff = Handoff(gone.set)
        worker = threading.Thread(target=lambda: [handoff.put(item) for item in (1, 2, DONE)])
        worker.start()
        items = [await handoff.get() for _ in range(3)]
        worker.join(5)
        return handoff, items

    handoff, items = asyncio.run(main())
    assert items == [1, 2, DONE] and not gone.is_set()
    handoff.put(3)  # the loop is closed: the worker is told nobody listens
    assert gone.is_set()
