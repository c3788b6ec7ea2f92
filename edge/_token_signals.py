"""What the edge model thought of each token it generated, read while it generates.

llama.cpp computes the logits of every step for sampling; `logits_all` would keep them for the whole
context (n_ctx x vocabulary x 4 bytes). `TokenSignals` instead reads each step's logits as they are
sampled (a logits processor that changes nothing) and, once the token is drawn (a wrapper around
`Llama.sample`), keeps the chosen token's log-probability, its top alternatives, and the entropy and
top-1/top-2 margin of the distribution it came from. That is OpenAI's `logprobs` on the edge, and the
edge model's own confidence in its answer.

The log-probabilities are the model's, before the request's temperature, penalties or grammar.
"""

from __future__ import annotations

import collections
import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from llama_cpp import Llama

#: Alternatives kept per token: enough for the margin and for OpenAI's `top_logprobs` (at most 20).
MAX_TOP = 20


@dataclass(frozen=True)
class TokenLogprob:
    """One generated token and what the model thought of it."""

    token: int
    #: the token's text as bytes (a token may hold part of a UTF-8 character)
    piece: bytes
    logprob: float
    #: entropy (nats) of the distribution the token was drawn from
    entropy: float
    #: log-probability of the most likely token minus that of the second
    margin: float
    #: the most likely tokens of that step: (token, piece, log-probability), most likely first
    top: tuple[tuple[int, bytes, float], ...]

    def openai(self, top_logprobs: int) -> dict[str, Any]:
        """The token as an entry of OpenAI's `logprobs.content`."""
        return {
            **_entry(self.piece, self.logprob),
            "top_logprobs": [_entry(piece, logprob) for _, piece, logprob in self.top[:top_logprobs]],
        }


def _entry(piece: bytes, logprob: float) -> dict[str, Any]:
    return {"token": piece.decode("utf-8", "replace"), "logprob": logprob, "bytes": list(piece)}


class TokenSignals:
    """The tokens one generation draws, with their log-probabilities (see the module's docstring).

    `recording(llm)` installs it on the model for one generation (the model's lock held); tokens
    arrive in `tokens` from the worker thread that generates, in the order they are drawn, and the end
    of sequence is left out. `take(n_bytes)` hands them out in step with the text a stream sends.
    """

    def __init__(self, top: int = 2) -> None:
        """Keep `top` alternatives per token (at least 2, for the margin; at most `MAX_TOP`)."""
        self._top = min(MAX_TOP, max(2, top))
        self._step: tuple[Any, Any, float] | None = None  # the current step's log-softmax, top ids, entropy
        self.tokens: collections.deque[TokenLogprob] = collections.deque()
        self._taken_bytes = 0
        self._wanted_bytes = 0

    def processor(self, input_ids: Any, scores: Any) -> Any:
        """A llama-cpp-python logits processor: read this step's logits, change nothing."""
        self._step = step_signals(scores, self._top)
        return scores

    def record(self, llm: Llama, scores: Any, token: int) -> None:
        """Record `token`, drawn from the logits `scores` (the batch decoder's sequences: no `recording`)."""
        self.processor(None, scores)
        self._drawn(llm, token)

    def _drawn(self, llm: Llama, token: int) -> None:
        if self._step is None or _end_of_generation(llm, token):
            return
        logp, top, entropy = self._step
        self.tokens.append(
            TokenLogprob(
                token=token,
                piece=_piece(llm, token),
                logprob=float(logp[token]),
                entropy=entropy,
                margin=float(logp[top[0]] - logp[top[1]]),
                top=tuple((int(t), _piece(llm, int(t)), float(logp[t])) for t in top),
            )
        )

    @contextlib.contextmanager
    def recording(self, llm: Llama) -> Iterator[None]:
        """Record the tokens `llm` draws until the block ends (hold the model's lock around it)."""
        sample = llm.sample

        def recorded(*args: Any, **kwargs: Any) -> int:
            token = int(sample(*args, **kwargs))
            self._drawn(llm, token)
            return token

        llm.sample = recorded  # type: ignore[method-assign]
        try:
            yield
        finally:
            del llm.sample  # the class's method again

    def covering(self, text: str) -> list[TokenLogprob]:
        """The recorded tokens that make up `text`, the whole answer (a stop string's tokens left out)."""
        size, kept, length = len(text.encode("utf-8")), [], 0
        for token in self.tokens:
            if length >= size:
                break
            kept.append(token)
            length += len(token.piece)
        return kept

    def take(self, text: str) -> list[TokenLogprob]:
        """The tokens behind `text`, the next piece of a streamed answer, in step with what was sent."""
        self._wanted_bytes += len(text.encode("utf-8"))
        taken = []
        while self._taken_bytes < self._wanted_bytes and self.tokens:
            token = self.tokens.popleft()
            self._taken_bytes += len(token.piece)
            taken.append(token)
        return taken


def step_signals(scores: Any, top: int) -> tuple[Any, Any, float]:
    """One step's log-softmax (float32), its `top` token ids (most likely first) and its entropy (nats).

    Per generated token, so kept lean (about 0.05 ms for SmolLM2's 49k vocabulary, against 1.2 ms for
    a float64 version with a full `argpartition`): one exp over the vocabulary serves the normaliser and
    the entropy, H = log Z - sum(p * shifted) / Z; the usual two alternatives are two `argmax` calls.
    """
    import numpy as np

    logits = np.asarray(scores, dtype=np.float32)
    shifted = logits - logits.max()
    weights = np.exp(shifted)
    total = float(weights.sum())
    log_total = math.log(total)
    logp = shifted - np.float32(log_total)
    entropy = log_total - float(np.dot(weights, shifted)) / total
    if top == 2:
        first = int(np.argmax(logp))
        kept, logp[first] = logp[first], -np.inf
        second = int(np.argmax(logp))
        logp[first] = kept
        ids = np.array([first, second])
    else:
        ids = np.argpartition(logp, -top)[-top:]
        ids = ids[np.argsort(-logp[ids])]
    return logp, ids, entropy


def _piece(llm: Llama, token: int) -> bytes:
    return bytes(llm.detokenize([token]))


def _end_of_generation(llm: Llama, token: int) -> bool:
    import llama_cpp

    return bool(llama_cpp.llama_vocab_is_eog(llm._model.vocab, token))


def openai_logprobs(tokens: list[TokenLogprob], top_logprobs: int) -> dict[str, Any]:
    """OpenAI's `logprobs` object of a choice (or a chunk's choice) holding `tokens`."""
    return {"content": [t.openai(top_logprobs) for t in tokens], "refusal": None}
