"""The edge backend: a small GGUF chat model run on the CPU by llama.cpp (llama-cpp-python).

`llama_cpp` is imported only by `LlamaCppBackend.load()`, so that the router (and the cloud-only
deployment) can import this module without the compiled extension installed.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from hyrouter.edge._batching import BatchDecoder, Sampling
from hyrouter.edge._handoff import DONE, Handoff
from hyrouter.edge._token_signals import TokenSignals, openai_logprobs
from hyrouter.edge.model_files import resolve_model_path
from hyrouter.router._backend import BackendHealth, ChatBackend, Target, approximate_tokens
from hyrouter.router._confidence import TokenSignal
from hyrouter.router._config import EdgeConfig
from hyrouter.router._errors import EdgeBackendError, EdgeBusy, MissingExtra
from hyrouter.router._extras import require_extra
from hyrouter.router._wire import (
    AssistantMessage,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatMessage,
    Choice,
    ChunkChoice,
    Delta,
    Usage,
    new_completion_id,
)

if TYPE_CHECKING:
    from llama_cpp import Llama

T = TypeVar("T")
logger = logging.getLogger("hybrid_router")

# The empty system turn llama-cpp-python's "chatml" format writes when a conversation has none.
_EMPTY_SYSTEM_TURN = "<|im_start|>system\n<|im_end|>\n"


def chatml_turns(messages: Sequence[dict[str, str]]) -> list[str]:
    """The ChatML prompt of `messages` in turns, each opening with a special token (see `render_chatml`)."""
    head = [] if any(m["role"] == "system" for m in messages) else [_EMPTY_SYSTEM_TURN]
    turns = [f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages]
    return [*head, *turns, "<|im_start|>assistant\n"]


def require_llama_cpp() -> None:
    """Raise `EdgeBackendError` naming the `edge` extra unless llama-cpp-python is installed.

    It is not imported here: a build for other CPUs may die with SIGILL once loaded, so `serve` and
    `edge check` try it in a child process first (`hyrouter.edge.build_check`).
    """
    try:
        require_extra("llama_cpp", feature="the edge model", extra="edge")
    except MissingExtra as exc:
        raise EdgeBackendError(exc.message) from exc


def render_chatml(messages: Sequence[dict[str, str]]) -> str:
    """The ChatML prompt of `messages` as llama-cpp-python's "chatml" format writes it."""
    return "".join(chatml_turns(messages))


def _plain_messages(messages: Sequence[ChatMessage]) -> list[dict[str, str]]:
    # "chatml" silently drops roles it does not know; "developer" is OpenAI's new name for system.
    plain = [m.to_plain() for m in messages]
    return [{**m, "role": "system"} if m["role"] == "developer" else m for m in plain]


@functools.lru_cache(maxsize=256)
def grammar_error(schema: str) -> str | None:
    """Why llama.cpp cannot hold an answer to the JSON Schema `schema` (a JSON text), or None when it can.

    llama-cpp-python silently falls back to any JSON when a schema does not convert to a grammar:
    checked first, such a request is routed where the schema is honoured. About 0.1 ms, cached.
    """
    from llama_cpp.llama_grammar import LlamaGrammar  # lazy, as in `load()`

    try:
        LlamaGrammar.from_json_schema(schema, verbose=False)
    except Exception as exc:  # ValueError (unsupported keyword or $ref), RecursionError, ...
        return str(exc) or type(exc).__name__
    return None


class _PromptTokens(Exception):
    """Carries a prompt's token count out of a chat handler, before the handler would generate."""

    def __init__(self, count: int) -> None:
        super().__init__(count)
        self.count = count


class _TokenizeOnly:
    """Stands in for the `Llama` a chat handler is given: it may tokenize its prompt, nothing else.

    A llama-cpp-python chat format renders its prompt and tokenizes it (with BOS unless the format
    wrote its own special tokens) as the first thing it asks of the model; the count is taken there
    and the handler stopped, so no generation starts and the count is the one a completion sees.
    """

    def __init__(self, llm: Llama) -> None:
        self._llm = llm

    def tokenize(self, text: bytes, add_bos: bool = True, special: bool = False) -> list[int]:
        """Count the rendered prompt's tokens and stop the handler."""
        raise _PromptTokens(len(self._llm.tokenize(text, add_bos=add_bos, special=special)))


