"""The batch decoder's admission and step planning, without llama.cpp (`hyrouter.edge._batch_scheduler`)."""

from __future__ import annotations

import threading

from hyrouter.edge._batch_scheduler import STALE_S, BatchScheduler, Sequence, StepTimes, plan_step


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def scheduler(parallel: int = 4, floor: float = 0.0, clock: Clock | None = None) -> BatchScheduler:
    return BatchScheduler(parallel, floor, StepTimes(clock or Clock()))


def seq(prompt: int = 10, admitted: list[Sequence] | None = None) -> Sequence:
    return Sequence(prompt, 16, on_admitted=(admitted.append if admitted is not None else lambda s: None))


def test_sequences_join_at_once_up_to_parallel_then_wait_in_order() -> None:
    s, admitted = scheduler(parallel=2), []
    a, b, c, d = (seq(admitted=admitted) for _ in range(4))
    assert s.submit(a) and s.submit(b)
    assert not s.submit(c) and not s.submit(d)
    assert admitted == [a, b] and list(s.waiting) == [c, d]
    assert {a.seq_id, b.seq_id} == {0, 1}
    s.finish(a)  # its slot goes to the first waiting one, with the freed sequence id
    assert admitted == [a, b, c] and c.seq_id == a.seq_id and list(s.waiting) == [d]
    s.finish(b)
    assert admitted[-1] is d and d.seq_id == b.seq_id and not s.waiting


def test_a_new_request_does_not_overtake_a_waiting_one() -> None:
    s = scheduler(parallel=1)
    first, second, third = seq(), seq(), seq()
    s.submit(first)
    s.submit(second)
    s.running.clear()  # a slot is free, but `second` waits ahead of `third`
    assert not s.submit(third)
    assert list(s.waiting) == [second, third]
    assert s.admit() == [second]


def test_withdraw_takes_back_only_a_waiting_sequence() -> None:
    s = scheduler(parallel=1)
    running, waiting = seq(), seq()
    s.submit(running)
    s.submit(waiting)
    assert s.withdraw(waiting) and not s.waiting
    assert not s.withdraw(waiting)
    assert not s.withdraw(running)  # it runs: the decoder must drop it
    assert s.running == [running]


def test_the_latency_floor_stops_widening_the_batch() -> None:
    clock = Clock()
    s = scheduler(parallel=4, floor=30.0, clock=clock)
    s.times.record(1, 0.010)  # 100 tokens/s alone
    s.times.record(2, 0.020)  # 50 tokens/s each at two
    s.times.record(3, 0.040)  # 25 tokens/s each at three: below the floor
    a, b, c = seq(), seq(), seq()
    assert s.submit(a) and s.submit(b)
    assert not s.submit(c)  # a third would slow every answer below 30 tokens/s
    s.finish(a)
    assert s.running == [b, c]


def test_one_sequence_always_runs_however_slow() -> None:
    s = scheduler(parallel=4, floor=1000.0)
    s.times.record(1, 1.0)
    assert s.submit(seq())


def test_an_unmeasured_width_is_estimated_from_a_narrower_one_without_batching_gain() -> None:
    times = StepTimes(Clock())
    assert times.tokens_per_s(1) is None  # nothing known: the width is tried
    times.record(2, 0.02)
    assert times.tokens_per_s(2) == 50.0
    assert times.tokens_per_s(4) == 25.0  # 2 x 50 tokens/s shared by 4
    assert times.tokens_per_s(1) is None


def test_step_times_are_a_moving_average_and_are_forgotten_when_stale() -> None:
    clock = Clock()
    times = StepTimes(clock)
    times.record(1, 0.010)
    times.record(1, 0.020)
    assert times.tokens_per_s(1) == 1 / 0.012
    clock.now += STALE_S + 1
    assert times.tokens_per_s(1) is None  # a width once too slow is tried again
    times.record(1, 0.020)
    assert times.tokens_per_s(1) == 50.0  # a fresh start, not averaged with the stale value


def test_a_step_decodes_every_running_sequence_and_fills_the_rest_with_prompts() -> None:
    decoding, joining, long_prompt = seq(prompt=5), seq(prompt=30), seq(prompt=100)
    decoding.prefill_left = 0
    plan = plan_step([joining, decoding, long_prompt], n_batch=64)
    assert plan == [(decoding, 1), (joining, 30), (long_prompt, 33)]
    assert plan_step([decoding], n_batch=1) == [(decoding, 1)]
    assert plan_step([], n_batch=8) == []


def test_exclusive_use_pauses_the_batch_between_steps() -> None:
    s = scheduler()
    s.submit(seq())
    assert s.next_step(lambda: False)  # a step runs
    entered = threading.Event()

    def single() -> None:
        with s.exclusive():
            entered.set()

    thread = threading.Thread(target=single)
    thread.start()
    assert not entered.wait(0.1)  # it waits for the step to end
    s.step_done()
    assert entered.wait(5)
    thread.join(5)
    assert s.next_step(lambda: False)  # the batch goes on once it is done
    s.step_done()


def test_next_step_waits_while_exclusive_and_ends_once_closed_and_empty() -> None:
    s = scheduler()
    running = seq()
    s.submit(running)
    result: list[bool] = []
    with s.exclusive():
        thread = threading.Thread(target=lambda: result.append(s.next_step(lambda: False)))
        thread.start()
        thread.join(0.1)
        assert thread.is_alive() and not result  # paused
    thread.join(5)
    assert result == [True]
    s.step_done()
    s.finish(running)
    assert s.next_step(lambda: True) is False


def test_next_step_drops_ended_sequences_while_the_batch_is_paused() -> None:
    s = scheduler()
    gone = seq()
    s.submit(gone)
    dropped = threading.Event()
    cancelled: list[Sequence] = []

    def drop() -> None:  # the decoder ends the sequences whose callers went away
        for ended in cancelled:
            s.finish(ended)
            dropped.set()
        cancelled.clear()

    result: list[bool] = []
    with s.exclusive():
        thread = threading.Thread(target=lambda: result.append(s.next_step(lambda: True, drop)))
        thread.start()
        with s.lock:
            cancelled.append(gone)
            s.changed.notify_all()
        assert dropped.wait(5)  # while still paused
        assert not s.running
    thread.join(5)
    assert result == [False]  # closed, and nothing is left to run


def test_would_wait_when_no_sequence_is_free_or_others_wait() -> None:
    s = scheduler(parallel=2)
    assert not s.would_wait()
    s.submit(seq())
    assert not s.would_wait()  # a sequence is free
    s.submit(seq())
    assert s.would_wait()
    s.running.pop()
    s.submit(seq())  # joins the freed sequence
    s.running.pop()
    s.waiting.append(seq())
    assert s.would_wait()  # a free sequence, but the first waiting request gets it


def test_clear_forgets_every_sequence_and_ends_the_step() -> None:
    s = scheduler(parallel=1)
    s.submit(seq())
    s.submit(seq())
    assert s.next_step(lambda: False)
    s.clear()
    assert not s.running and not s.waiting
    with s.exclusive():  # not held back by the step that never ended
        pass
