"""Continuous batching on the edge: several requests decoded together in one llama.cpp context.

`BatchDecoder` owns a second llama.cpp context on the `Llama`'s weights (no second copy of them),
with `n_seq_max = parallel` sequences, and one worker thread that runs its decode loop. Each step
is one `llama_decode` of a batch holding the next token of every running sequence and prompt chunks
of joining ones (`hyrouter.edge._batch_scheduler`); requests join and leave between steps.

KV cache: not unified (`kv_unified` false): each sequence has a stream of `n_ctx` cells of its own,
so every request has the whole window the one-at-a-time path gives it and never runs out of cache
mid-answer, and attention reads only its own cells (llama.cpp's advice for sequences that share no
prefix: faster than a unified cache, and a lone sequence's logits are the one-at-a-time path's to
the last bit). The cost is memory: `parallel` times the `Llama`'s own KV cache, which stays for the
requests the batch does not serve (SmolLM2-135M: 23 KB a token, 47 MB a 2,048-token stream). A
prompt of `n_ctx` tokens or more is refused as the one-at-a-time path refuses it; an answer that
reaches `n_ctx` ends with `length`.

Greedy answers: several sequences in one step change how llama.cpp groups its matrix products, so
the logits can differ from a lone sequence's in the last bits, and a greedy answer may take the
other branch where two tokens are all but tied (as with llama.cpp's server or vLLM); alone in the
batch, a sequence's answer is the one-at-a-time path's.

Sampling is llama.cpp's own, one sampler chain per sequence, with llama-cpp-python's chat defaults
(top_k 40, top_p 0.95, min_p 0.05, temperature 0.2) where the request sets nothing; greedy at
temperature 0. Token signals (logprobs, entropy,
margin) are read from each sequence's logits row. Stop strings are matched in the decoded text.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import threading
import time
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hyrouter.edge._batch_scheduler import BatchScheduler, Sequence, StepTimes, plan_step
from hyrouter.edge._handoff import DONE, Handoff
from hyrouter.edge._stop_strings import StopText
from hyrouter.edge._token_signals import TokenSignals
from hyrouter.router._errors import EdgeBackendError, EdgeBusy

if TYPE_CHECKING:
    from llama_cpp import Llama

logger = logging.getLogger("hybrid_router")

_ADMITTED = object()  # the worker took the sequence in (first item of a waiting request's queue)


@dataclass(frozen=True)
class Sampling:
    """How one sequence draws its tokens (llama-cpp-python's chat completion defaults)."""

    temperature: float = 0.2
    top_p: float = 0.95
    top_k: int = 40
    min_p: float = 0.05
    seed: int = 0xFFFFFFFF  # llama.cpp's LLAMA_DEFAULT_SEED: a random one

    def sampler(self) -> Any:
        """A new llama.cpp sampler chain (free it with `llama_sampler_free`)."""
        import llama_cpp

        chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
        if self.temperature <= 0:
            llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_greedy())
            return chain
        for stage in (
            llama_cpp.llama_sampler_init_top_k(self.top_k),
            llama_cpp.llama_sampler_init_top_p(self.top_p, 1),
            llama_cpp.llama_sampler_init_min_p(self.min_p, 1),
            llama_cpp.llama_sampler_init_temp(self.temperature),
            llama_cpp.llama_sampler_init_dist(self.seed & 0xFFFFFFFF),
        ):
            llama_cpp.llama_sampler_chain_add(chain, stage)
        return chain