@dataclass(frozen=True)
class HandlerPrompt:
    """What a chat handler would hand `Llama.create_completion`: the prompt's tokens and stop strings
    (the request's, then the chat format's)."""

    tokens: list[int]
    stops: list[str]


class _Completion(BaseException):
    """Carries the completion a chat handler asked for out of it, before anything is generated (a
    `BaseException`, so that a handler's own `except Exception` cannot swallow it)."""

    def __init__(self, prompt: HandlerPrompt | None, why: str = "") -> None:
        super().__init__(why)
        self.prompt = prompt


class _CaptureCompletion:
    """Stands in for the `Llama` a chat handler is given: it tokenizes, and stops the handler at the
    completion it starts, taking the prompt tokens and stop strings it would be run on.

    Taken only when the completion is a plain one the batch decoder runs the same: a token list (a
    handler that passes text, such as "chatml-function-calling", is not taken), with no stopping
    criteria, grammar or logit bias of the handler's own. Anything else a handler asks of the model
    raises `AttributeError`: such a handler is not taken either.
    """

    verbose = False  # read by some handlers when they build a grammar

    def __init__(self, llm: Llama) -> None:
        self._llm = llm

    def tokenize(self, text: bytes, add_bos: bool = True, special: bool = False) -> list[int]:
        """The real model's tokens of `text`."""
        return self._llm.tokenize(text, add_bos=add_bos, special=special)

    def create_completion(
        self,
        prompt: str | list[int],
        *,
        stop: str | list[str] | None = None,
        stopping_criteria: Any = None,
        grammar: Any = None,
        logit_bias: Any = None,
        logits_processor: Any = None,
        **_: Any,
    ) -> Any:
        """Stop the handler, carrying the completion it asked for (or why it is not taken)."""
        if isinstance(prompt, str):
            raise _Completion(None, "the handler passes text, not tokens")
        if stopping_criteria is not None or grammar is not None or logit_bias or logits_processor:
            raise _Completion(
                None, "the handler adds stopping criteria, a grammar, a logit bias or a logits processor"
            )
        stops = [] if stop is None else [stop] if isinstance(stop, str) else list(stop)
        raise _Completion(HandlerPrompt(list(prompt), stops))


def _chat_handler(llm: Llama) -> Any:  # Any: it is handed a stand-in model and plain message dicts
    """The handler `Llama.create_chat_completion` looks up (a GGUF template is one of `_chat_handlers`)."""
    from llama_cpp import llama_chat_format  # lazy, as in `load()`

    return (
        llm.chat_handler
        or llm._chat_handlers.get(llm.chat_format or "")
        or llama_chat_format.get_chat_completion_handler(llm.chat_format or "")
    )


def format_prompt_tokens(llm: Llama, messages: list[dict[str, str]]) -> int:
    """Prompt tokens of `messages` rendered by `llm`'s chat format, as its chat completion renders them.

    Raises what the format raises (a role it refuses, a handler that needs more than the tokenizer).
    """
    try:
        _chat_handler(llm)(llama=_TokenizeOnly(llm), messages=messages)
    except _PromptTokens as counted:
        return counted.count
    raise EdgeBackendError(f"chat format {llm.chat_format!r} did not tokenize its prompt")


def handler_prompt(llm: Llama, messages: list[dict[str, str]], stop: Sequence[str] = ()) -> HandlerPrompt:
    """The prompt tokens and stop strings `llm`'s chat handler would run a completion of `messages` on
    (with the request's `stop` strings), so that another decoder can run that completion the same.

    Raises `LookupError` when the handler's completion cannot be taken (see `_CaptureCompletion`),
    and what the handler raises (a role it refuses, an attribute of the model the stand-in lacks).
    """
    try:
        _chat_handler(llm)(llama=_CaptureCompletion(llm), messages=messages, stop=list(stop))
    except _Completion as asked:
        if asked.prompt is None:
            raise LookupError(f"chat format {llm.chat_format!r}: {asked}") from None
        return asked.prompt
    raise LookupError(f"chat format {llm.chat_format!r} started no completion")


