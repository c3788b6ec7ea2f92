"""Items handed from a worker thread to a coroutine on the event loop: the edge model's token streams.

llama.cpp generates in a worker thread (the one-at-a-time path's `asyncio.to_thread`, the batch
decoder's own thread) while the request's coroutine reads the pieces on the event loop. The thread
`put`s each piece, then `DONE`; an exception it `put`s stands for a failure. A thread outliving its
loop (closed: nobody listens any more) is told so through `gone`, and stops generating.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Final

#: The worker's last item: nothing more comes.
DONE: Final = object()


class Handoff:
    """An unbounded queue a worker thread fills and a coroutine on the loop that made it reads.

    Unbounded, as a stream holds at most `max_tokens` pieces.
    """

    def __init__(self, gone: Callable[[], None]) -> None:
        """Made on the event loop (it binds to the running one); `gone` is called in the worker
        thread when that loop is closed."""
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._gone = gone

    def put(self, item: Any) -> None:
        """Worker thread: hand `item` (a piece, an exception, `DONE`) to the loop."""
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            self._gone()

    async def get(self) -> Any:
        """Event loop: the next item, waiting for it."""
        return await self._queue.get()
