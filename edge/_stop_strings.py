"""Stop strings over generated text that arrives a token at a time (the batch decoder's sequences).

As llama-cpp-python does for one sequence: text that may be the start of a stop string is held back
until the next tokens show whether it is; the answer ends before the first stop string, which is not
part of it.
"""

from __future__ import annotations

import codecs
from collections.abc import Sequence


class StopText:
    """The answer's text so far, cut at the first stop string."""

    def __init__(self, stops: Sequence[str]) -> None:
        """Watch for `stops` (empty strings ignored)."""
        self._stops = [s for s in stops if s]
        self._held = ""
        # Bytes to text: a token may hold part of a UTF-8 character; invalid bytes are dropped,
        # as llama-cpp-python's completion drops them.
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="ignore")
        self.stopped = False

    def push(self, piece: bytes) -> str:
        """Add a token's bytes; returns the text now safe to send (sets `stopped` at a stop string)."""
        if self.stopped:
            return ""
        held = self._held + self._decoder.decode(piece)
        cut = min((i for s in self._stops if (i := held.find(s)) >= 0), default=-1)
        if cut >= 0:
            self.stopped, self._held = True, ""
            return held[:cut]
        keep = max((_overlap(held, s) for s in self._stops), default=0)
        self._held = held[len(held) - keep :]
        return held[: len(held) - keep]

    def flush(self) -> str:
        """The text held back, at the end of the answer (no stop string came)."""
        if self.stopped:
            return ""
        rest, self._held = self._held + self._decoder.decode(b"", final=True), ""
        return rest


def _overlap(text: str, stop: str) -> int:
    """The length of the longest end of `text` that starts `stop`."""
    for size in range(min(len(text), len(stop) - 1), 0, -1):
        if stop.startswith(text[-size:]):
            return size
    return 0