async def _join(future: asyncio.Future[T], cancel: threading.Event | None = None) -> T:
    """Await a worker thread, and when cancelled still wait for it to return before re-raising.

    A llama.cpp call cannot be interrupted mid-token: when cancelled, `cancel` is set (the
    generation stops at its next token) and the model lock stays held until the thread stops
    using the model, or the next request would run on it concurrently.
    """
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        if cancel is not None:
            cancel.set()
        while not future.done():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait([future])
        if not future.cancelled():
            future.exception()  # retrieved: the caller was cancelled and will not see it
        raise


def _stop_when(cancel: threading.Event, eos: int) -> Callable[[Any, Any], Any]:
    """A logits processor that forces end-of-sequence once `cancel` is set: a non-streamed
    generation (the request's deadline passed, the caller went away) then ends at its next token."""
    import numpy as np

    def processor(input_ids: Any, scores: Any) -> Any:
        if cancel.is_set():
            scores[:] = -np.inf
            scores[eos] = 0.0
        return scores

    return processor


def _processors(signals: TokenSignals | None, *more: Callable[[Any, Any], Any]) -> Any:
    """llama-cpp-python's list of logits processors: `signals` first, to read the model's own logits."""
    from llama_cpp import LogitsProcessorList  # lazy, as in `load()`

    return LogitsProcessorList([*([signals.processor] if signals else []), *more])


@contextlib.asynccontextmanager
async def _recording(signals: TokenSignals | None, llm: Llama) -> AsyncIterator[None]:
    """`signals.recording(llm)` for an async block, or nothing without `signals`."""
    if signals is None:
        yield
        return
    with signals.recording(llm):
        yield


def _signals(request: ChatCompletionRequest, sink: list[TokenSignal] | None = None) -> TokenSignals | None:
    """A recorder of the tokens' log-probabilities when the request asks for them or the engine
    verifies the answer (`sink`)."""
    wanted = request.logprobs or sink is not None
    return TokenSignals(top=request.top_logprobs or 0) if wanted else None


def _piece(chunk: Any) -> tuple[str, str | None]:
    """The text and finish reason of a llama chunk: a chat completion's (`delta`) or a completion's."""
    choice = chunk["choices"][0]
    text = choice.get("text") if "text" in choice else (choice.get("delta") or {}).get("content")
    return text or "", choice.get("finish_reason")


def _warm_up(llm: Llama, path: Path) -> float:
    """Decode two tokens, so that a build that cannot run here fails at start-up; returns the seconds.

    A llama.cpp build with instructions this CPU lacks dies at its first decode (SIGILL): run before
    the server reports healthy, that never happens at a user's first request. It also pages the
    weights in, so the first request does not pay for that.
    """
    started = time.perf_counter()
    try:
        llm.create_completion("Hello", max_tokens=2, temperature=0)
    except Exception as exc:
        if callable(close := getattr(llm, "close", None)):
            close()
        raise EdgeBackendError(f"edge model {path} loaded but cannot decode: {exc}") from exc
    llm.reset()  # type: ignore[no-untyped-call]
    return time.perf_counter() - started


