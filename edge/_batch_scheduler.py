"""Which sequences decode together on the edge model: admission and step planning, no llama.cpp here.

The batch decoder (`hyrouter.edge._batching`) runs several requests as sequences of one llama.cpp
context. This module decides, between two decode steps, who joins:

- at most `parallel` sequences run at once (`edge.parallel`), each in a KV stream of its own;
- a sequence joins only while the measured per-sequence speed of the wider batch stays at or above
  `edge.min_tokens_per_s` (the latency floor). A batch width never measured is tried (its estimate
  is the narrower width's speed scaled down linearly, i.e. no batching gain assumed); a measurement
  older than `STALE_S` seconds is forgotten, so a width once found too slow is tried again later.
- waiting requests are admitted first come, first served: none overtakes an earlier one.

`plan_step` then fills one llama.cpp batch: one token for every decoding sequence, and the rest of
the `n_batch` tokens with prompt chunks of joining sequences (a long prompt spans several steps).

Everything here is plain Python under one lock, driven by the decoder's thread and the event loop.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

#: Seconds after which a batch width's measured step time is forgotten (and tried again).
STALE_S = 30.0
#: Weight of the newest step in the moving average of a width's step time.
EMA_WEIGHT = 0.2


@dataclass
class StepTimes:
    """Seconds of one decode step (every sequence one token, no prompt in the batch), per batch width."""

    clock: Callable[[], float]
    _seen: dict[int, tuple[float, float]] = field(default_factory=dict)  # width -> (ema seconds, when)

    def record(self, width: int, seconds: float) -> None:
        """A decode step of `width` sequences took `seconds`."""
        now = self.clock()
        known = self._fresh(width, now)
        ema = seconds if known is None else known + EMA_WEIGHT * (seconds - known)
        self._seen[width] = (ema, now)

    def _fresh(self, width: int, now: float) -> float | None:
        seen = self._seen.get(width)
        return seen[0] if seen is not None and now - seen[1] <= STALE_S else None

    def tokens_per_s(self, width: int) -> float | None:
        """Each sequence's tokens per second at `width`: measured, else extrapolated from the widest
        narrower width measured (linearly: no batching gain), else None (nothing known)."""
        now = self.clock()
        for narrower in range(width, 0, -1):
            if (seconds := self._fresh(narrower, now)) is not None and seconds > 0:
                return narrower / (width * seconds)
        return None


@dataclass(eq=False)
class Sequence:
    """One request as the scheduler sees it: its prompt and answer lengths."""

    prompt_tokens: int
    max_tokens: int
    #: called (under the scheduler's lock) once the sequence may run
    on_admitted: Callable[[Sequence], None] = lambda seq: None
    #: the context's sequence id while it runs (0 .. parallel-1)
    seq_id: int = -1
    #: prompt tokens not yet decoded
    prefill_left: int = 0

    def __post_init__(self) -> None:
        self.prefill_left = self.prompt_tokens


class BatchScheduler:
    """Waiting and running sequences of one batch decoder, and who may join (see the module docstring)."""

    def __init__(self, parallel: int, min_tokens_per_s: float, times: StepTimes) -> None:
        """At most `parallel` sequences, each kept at `min_tokens_per_s` or faster."""
        self.parallel = parallel
        self.min_tokens_per_s = min_tokens_per_s
        self.times = times
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)  # work arrived, or exclusive use ended
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self._exclusive = 0  # single-sequence uses of the model waiting for or holding it
        self._stepping = False

    def _may_join(self) -> bool:
        width = len(self.running)
        if width >= self.parallel:
            return False
        if width == 0:  # one sequence always runs, however slow
            return True
        speed = self.times.tokens_per_s(width + 1)
        return speed is None or speed >= self.min_tokens_per_s

    def _join(self, seq: Sequence) -> None:
        taken = {s.seq_id for s in self.running}
        seq.seq_id = next(i for i in range(self.parallel) if i not in taken)
        self.running.append(seq)
        seq.on_admitted(seq)
        self.changed.notify_all()

    def submit(self, seq: Sequence) -> bool:
        """Add `seq`: it runs at once when it may (True), else it waits (False)."""
        with self.lock:
            if not self.waiting and self._may_join():
                self._join(seq)
                return True
            self.waiting.append(seq)
            return False

    def would_wait(self) -> bool:
        """Whether a sequence submitted now would wait: others wait already, or none may join."""
        with self.lock:
            return bool(self.waiting) or not self._may_join()

    def clear(self) -> None:
        """Forget every waiting and running sequence (the decoder failed them), and any step."""
        with self.lock:
            self.waiting.clear()
            self.running.clear()
            self._stepping = False
            self.changed.notify_all()

    def withdraw(self, seq: Sequence) -> bool:
        """Take back a waiting `seq` (its wait timed out): True if it was still waiting."""
        with self.lock:
            if seq in self.waiting:
                self.waiting.remove(seq)
                return True
            return False

    def finish(self, seq: Sequence) -> None:
        """`seq` ended and its cells are free: admit who may join now."""
        with self.lock:
            if seq in self.running:
                self.running.remove(seq)
            self.admit()

    def admit(self) -> list[Sequence]:
        """Move waiting sequences to running, in order, while they may join; returns them."""
        joined = []
        with self.lock:
            while self.waiting and self._may_join():
                seq = self.waiting.popleft()
                self._join(seq)
                joined.append(seq)
        return joined

    # The decoder's thread and single-sequence uses of the model take turns: a step is never
    # interrupted, and an exclusive use pauses the batch between two steps.

    def next_step(self, closed: Callable[[], bool], drop: Callable[[], None] = lambda: None) -> bool:
        """Block until there is a step to run, and mark it running; False once `closed()` and no
        sequence is left.

        `drop` is called under the lock whenever it wakes, paused or not, before it looks for work:
        there the decoder ends the sequences whose callers went away, so that they need not wait
        for the batch to run again (a one-at-a-time request may hold the model for many seconds).
        Wake it with `changed.notify_all()`.
        """
        with self.lock:
            while True:
                drop()
                if not self._exclusive and self.running:
                    break
                if closed() and not self.running and not self.waiting:
                    return False
                self.changed.wait(timeout=1.0)
            self._stepping = True
            return True

    def step_done(self) -> None:
        """The step marked by `next_step` ended."""
        with self.lock:
            self._stepping = False
            self.changed.notify_all()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold the model alone: the batch pauses after its current step until the block ends."""
        with self.lock:
            self._exclusive += 1
            try:
                while self._stepping:
                    self.changed.wait()
            except BaseException:
                self._exclusive -= 1
                raise
        try:
            yield
        finally:
            with self.lock:
                self._exclusive -= 1
                self.changed.notify_all()


def plan_step(running: list[Sequence], n_batch: int) -> list[tuple[Sequence, int]]:
    """One llama.cpp batch: `(sequence, tokens)` for each sequence in it, in `running`'s order.

    Every decoding sequence (prompt done) adds its one next token; prompt chunks of the joining
    sequences fill the rest of `n_batch`, earliest first.
    """
    plan = [(seq, 1) for seq in running if seq.prefill_left == 0]
    room = n_batch - len(plan)
    for seq in running:
        if seq.prefill_left and room > 0:
            take = min(seq.prefill_left, room)
            plan.append((seq, take))
            room -= take
    return plan
