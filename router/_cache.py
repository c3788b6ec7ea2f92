"""The response cache: a repeated request answered without an estimate or a backend.

`ResponseCache` is the engine's seam for it. Before a request is planned, the engine asks it for an
answer given earlier to the same tenant; after a whole answer, it hands the answer back to be kept.
Two ways to match, both per tenant (the tenant is part of every key; nothing is shared across tenants):

- exact: a digest of the normalised request (`request_key`): messages, model and every parameter
  that changes the answer (temperature, top_p, max tokens, stop, seed, response_format, tools, ...);
  not `stream`, `stream_options`, `user` or `store`, which change only how the answer is delivered;
- semantic: the estimator's embedding of the conversation (`Embedder`), a cosine at or above the
  tier's `semantic_threshold` against answers kept for the same tenant, parameters and message roles.
  A lower threshold hits more often and answers more questions wrongly ("what is 2+3" is close to
  "what is 2+4"); only an estimator that read the whole conversation gives an embedding.

What is kept: only requests whose answer repeats (temperature 0 or a seed, unless the tier opts in
with `nondeterministic`) and that ask no logprobs; only whole answers: finish_reason "stop", text
only (no tool calls), never an error, a cut stream or a fallback answer. A "length" answer is not
kept either: the router itself ends a stream cut by its deadline, or clamped by the edge model's
context room, with "length", so it cannot tell a truncated answer that would repeat from a cut one.

Stores (`CacheStore`): `MemoryCacheStore`, an LRU bounded in entries with a TTL, everywhere; a shared
store (DynamoDB in `cloud/aws/`) sits behind it in Lambda (`TieredCacheStore`). The semantic index
is in-process only.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from hyrouter.router._wire import (
    AssistantMessage,
    ChatCompletionChunk,
    ChatCompletionResponse,
    ChatMessage,
    Choice,
    ChunkChoice,
    Delta,
    RouteInfo,
    Usage,
    WireModel,
)

if TYPE_CHECKING:
    from hyrouter.router._config import TierCacheConfig
    from hyrouter.router._plan import Tenant
    from hyrouter.router._wire import ChatCompletionRequest

#: Request fields that change how an answer is delivered, not what it says; `messages` and the token
#: limit and stops are added in a normal form. Every other field, unknown ones included, is in the key.
_DELIVERY_ONLY = frozenset(
    {
        "messages",
        "stream",
        "stream_options",
        "user",
        "store",
        "n",
        "max_tokens",
        "max_completion_tokens",
        "stop",
    }
)
#: A sampling parameter left out means the upstream's default.
_DEFAULTS = {"temperature": 1.0, "top_p": 1.0, "presence_penalty": 0.0, "frequency_penalty": 0.0}
KEY_VERSION = 1


@dataclass(frozen=True)
class CachedAnswer:
    """A whole answer as the cache keeps it: the text, who gave it and what it counted."""

    content: str
    model: str
    #: where it was answered ("edge", "cloud")
    target: str
    prompt_tokens: int
    completion_tokens: int

    @property
    def usage(self) -> Usage:
        """The token counts of the answer when it was generated."""
        total = self.prompt_tokens + self.completion_tokens
        return Usage(
            prompt_tokens=self.prompt_tokens, completion_tokens=self.completion_tokens, total_tokens=total
        )

    def to_json(self) -> str:
        """The answer as compact JSON (what a shared store keeps)."""
        return json.dumps(asdict(self), ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> CachedAnswer:
        """The answer `to_json` wrote."""
        data = json.loads(text)
        return cls(
            content=str(data["content"]),
            model=str(data["model"]),
            target=str(data["target"]),
            prompt_tokens=int(data["prompt_tokens"]),
            completion_tokens=int(data["completion_tokens"]),
        )


class CacheStore(Protocol):
    """Where answers are kept by key, each until its TTL has passed."""

    def get(self, key: str) -> CachedAnswer | None:
        """The answer kept under `key`, or None (never kept, expired or evicted)."""
        ...

    def put(self, key: str, answer: CachedAnswer, ttl_s: float) -> None:
        """Keep `answer` under `key` for `ttl_s` seconds."""
        ...


class MemoryCacheStore:
    """Answers in this process: at most `max_entries`, the least recently used dropped first; thread-safe."""

    def __init__(self, max_entries: int = 4096, *, clock: Callable[[], float] = time.monotonic) -> None:
        """A store of `max_entries` answers; `clock` (seconds) times the TTLs."""
        self.max_entries = max_entries
        self._clock = clock
        self._items: OrderedDict[str, tuple[float, CachedAnswer]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        """Answers kept now (expired ones included until they are read or evicted)."""
        return len(self._items)

    def get(self, key: str) -> CachedAnswer | None:
        """The answer under `key` while its TTL lasts; a read makes it the most recently used."""
        with self._lock:
            item = self._items.get(key)
            if item is None:
                return None
            expires, answer = item
            if self._clock() >= expires:
                del self._items[key]
                return None
            self._items.move_to_end(key)
            return answer

    def put(self, key: str, answer: CachedAnswer, ttl_s: float) -> None:
        """Keep `answer` under `key`; beyond `max_entries` the least recently used goes."""
        with self._lock:
            self._items[key] = (self._clock() + ttl_s, answer)
            self._items.move_to_end(key)
            while len(self._items) > self.max_entries:
                self._items.popitem(last=False)


class TieredCacheStore:
    """A local store in front of a shared one: reads try the local first, writes go to both."""

    def __init__(self, local: CacheStore, shared: CacheStore) -> None:
        """Serve from `local`, else `shared` (copying what it finds into `local`)."""
        self.local = local
        self.shared = shared

    def get(self, key: str) -> CachedAnswer | None:
        """The answer from the local store, else from the shared one."""
        answer = self.local.get(key)
        if answer is None:
            answer = self.shared.get(key)
            if answer is not None:
                # The local copy may outlive the shared one by at most this TTL: short on purpose.
                self.local.put(key, answer, LOCAL_COPY_TTL_S)
        return answer

    def put(self, key: str, answer: CachedAnswer, ttl_s: float) -> None:
        """Keep `answer` in both stores."""
        self.local.put(key, answer, ttl_s)
        self.shared.put(key, answer, ttl_s)


#: Seconds a local copy of a shared store's answer is served without asking the shared store again.
LOCAL_COPY_TTL_S = 60.0


@runtime_checkable
class Embedder(Protocol):
    """An estimator that also gives the vector it scored a conversation from (the semantic cache's key)."""

    #: whether `embed` gives vectors at all (an artefact may name no embedding)
    can_embed: bool

    def embed(self, messages: Sequence[ChatMessage]) -> Sequence[float] | None:
        """The conversation's embedding; None when the estimator read only part of it."""
        ...


class _Bucket:
    """The unit vectors of one bucket as rows of one matrix, grown by doubling: a lookup is one matmul."""

    def __init__(self, dims: int) -> None:
        import numpy as np

        self.rows: Any = np.zeros((8, dims), dtype=np.float32)
        self.keys: list[str] = []
        self.row_of: dict[str, int] = {}

    def put(self, key: str, unit: Any) -> None:
        import numpy as np

        row = self.row_of.get(key)
        if row is None:
            row = len(self.keys)
            if row == len(self.rows):
                self.rows = np.concatenate([self.rows, np.zeros_like(self.rows)])
            self.keys.append(key)
            self.row_of[key] = row
        self.rows[row] = unit

    def pop(self, key: str) -> None:
        row = self.row_of.pop(key, None)
        if row is None:
            return
        last = len(self.keys) - 1
        if row != last:  # the last row takes the freed one's place
            moved = self.keys[last]
            self.rows[row] = self.rows[last]
            self.keys[row] = moved
            self.row_of[moved] = row
        self.keys.pop()


class SemanticIndex:
    """Unit vectors of kept answers by bucket (tenant and parameters), at most `max_entries`; thread-safe."""

    def __init__(self, max_entries: int = 4096) -> None:
        """An empty index that forgets the least recently added or matched beyond `max_entries`."""
        self.max_entries = max_entries
        self._entries: OrderedDict[str, str] = OrderedDict()  # key -> bucket, in LRU order
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()

    def add(self, bucket: str, key: str, vector: Sequence[float]) -> None:
        """Index `vector` (normalised here) for the answer under `key`."""
        unit = _unit(vector)
        if unit is None:
            return
        with self._lock:
            if key in self._entries and self._entries[key] != bucket:
                self._drop(self._entries[key], key)
            self._entries[key] = bucket
            self._entries.move_to_end(key)
            self._buckets.setdefault(bucket, _Bucket(len(unit))).put(key, unit)
            while len(self._entries) > self.max_entries:
                old, old_bucket = self._entries.popitem(last=False)
                self._drop(old_bucket, old)

    def nearest(self, bucket: str, vector: Sequence[float]) -> tuple[str, float] | None:
        """The key in `bucket` whose vector has the highest cosine with `vector`, and that cosine."""
        unit = _unit(vector)
        with self._lock:
            entries = self._buckets.get(bucket)
            if unit is None or entries is None or not entries.keys:
                return None
            if len(unit) != entries.rows.shape[1]:
                return None  # another estimator's vectors
            cosines = _cosines(entries.rows[: len(entries.keys)], unit)
            best = int(cosines.argmax())
            key = entries.keys[best]
            self._entries.move_to_end(key)
        return key, float(cosines[best])

    def discard(self, bucket: str, key: str) -> None:
        """Forget `key` (its answer has expired)."""
        with self._lock:
            self._entries.pop(key, None)
            self._drop(bucket, key)

    def _drop(self, bucket: str, key: str) -> None:
        entries = self._buckets.get(bucket)
        if entries is not None:
            entries.pop(key)
            if not entries.keys:
                del self._buckets[bucket]


#: Rows per matrix-vector product: OpenBLAS runs a larger one on several threads, whose wake-ups cost
#: milliseconds on a busy machine (p99 16 ms for 2048 x 256 on 2 shared cores, 0.1 ms in blocks of 256).
_BLOCK_ROWS = 256


def _cosines(rows: Any, unit: Any) -> Any:
    import numpy as np

    if len(rows) <= _BLOCK_ROWS:
        return rows @ unit
    return np.concatenate([rows[i : i + _BLOCK_ROWS] @ unit for i in range(0, len(rows), _BLOCK_ROWS)])


def _unit(vector: Sequence[float]) -> Any:
    import numpy as np

    array = np.asarray(vector, dtype=np.float32).reshape(-1)
    norm = float(np.linalg.norm(array))
    return None if norm == 0.0 or not np.isfinite(norm) else array / norm


# -- keys ---------------------------------------------------------------------------------------


def repeatable(request: ChatCompletionRequest, settings: TierCacheConfig) -> bool:
    """Whether `request` may be answered from (and kept in) the cache under `settings`.

    Its answer must repeat: temperature 0 or a seed, unless the tier takes sampled answers too. A
    request for logprobs is never cached: they belong to one generation.
    """
    if request.logprobs or request.top_logprobs:
        return False
    return settings.nondeterministic or request.temperature == 0 or request.seed is not None


def answer_parameters(request: ChatCompletionRequest) -> dict[str, Any]:
    """The request's fields that change the answer, besides its messages, in a normal form."""
    params: dict[str, Any] = request.model_dump(mode="json", exclude=set(_DELIVERY_ONLY))
    for name, default in _DEFAULTS.items():
        value = params.get(name)
        params[name] = float(default if value is None else value)
    params["max_tokens"] = request.requested_max_tokens
    params["stop"] = sorted(set(request.stop_list))
    return params


def _digest(document: dict[str, Any]) -> str:
    text = json.dumps(document, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _scope(request: ChatCompletionRequest, tenant: Tenant, namespace: str) -> dict[str, Any]:
    """What every key of `request` holds: who asks (never shared across tenants), what answers, and
    the parameters that change the answer."""
    return {
        "v": KEY_VERSION,
        "tenant": tenant.name,
        "tier": tenant.tier,
        "namespace": namespace,
        "params": answer_parameters(request),
    }


def request_key(request: ChatCompletionRequest, tenant: Tenant, namespace: str = "") -> str:
    """The exact cache key of `request` for `tenant`: a sha256 of the normalised request.

    `namespace` names what answers (the engine passes its backends' models), so that a changed model
    does not serve its predecessor's answers.
    """
    messages = [message.model_dump(mode="json") for message in request.messages]
    return _digest({**_scope(request, tenant, namespace), "messages": messages})


def semantic_bucket(request: ChatCompletionRequest, tenant: Tenant, namespace: str = "") -> str:
    """Where similar requests are looked for: the same tenant, parameters and sequence of roles."""
    return _digest(
        {**_scope(request, tenant, namespace), "roles": [message.role for message in request.messages]}
    )


# -- answers ------------------------------------------------------------------------------------


def answer_of(response: ChatCompletionResponse, target: str) -> CachedAnswer | None:
    """What of `response` may be kept: a whole text answer, else None (see the module's doc)."""
    if len(response.choices) != 1:
        return None
    choice = response.choices[0]
    message = choice.message
    if choice.finish_reason != "stop" or choice.logprobs is not None or carries_more(choice):
        return None
    if not isinstance(message.content, str) or message.refusal is not None or carries_more(message):
        return None
    usage = response.usage
    return CachedAnswer(message.content, response.model, target, usage.prompt_tokens, usage.completion_tokens)


def carries_more(part: WireModel) -> bool:
    """Whether a response part has fields beyond its text (tool calls, logprobs, ...) that a kept answer
    would lose; empty ones (`"tool_calls": null`, `"annotations": []`, as servers send) do not count."""
    return any(value not in (None, [], {}, "") for value in (part.model_extra or {}).values())


def cached_response(answer: CachedAnswer, route: RouteInfo, *, completion_id: str) -> ChatCompletionResponse:
    """`answer` as a chat completion `completion_id` (the id its outcome record has), with `route`."""
    return ChatCompletionResponse(
        id=completion_id,
        model=route.model,
        choices=[Choice(message=AssistantMessage(content=answer.content), finish_reason="stop")],
        usage=answer.usage,
        route=route,
    )


async def cached_chunks(
    answer: CachedAnswer, route: RouteInfo, *, include_usage: bool, completion_id: str
) -> AsyncGenerator[ChatCompletionChunk, None]:
    """`answer` as stream `completion_id`: the role, the content, the finish, and the usage when asked."""
    model = route.model
    yield ChatCompletionChunk(
        id=completion_id,
        model=model,
        choices=[ChunkChoice(delta=Delta(role="assistant", content=""))],
        route=route,
    )
    if answer.content:
        yield ChatCompletionChunk(
            id=completion_id, model=model, choices=[ChunkChoice(delta=Delta(content=answer.content))]
        )
    yield ChatCompletionChunk(id=completion_id, model=model, choices=[ChunkChoice(finish_reason="stop")])
    if include_usage:
        yield ChatCompletionChunk(id=completion_id, model=model, choices=[], usage=answer.usage)


# -- the seam -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class CacheHit:
    """An answer found for a request, and how it was matched."""

    answer: CachedAnswer
    semantic: bool = False
    #: the cosine of a semantic match
    similarity: float | None = None


@dataclass(frozen=True)
class CacheLookup:
    """One lookup: the hit, or where the request's answer is to be kept."""

    key: str
    bucket: str
    ttl_s: float
    hit: CacheHit | None = None
    #: the request's embedding, when a semantic lookup was made
    vector: Sequence[float] | None = None


class ResponseCache:
    """The engine's seam for repeated requests: `lookup` before planning, `remember` after an answer.

    Per-tier settings (`TierCacheConfig`) come with each call, so a reloaded config applies at once.
    Stores and the index are thread-safe; `lookup` and `remember` may block (a shared store): the
    engine runs them off the event loop.
    """

    def __init__(
        self, store: CacheStore | None = None, *, embedder: Embedder | None = None, max_entries: int = 4096
    ) -> None:
        """Keep answers in `store` (default: an in-process LRU of `max_entries`); `embedder` enables
        the semantic cache."""
        self.store: CacheStore = store if store is not None else MemoryCacheStore(max_entries)
        self.embedder = embedder
        self.index = SemanticIndex(max_entries)

    def blocks(self, settings: TierCacheConfig) -> bool:
        """Whether a lookup under `settings` may block: a store outside this process, or an embedding to
        compute. Otherwise it is a dictionary read of microseconds, cheaper than a thread hop."""
        return not self.in_process or (settings.semantic_threshold is not None and self.semantic_available)

    @property
    def in_process(self) -> bool:
        """Whether the store is this process's memory (`remember` then never blocks)."""
        return isinstance(self.store, MemoryCacheStore)

    @property
    def semantic_available(self) -> bool:
        """Whether a semantic lookup can be made (the estimator gives an embedding)."""
        return self.embedder is not None and self.embedder.can_embed

    def lookup(
        self, request: ChatCompletionRequest, tenant: Tenant, settings: TierCacheConfig, namespace: str = ""
    ) -> CacheLookup | None:
        """A kept answer for `request`, or where its answer is to be kept; None when it is not cached."""
        if not settings.enabled or not repeatable(request, settings):
            return None
        key = request_key(request, tenant, namespace)
        bucket = semantic_bucket(request, tenant, namespace)
        answer = self.store.get(key)
        if answer is not None:
            return CacheLookup(key, bucket, settings.ttl_s, CacheHit(answer))
        threshold = settings.semantic_threshold
        if threshold is None or self.embedder is None or not self.embedder.can_embed:
            return CacheLookup(key, bucket, settings.ttl_s)
        vector = self.embedder.embed(request.messages)
        if vector is None:
            return CacheLookup(key, bucket, settings.ttl_s)
        nearest = self.index.nearest(bucket, vector)
        if nearest is not None and nearest[1] >= threshold:
            found = self.store.get(nearest[0])
            if found is not None:
                return CacheLookup(key, bucket, settings.ttl_s, CacheHit(found, True, nearest[1]), vector)
            self.index.discard(bucket, nearest[0])
        return CacheLookup(key, bucket, settings.ttl_s, vector=vector)

    def remember(self, lookup: CacheLookup, answer: CachedAnswer) -> None:
        """Keep `answer` under the lookup's key (and its embedding in the index)."""
        self.store.put(lookup.key, answer, lookup.ttl_s)
        if lookup.vector is not None:
            self.index.add(lookup.bucket, lookup.key, lookup.vector)