class LlamaCppBackend(ChatBackend):
    """A GGUF chat model on the CPU: up to `config.parallel` requests decoded together, behind a
    bounded wait queue.

    With `parallel` above 1 a plain chat request (no JSON Schema, no penalties or `logit_bias`) is a
    sequence of the batch decoder (`hyrouter.edge._batching`): requests join and leave between decode
    steps. Its prompt tokens and stop strings are those the chat format's llama-cpp-python handler
    would run its completion on (`handler_prompt`), so any format whose handler tokenizes a plain
    prompt is batched ("chatml", "gemma", "llama-3", ...); one whose handler does more (passes text,
    adds a grammar or stopping criteria, needs more of the model than its tokenizer, as
    "chatml-function-calling" and "functionary") gets no batch context. Any other request, every
    request of such a format, and every request with `parallel: 1`, takes the one-at-a-time path: a
    `llama_cpp.Llama`, not thread-safe, so every use of it holds an `asyncio.Lock` and runs in a
    worker thread, the batch paused meanwhile (`BatchDecoder.exclusive`).
    A request that would have to wait is refused with `EdgeBusy` when `config.max_queue` requests
    already wait, or when it waited `config.queue_timeout_s` seconds, so the engine can send it to
    the cloud instead.
    """

    target: Target = "edge"

    def __init__(self, config: EdgeConfig) -> None:
        """Configure the backend; the model is loaded by `load()`."""
        self.config = config
        self.model_id = config.model_id
        self.context_window = config.n_ctx
        self._llm: Llama | None = None
        self._batch: BatchDecoder | None = None
        self._load_lock = threading.Lock()
        self._lock = asyncio.Lock()
        self._lock_loop: asyncio.AbstractEventLoop | None = None
        self._waiting = 0
        self._running = 0
        #: Seconds the start-up decode took (`load()`); None until the model is loaded.
        self.warm_up_s: float | None = None

    @property
    def loaded(self) -> bool:
        """Whether the model is loaded."""
        return self._llm is not None

    @property
    def queue_depth(self) -> int:
        """Requests waiting for the model plus those running on it (batched or not)."""
        batch = self._batch
        return self._waiting + self._running + (batch.waiting + batch.running if batch else 0)

    @property
    def _all_waiting(self) -> int:
        return self._waiting + (self._batch.waiting if self._batch else 0)

    def _refuses(self) -> bool:
        """Whether a request arriving now would be refused: it would wait while `config.max_queue`
        requests already wait.

        It would wait while a one-at-a-time request holds the model or waits for it (the batch is
        paused meanwhile), or while no sequence of the batch is free to it (all taken, the latency
        floor, or earlier requests waiting; a one-at-a-time request is held back too, rather than
        stall a full batch). A free sequence does not make it wait, whatever runs in the batch.
        """
        batch = self._batch
        would_wait = self._waiting + self._running > 0 or (batch is not None and batch.would_wait())
        return would_wait and self._all_waiting >= self.config.max_queue

    def _admit(self) -> None:
        """Refuse a request that would wait behind `config.max_queue` others (`EdgeBusy`)."""
        if self._refuses():
            raise EdgeBusy(f"edge model busy: {self._all_waiting} requests already waiting")

    def load(self) -> None:
        """Load the GGUF model (blocking; a no-op when loaded). Raises `EdgeBackendError`, which names
        the `edge` extra when llama-cpp-python is not installed."""
        with self._load_lock:
            if self._llm is not None:
                return
            require_llama_cpp()
            path = resolve_model_path(self.config)
            try:
                import llama_cpp  # lazy: a compiled extension that cloud-only installs lack

                llm = llama_cpp.Llama(
                    model_path=str(path),
                    n_ctx=self.config.n_ctx,
                    n_threads=self.config.n_threads or os.cpu_count(),
                    n_batch=self.config.n_batch,
                    # Not the GGUF's embedded template: it injects a "You are ... SmolLM" system
                    # prompt that derails this small model's answers.
                    chat_format=self.config.chat_format,
                    seed=self.config.seed if self.config.seed >= 0 else llama_cpp.LLAMA_DEFAULT_SEED,
                    verbose=False,
                )
            except Exception as exc:  # ImportError, ValueError (bad GGUF), RuntimeError, ...
                raise EdgeBackendError(f"cannot load edge model {path}: {exc}") from exc
            self.warm_up_s = _warm_up(llm, path)
            if self.config.parallel > 1 and self._format_batchable(llm):
                try:
                    self._batch = BatchDecoder(
                        llm,
                        parallel=self.config.parallel,
                        n_ctx=self.config.n_ctx,
                        n_batch=self.config.n_batch,
                        n_threads=self.config.n_threads or os.cpu_count() or 1,
                        min_tokens_per_s=self.config.min_tokens_per_s,
                    )
                except Exception as exc:  # ValueError: no memory for the context
                    llm.close()
                    raise EdgeBackendError(f"cannot make the edge model's batch context: {exc}") from exc
            self._llm = llm

    def _format_batchable(self, llm: Llama) -> bool:
        """Whether the chat format's handler lets its completions be taken for the batch decoder
        (`handler_prompt`); if not, every request takes the one-at-a-time path and no batch context
        is made."""
        try:
            handler_prompt(llm, [{"role": "user", "content": "Hi"}])
        except Exception as exc:  # LookupError, or what the handler raised on the stand-in
            logger.warning(
                "chat format %r cannot be batched (%s): edge.parallel %d unused, one request at a time",
                self.config.chat_format,
                exc,
                self.config.parallel,
            )
            return False
        return True

    def health(self) -> BackendHealth:
        """Available iff loaded; busy iff a request arriving now would be refused as the queue is full.
        A batch decoder that failed is named in the detail (requests then go one at a time)."""
        if self._llm is None:
            return BackendHealth(available=False, detail="not loaded")
        busy = self._refuses()
        detail = f"queue {self.queue_depth}"
        if self._batch is not None and (failure := self._batch.failure) is not None:
            detail += f"; batching off: {failure}"
        return BackendHealth(available=True, busy=busy, detail=detail)

    def cannot_honour(self, request: ChatCompletionRequest) -> str | None:
        """Tools: this model has no tool-call template. A JSON Schema llama.cpp can turn into a grammar
        is honoured (`response_format`); one it cannot is "structured_output". `logprobs` are read
        while generating (`hyrouter.edge._token_signals`)."""
        if request.calls_tools:
            return "tools"
        schema = request.json_schema
        if schema is not None and grammar_error(json.dumps(schema, sort_keys=True)) is not None:
            return "structured_output"
        return None

    def count_tokens(self, messages: Sequence[ChatMessage]) -> int:
        """Prompt tokens of `messages`: exact (the model's tokenizer on the chat format) once loaded."""
        llm = self._llm
        if llm is None:
            return approximate_tokens(messages)
        # Tokenizing reads only the vocabulary, so it is safe while a generation runs.
        plain = _plain_messages(messages)
        if self.config.chat_format == "chatml":
            # Turn by turn: llama.cpp splits a prompt at its special tokens in time that grows with the
            # square of their number (1,000 messages: 0.09 s, 4,000: 0.5 s, one call). Every turn opens
            # with a special token, so the turns' counts add up to the whole prompt's, in linear time.
            return sum(
                len(llm.tokenize(turn.encode("utf-8", "replace"), add_bos=False, special=True))
                for turn in chatml_turns(plain)
            )
        try:
            return format_prompt_tokens(llm, plain)
        except Exception:  # a count is a routing input: estimate rather than fail the request
            logger.warning("chat format %r cannot count tokens; estimating", self.config.chat_format)
            return approximate_tokens(messages)

    def _loop_lock(self) -> asyncio.Lock:
        # An asyncio.Lock binds to the first loop that waits on it, and the backend may outlive a
        # loop (asyncio.run per event, test runners): an idle backend takes a fresh lock per loop.
        loop = asyncio.get_running_loop()
        if self._lock_loop is not loop and self.queue_depth == 0:
            self._lock, self._lock_loop = asyncio.Lock(), loop
        return self._lock

    @contextlib.asynccontextmanager
    async def _slot(self) -> AsyncIterator[Llama]:
        """Hold the model: admission control, the bounded wait, then the lock."""
        if self._llm is None:
            raise EdgeBackendError("edge model not loaded")
        lock = self._loop_lock()
        self._admit()
        self._waiting += 1
        try:
            async with asyncio.timeout(self.config.queue_timeout_s):
                await lock.acquire()
        except TimeoutError:
            raise EdgeBusy(f"edge model busy: no turn within {self.config.queue_timeout_s:g}s") from None
        finally:
            self._waiting -= 1
        self._running += 1
        try:
            llm = self._llm  # aclose() may have run while this request waited
            if llm is None:
                raise EdgeBackendError("edge model closed")
            yield llm
        finally:
            self._running -= 1
            lock.release()

    def _batchable(self, request: ChatCompletionRequest) -> bool:
        """Whether the batch decoder may serve `request`: a batch context (its chat format's
        completions can be taken, `handler_prompt`) and plain sampling."""
        return (
            self._batch is not None
            and self._batch.failure is None  # after an unknown failure its context is not trusted
            and request.json_schema is None  # a grammar: the one-at-a-time path
            and not request.presence_penalty
            and not request.frequency_penalty
            and not (request.model_extra or {}).get("logit_bias")
        )

    def _batch_prompt(self, request: ChatCompletionRequest) -> HandlerPrompt | None:
        """The prompt tokens and stop strings the chat handler would run `request` on, when the batch
        decoder serves it; None: the one-at-a-time path (which raises what the handler raised)."""
        llm = self._llm
        if llm is None or not self._batchable(request):
            return None
        try:
            return handler_prompt(llm, _plain_messages(request.messages), request.stop_list)
        except Exception:  # a role the format refuses, ...: the handler raises it again there
            return None

    def _batched(
        self,
        request: ChatCompletionRequest,
        prompt: HandlerPrompt,
        max_tokens: int,
        signals: TokenSignals | None,
        usage: list[int] | None = None,
    ) -> AsyncGenerator[tuple[str, str | None], None]:
        """`(text, finish_reason)` pieces of the answer to `prompt`, generated in the batch."""
        batch = self._batch
        if self._llm is None or batch is None:
            raise EdgeBackendError("edge model not loaded")
        self._admit()
        defaults = Sampling()
        seed = request.seed if request.seed is not None else self.config.seed
        sampling = Sampling(
            temperature=defaults.temperature if request.temperature is None else request.temperature,
            top_p=defaults.top_p if request.top_p is None else request.top_p,
            seed=seed if seed >= 0 or request.seed is not None else defaults.seed,
        )
        return batch.generate(
            prompt.tokens,
            max_tokens=max_tokens,
            sampling=sampling,
            stops=prompt.stops,
            signals=signals,
            queue_timeout_s=self.config.queue_timeout_s,
            usage=usage,
        )

    def _exclusive(self) -> contextlib.AbstractContextManager[None]:
        """For the one-at-a-time path's worker thread: the batch pauses around it."""
        return self._batch.exclusive() if self._batch else contextlib.nullcontext()

    def _params(self, request: ChatCompletionRequest, max_tokens: int) -> dict[str, Any]:
        params: dict[str, Any] = {"messages": _plain_messages(request.messages), "max_tokens": max_tokens}
        # Unset sampling fields keep llama-cpp-python's defaults.
        for name in ("temperature", "top_p", "seed", "presence_penalty", "frequency_penalty"):
            if (value := getattr(request, name)) is not None:
                params[name] = value
        if request.stop_list:
            params["stop"] = request.stop_list
        if (schema := request.json_schema) is not None:  # a grammar holds the answer to it
            params["response_format"] = {"type": "json_object", "schema": schema}
        return params

    async def complete(self, request: ChatCompletionRequest, *, max_tokens: int) -> ChatCompletionResponse:
        """Answer in one response; raises `EdgeBusy` when refused, `EdgeBackendError` on failure."""
        return await self._complete(request, max_tokens, None)

    async def complete_with_signals(
        self, request: ChatCompletionRequest, *, max_tokens: int, signals: list[TokenSignal]
    ) -> ChatCompletionResponse:
        """`complete`, the answer's tokens (`TokenLogprob`) appended to `signals`."""
        return await self._complete(request, max_tokens, signals)

    async def _complete(
        self, request: ChatCompletionRequest, max_tokens: int, sink: list[TokenSignal] | None
    ) -> ChatCompletionResponse:
        signals = _signals(request, sink)
        if (prompt_of := self._batch_prompt(request)) is not None:
            counts: list[int] = []
            text, finish_reason = [], None
            batched = self._batched(request, prompt_of, max_tokens, signals, counts)
            async with contextlib.aclosing(batched) as pieces:
                async for content, reason in pieces:
                    text.append(content)
                    finish_reason = reason or finish_reason
            prompt, completion = counts
            usage = Usage(
                prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion
            )
            return self._response(request, "".join(text), finish_reason, usage, signals, sink)
        params = self._params(request, max_tokens)
        async with self._slot() as llm:
            cancel = threading.Event()  # set when this call is cancelled (e.g. at the request's deadline)
            params["logits_processor"] = _processors(signals, _stop_when(cancel, llm.token_eos()))
            work = asyncio.to_thread(self._recorded, llm, signals, params)
            try:
                result: Any = await _join(asyncio.ensure_future(work), cancel)
            except Exception as exc:
                raise EdgeBackendError(f"edge model failed: {exc}") from exc
        choice = result["choices"][0]
        usage = Usage.model_validate(result.get("usage") or {})
        return self._response(
            request, choice["message"].get("content") or "", choice.get("finish_reason"), usage, signals, sink
        )

    def _response(
        self,
        request: ChatCompletionRequest,
        content: str,
        finish_reason: str | None,
        usage: Usage,
        signals: TokenSignals | None,
        sink: list[TokenSignal] | None,
    ) -> ChatCompletionResponse:
        logprobs = None
        if signals is not None:
            tokens = signals.covering(content)
            if sink is not None:
                sink.extend(tokens)
            if request.logprobs:
                logprobs = openai_logprobs(tokens, request.top_logprobs or 0)
        return ChatCompletionResponse(
            model=self.model_id,
            choices=[
                Choice(
                    message=AssistantMessage(content=content),
                    finish_reason=finish_reason or "stop",
                    logprobs=logprobs,
                )
            ],
            usage=usage,
        )

    def _recorded(self, llm: Llama, signals: TokenSignals | None, params: dict[str, Any]) -> Any:
        """Worker thread: a non-streamed chat completion, its tokens recorded into `signals`."""
        with self._exclusive():
            if signals is None:
                return llm.create_chat_completion(**params, stream=False)
            with signals.recording(llm):
                return llm.create_chat_completion(**params, stream=False)

    @staticmethod
    def _produce(
        generate: Callable[[], Any],
        cancel: threading.Event,
        emit: Callable[[Any], None],
        exclusive: Callable[[], contextlib.AbstractContextManager[None]],
    ) -> None:
        """Worker thread: run llama's token generator, handing chunks to the loop until cancelled."""
        with exclusive():
            LlamaCppBackend._produce_chunks(generate, cancel, emit)

    @staticmethod
    def _produce_chunks(
        generate: Callable[[], Any], cancel: threading.Event, emit: Callable[[Any], None]
    ) -> None:
        try:
            chunks: Any = generate()
            try:
                for chunk in chunks:
                    if cancel.is_set():  # checked between tokens: the client went away
                        break
                    emit(chunk)
            finally:
                chunks.close()
        except Exception as exc:
            emit(exc)
        emit(DONE)

    def stream(
        self, request: ChatCompletionRequest, *, max_tokens: int
    ) -> AsyncGenerator[ChatCompletionChunk, None]:
        """Answer as chunks: role first, then content, then `finish_reason`, then usage if asked.

        Refusals and failures before the first token raise before the first chunk. Closing the
        generator early stops the generation at the next token.
        """
        return self._stream(request, max_tokens, None)

    def stream_with_signals(
        self, request: ChatCompletionRequest, *, max_tokens: int, signals: list[TokenSignal]
    ) -> AsyncGenerator[ChatCompletionChunk, None]:
        """`stream`, the tokens (`TokenLogprob`) behind each content chunk appended to `signals`
        before the chunk is yielded."""
        return self._stream(request, max_tokens, signals)

    async def _stream(
        self, request: ChatCompletionRequest, max_tokens: int, sink: list[TokenSignal] | None
    ) -> AsyncGenerator[ChatCompletionChunk, None]:
        params = self._params(request, max_tokens)
        include_usage = bool(request.stream_options and request.stream_options.include_usage)
        completion_id = new_completion_id()

        def chunk(delta: Delta, finish_reason: str | None = None) -> ChatCompletionChunk:
            choice = ChunkChoice(delta=delta, finish_reason=finish_reason)
            return ChatCompletionChunk(id=completion_id, model=self.model_id, choices=[choice])

        signals = _signals(request, sink)
        if signals is not None:
            params["logits_processor"] = _processors(signals)
        top_logprobs = request.top_logprobs or 0
        text, finish_reason, started = [], None, False
        if (prompt_of := self._batch_prompt(request)) is not None:
            pieces = self._batched(request, prompt_of, max_tokens, signals)
        else:
            pieces = self._generate(lambda llm: llm.create_chat_completion(**params, stream=True), signals)
        try:
            async for content, reason in pieces:
                if not started:
                    started = True
                    yield chunk(Delta(role="assistant", content=""))
                if content:
                    text.append(content)
                    piece = chunk(Delta(content=content))
                    if signals is not None:
                        taken = signals.take(content)
                        if sink is not None:
                            sink.extend(taken)
                        if request.logprobs:
                            piece.choices[0].logprobs = openai_logprobs(taken, top_logprobs)
                    yield piece
                finish_reason = reason or finish_reason
        finally:
            await pieces.aclose()  # the model is free again before the last chunks go out
        if not started:
            yield chunk(Delta(role="assistant", content=""))
        yield chunk(Delta(), finish_reason or "stop")
        if include_usage:
            prompt = self.count_tokens(request.messages)
            # The output re-tokenized, as chunks do not map 1:1 to tokens (llama holds
            # back text that may start a stop string).
            completion = self._count_text("".join(text))
            usage = Usage(
                prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion
            )
            yield ChatCompletionChunk(id=completion_id, model=self.model_id, choices=[], usage=usage)

    def continue_stream(
        self, request: ChatCompletionRequest, partial: str, *, max_tokens: int
    ) -> AsyncIterator[ChatCompletionChunk]:
        """Continue `partial`, an answer to `request` cut off elsewhere, as content chunks then a finish.

        The prompt is the conversation with the assistant's turn left open after `partial`, so the
        model goes on from there rather than starting over (ChatML only: the prompt is rendered
        here; another chat format raises `EdgeBackendError`).
        """
        if self.config.chat_format != "chatml":
            raise EdgeBackendError(f"chat format {self.config.chat_format!r} cannot continue an answer")
        if request.json_schema is not None:  # a grammar holds a whole answer, not the rest of one
            raise EdgeBackendError("an answer held to a JSON Schema cannot be continued on the edge")
        prompt = render_chatml(_plain_messages(request.messages)) + partial
        params = self._params(request, max_tokens)
        del params["messages"]
        params["stop"] = ["<|im_end|>", *request.stop_list]
        return self._continuation(prompt, params)

    async def _continuation(
        self, prompt: str, params: dict[str, Any]
    ) -> AsyncGenerator[ChatCompletionChunk, None]:
        completion_id = new_completion_id()
        finish_reason = None
        pieces = self._generate(lambda llm: llm.create_completion(prompt, **params, stream=True))
        try:
            async for content, reason in pieces:
                if content:
                    choices = [ChunkChoice(delta=Delta(content=content))]
                    yield ChatCompletionChunk(id=completion_id, model=self.model_id, choices=choices)
                finish_reason = reason or finish_reason
        finally:
            await pieces.aclose()
        choices = [ChunkChoice(delta=Delta(), finish_reason=finish_reason or "stop")]
        yield ChatCompletionChunk(id=completion_id, model=self.model_id, choices=choices)

    async def _generate(
        self, generate: Callable[[Llama], Any], signals: TokenSignals | None = None
    ) -> AsyncGenerator[tuple[str, str | None], None]:
        """`(text, finish_reason)` of each chunk llama's `generate(llm)` yields, on the model's turn,
        the tokens drawn recorded into `signals` (when given).

        Waiting for the turn raises `EdgeBusy`; closing the generator stops llama at its next token.
        """
        async with self._slot() as llm, _recording(signals, llm):
            cancel = threading.Event()
            queue = Handoff(cancel.set)
            work = asyncio.to_thread(self._produce, lambda: generate(llm), cancel, queue.put, self._exclusive)
            worker = asyncio.ensure_future(work)
            try:
                while (item := await queue.get()) is not DONE:
                    if isinstance(item, Exception):
                        raise EdgeBackendError(f"edge model failed: {item}") from item
                    yield _piece(item)
            finally:
                cancel.set()
                await _join(worker)  # the lock is released only once llama is idle

    def _count_text(self, text: str) -> int:
        llm = self._llm
        if llm is None:  # closed since: estimate
            return int(len(text) / 3.5) + (1 if text else 0)
        return len(llm.tokenize(text.encode("utf-8"), add_bos=False))

    async def aclose(self) -> None:
        """Free the model once the running generation (and any queued request) is done."""
        llm, self._llm = self._llm, None  # new and queued requests now fail fast
        if llm is None:
            return
        if (batch := self._batch) is not None:
            await asyncio.to_thread(batch.close)  # once the batch's requests are done
            self._batch = None
        async with self._loop_lock():
            close = getattr(llm, "close", None)
            if callable(close):
                await asyncio.to_thread(close)