class _Answer:
    """One request's sequence: what the worker thread needs, and the counts the caller reads after."""

    def __init__(
        self,
        prompt: list[int],
        max_tokens: int,
        sampling: Sampling,
        stops: list[str],
        signals: TokenSignals | None,
        emit: Callable[[Any], None],
    ) -> None:
        self.prompt = prompt
        self.sampling = sampling
        self.stop = StopText(stops)
        self.signals = signals
        self.emit = emit
        self.seq = Sequence(len(prompt), max_tokens, on_admitted=lambda _: emit(_ADMITTED))
        self.sampler: Any = None
        self.next_token = -1  # drawn, to be decoded at the next step
        self.completion_tokens = 0
        #: set by the caller (it went away): the worker drops the sequence before its next step
        self.cancelled = False

    @property
    def prompt_tokens(self) -> int:
        """Tokens of the prompt."""
        return len(self.prompt)

    @property
    def length(self) -> int:
        """Tokens in the sequence once the token drawn last is decoded."""
        return self.seq.prompt_tokens + self.completion_tokens


class BatchDecoder:
    """The decode loop of up to `parallel` sequences (see the module docstring)."""

    def __init__(
        self,
        llm: Llama,
        *,
        parallel: int,
        n_ctx: int,
        n_batch: int,
        n_threads: int,
        min_tokens_per_s: float,
    ) -> None:
        """A context of `parallel` sequences of `n_ctx` tokens each on `llm`'s model."""
        import llama_cpp
        from llama_cpp import _internals

        self._llm = llm
        self.n_ctx = n_ctx
        self.n_batch = max(n_batch, parallel)  # room for every sequence's next token
        params = llama_cpp.llama_context_params.from_buffer_copy(llm.context_params)
        params.n_ctx, params.n_seq_max, params.kv_unified = n_ctx * parallel, parallel, False
        params.n_batch = params.n_ubatch = self.n_batch
        params.n_threads = params.n_threads_batch = n_threads
        self._ctx = _internals.LlamaContext(model=llm._model, params=params, verbose=False)
        self._batch = _internals.LlamaBatch(n_tokens=self.n_batch, embd=0, n_seq_max=1, verbose=False)
        self._vocab = llm._model.vocab
        self._n_vocab = llama_cpp.llama_vocab_n_tokens(self._vocab)
        self.scheduler = BatchScheduler(parallel, min_tokens_per_s, StepTimes(time.monotonic))
        self._answers: dict[Sequence, _Answer] = {}
        self._closed = False
        self._thread: threading.Thread | None = None
        #: why the worker thread ended on an error: every request since is refused with it
        self._failure: EdgeBackendError | None = None

    @property
    def waiting(self) -> int:
        """Requests waiting to join the batch."""
        return len(self.scheduler.waiting)

    @property
    def running(self) -> int:
        """Sequences in the batch."""
        return len(self.scheduler.running)

    @property
    def failure(self) -> EdgeBackendError | None:
        """Why the worker thread ended on an error (every request is refused since), or None."""
        return self._failure

    def would_wait(self) -> bool:
        """Whether a request submitted now would wait to join the batch."""
        return self.scheduler.would_wait()

    def exclusive(self) -> contextlib.AbstractContextManager[None]:
        """Hold the model alone (the one-at-a-time path): the batch pauses between two steps."""
        return self.scheduler.exclusive()

    def _start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="edge-batch", daemon=True)
            self._thread.start()

    async def generate(
        self,
        prompt: list[int],
        *,
        max_tokens: int,
        sampling: Sampling,
        stops: list[str],
        signals: TokenSignals | None,
        queue_timeout_s: float,
        usage: list[int] | None = None,
    ) -> AsyncGenerator[tuple[str, str | None], None]:
        """`(text, finish_reason)` pieces of the answer to `prompt` (tokens), generated in the batch.

        Raises `EdgeBackendError` (prompt too long, decode failure, the worker thread ended) or
        `EdgeBusy` (no turn and first piece within `queue_timeout_s`) before the first piece. Closing
        the generator drops the sequence after the current step, or at once while the batch is
        paused or idle; it returns once the sequence left the context. `usage` (when given) receives
        the prompt and completion token counts at the end.
        """
        if self._closed:
            raise EdgeBackendError("edge model closed")
        if len(prompt) >= self.n_ctx:
            raise EdgeBackendError(f"Requested tokens ({len(prompt)}) exceed context window of {self.n_ctx}")

        def gone() -> None:
            answer.cancelled = True

        queue = Handoff(gone)  # DONE once the sequence left the context
        answer = _Answer(prompt, max_tokens, sampling, stops, signals, queue.put)
        with self.scheduler.lock:  # the worker fails every answer it knows of when it ends
            if self._failure is not None:
                raise EdgeBackendError(str(self._failure))
            self._answers[answer.seq] = answer
            self._start()
            waiting = not self.scheduler.submit(answer.seq)
        item: Any = None
        try:
            # Its turn, then its first piece, within `queue_timeout_s`: a free sequence in a batch
            # that a one-at-a-time request has paused waits for that request to end, as a queued
            # one does. Past it, the request is refused (`EdgeBusy`: the engine falls back), never
            # left waiting on the model for as long as the other answer takes.
            try:
                async with asyncio.timeout(queue_timeout_s):
                    item = await queue.get()  # _ADMITTED (it waited), a piece, or the worker's failure
                    while item is _ADMITTED or item is None:
                        item = await queue.get()
            except TimeoutError:
                if waiting and self.scheduler.withdraw(answer.seq):
                    item = DONE  # never ran: nothing to wait for
                raise EdgeBusy(f"edge model busy: no turn within {queue_timeout_s:g}s") from None
            while item is not DONE:
                if isinstance(item, Exception):
                    raise EdgeBackendError(f"edge model failed: {item}") from item
                if item is not None and item is not _ADMITTED:
                    yield item
                item = await queue.get()
        finally:
            if item is not DONE:  # ended early: the caller went away, or its deadline passed
                with self.scheduler.lock:
                    answer.cancelled = True
                    if self.scheduler.withdraw(answer.seq):  # still waiting: it never ran
                        item = DONE
                    else:  # the worker drops it when it wakes, even while the batch is paused
                        self.scheduler.changed.notify_all()
            while item is not DONE:  # at most the current step
                item = await queue.get()
            self._answers.pop(answer.seq, None)
            if usage is not None:
                usage[:] = [answer.prompt_tokens, answer.completion_tokens]

    # The worker thread.

    def _run(self) -> None:
        try:
            while self.scheduler.next_step(lambda: self._closed, self._drop_cancelled):
                try:
                    self._step()
                except Exception as exc:  # a bug or a llama.cpp failure: end every sequence, keep serving
                    logger.exception("edge batch step failed")
                    for seq in list(self.scheduler.running):
                        if (answer := self._answers.get(seq)) is not None:
                            self._end(answer, None, exc)
                finally:
                    self.scheduler.step_done()
        except BaseException as exc:  # ending the sequences failed too: nothing would serve them
            logger.exception("edge batch worker stopped")
            self._fail(exc)

    def _fail(self, cause: BaseException) -> None:
        """The worker thread ends on an error: fail every running and waiting request with an
        `EdgeBackendError` (the engine then answers elsewhere), and every later one."""
        import llama_cpp

        failure = EdgeBackendError(f"edge batch decoder stopped: {cause}")
        with self.scheduler.lock:
            self._failure = failure
            answers = list(self._answers.values())
            self._answers.clear()
            self.scheduler.clear()
        with contextlib.suppress(Exception):  # best effort: the context is not used again
            llama_cpp.llama_memory_clear(self._ctx.memory, True)
        for answer in answers:
            if answer.sampler is not None:
                with contextlib.suppress(Exception):
                    llama_cpp.llama_sampler_free(answer.sampler)
                answer.sampler = None
            answer.emit(failure)
            answer.emit(DONE)

    def _drop_cancelled(self) -> None:
        """Between steps, under the scheduler's lock: end the sequences whose callers went away."""
        for seq in list(self.scheduler.running):
            if (answer := self._answers.get(seq)) is not None and answer.cancelled:
                self._end(answer, None)

    def _step(self) -> None:
        import llama_cpp

        plan = plan_step(list(self.scheduler.running), self.n_batch)
        if not plan:
            return
        batch, sampled = self._batch.batch, []
        decoding_only = all(not seq.prefill_left for seq, _ in plan)
        n = 0
        for seq, count in plan:
            answer = self._answers[seq]
            if seq.prefill_left:
                start = seq.prompt_tokens - seq.prefill_left
                tokens = answer.prompt[start : start + count]
                seq.prefill_left -= count
            else:  # the token drawn last goes after the prompt and the tokens before it
                start = seq.prompt_tokens + answer.completion_tokens - 1
                tokens = [answer.next_token]
            for offset, token in enumerate(tokens):
                batch.token[n], batch.pos[n] = token, start + offset
                batch.n_seq_id[n], batch.seq_id[n][0] = 1, seq.seq_id
                batch.logits[n] = offset == len(tokens) - 1 and not seq.prefill_left
                n += 1
            if batch.logits[n - 1]:
                sampled.append((answer, n - 1))
        batch.n_tokens = n
        started = time.perf_counter()
        code = llama_cpp.llama_decode(self._ctx.ctx, batch)
        seconds = time.perf_counter() - started
        if code != 0:
            error = EdgeBackendError(f"llama_decode returned {code}")
            for seq, _ in plan:
                self._end(self._answers[seq], None, error)
            return
        if decoding_only:
            self.scheduler.times.record(len(plan), seconds)
        for answer, index in sampled:
            self._draw(answer, index)

    def _draw(self, answer: _Answer, index: int) -> None:
        import llama_cpp
        import numpy as np

        if answer.sampler is None:
            answer.sampler = answer.sampling.sampler()
        if answer.signals is not None:  # read before sampling: the model's own distribution
            row = llama_cpp.llama_get_logits_ith(self._ctx.ctx, index)
            scores = np.ctypeslib.as_array(ctypes.cast(row, ctypes.POINTER(ctypes.c_float)), (self._n_vocab,))
        token = int(llama_cpp.llama_sampler_sample(answer.sampler, self._ctx.ctx, index))
        if llama_cpp.llama_vocab_is_eog(self._vocab, token):
            self._end(answer, "stop")
            return
        if answer.signals is not None:
            answer.signals.record(self._llm, scores, token)
        answer.completion_tokens += 1
        answer.next_token = token
        text = answer.stop.push(bytes(self._llm.detokenize([token])))
        if text:
            answer.emit((text, None))
        if answer.stop.stopped:
            self._end(answer, "stop")
        elif answer.completion_tokens >= answer.seq.max_tokens or answer.length >= self.n_ctx:
            self._end(answer, "length")

    def _end(self, answer: _Answer, reason: str | None, error: Exception | None = None) -> None:
        """Drop `answer`'s sequence from the context and the batch, and tell its caller."""
        import llama_cpp

        llama_cpp.llama_memory_seq_rm(self._ctx.memory, answer.seq.seq_id, -1, -1)
        if answer.sampler is not None:
            llama_cpp.llama_sampler_free(answer.sampler)
            answer.sampler = None
        if error is not None:
            answer.emit(error)
        elif reason is not None:
            if rest := answer.stop.flush():
                answer.emit((rest, None))
            answer.emit(("", reason))
        self._answers.pop(answer.seq, None)
        self.scheduler.finish(answer.seq)
        answer.emit(DONE)

    def close(self) -> None:
        """Free the context once the running and waiting sequences are done (blocking); no new ones."""
        self._closed = True
        with self.scheduler.lock:
            self.scheduler.changed.notify_all()
        if self._thread is not None:
            self._thread.join()
        closed = EdgeBackendError("edge model closed")
        for answer in list(self._answers.values()):
            answer.emit(closed)
            answer.emit(DONE)
        self._answers.clear()
        self._batch.close()  # type: ignore[no-untyped-call]
        self._ctx.close()  # type: ignore[no-untyped-call]
