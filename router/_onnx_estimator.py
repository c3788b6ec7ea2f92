"""The learned estimator at run time: a manifest-checked ONNX artefact, run with onnxruntime and tokenizers.

An artefact registry is a folder holding `registry.json` (the manifest) and one sub-folder per
estimator version. Each manifest entry names its files with their sha256; `OnnxEstimator` refuses a
file whose digest does not match (a clear `EstimatorError`, never a silent fallback to another
estimator). The model takes the token ids of `conversation_text(messages)` as `input_ids`
(int64, shape [1, n]) and returns the score as `score` (float, shape [1]). An entry may name the
graph's pooled sentence vector (`"embedding": {"output": ...}`): the estimator then also `embed`s a
conversation, the key of the semantic response cache (`hyrouter.router._cache`).
An artefact that also
returns `features` (float, shape [1, d]: what its head reads, the pooled embedding) hands them to
outcome records (`score_with_features`). Artefacts built before `models build` exported it have none.

An entry fitted to one deployment's outcomes (`hybrid-router models fit`) adds a `head` file (JSON:
`weights`, `bias`, the graph output they read as `input`, and the names of the `extras` it reads after
it) beside the unchanged encoder files: its score is sigmoid(weights · [input, extras] + bias),
computed with numpy from the encoder's features and the extras (`HEAD_EXTRAS`: numbers the estimator
computes from the conversation itself, the same functions `models fit` applies to the outcome
records); the graph's own `score` is not used. The head is sha256-checked like every other file.

onnxruntime, tokenizers and numpy are imported when an estimator is loaded, not when `router` is;
they come with the `onnx` extra (`MissingExtra` names it when they are not installed).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hyrouter.router._errors import EstimatorError
from hyrouter.router._estimator import conversation_text, register_estimator
from hyrouter.router._extras import import_extra
from hyrouter.router._wire import ChatMessage

MANIFEST_NAME = "registry.json"
MANIFEST_FORMAT = 1
#: The optional output of an estimator's model that holds its input features.
FEATURES_OUTPUT = "features"
# Characters kept per token of `max_tokens` before tokenizing: text past the token limit is dropped
# anyway, and tokenizing it would make cost grow with prompt length (English runs ~4-5 characters
# per WordPiece token, so 12 keeps every token the model would have read).
CHARS_PER_TOKEN = 12


def log_prompt_chars(chars: int) -> float:
    """The head extra `log_prompt_chars`: log(1 + characters of the conversation's text).

    The prompt's length, which no normalised embedding carries. Computed from `conversation_text`
    at scoring time and from an outcome record's `prompt_chars` (the same text's length) by `models fit`.
    """
    return math.log1p(chars)


#: The extra head inputs by name: each a function of the characters of `conversation_text(messages)`.
HEAD_EXTRAS = {"log_prompt_chars": log_prompt_chars}


def file_sha256(path: Path) -> str:
    """The hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_manifest(root: Path) -> dict[str, Any]:
    """The manifest of the artefact registry in `root`, checked for shape (not yet for digests)."""
    path = root / MANIFEST_NAME
    try:
        manifest: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise EstimatorError(f"estimator registry manifest {path} is missing") from exc
    except (OSError, ValueError) as exc:
        raise EstimatorError(f"estimator registry manifest {path} is unreadable: {exc}") from exc
    if manifest.get("format") != MANIFEST_FORMAT or not isinstance(manifest.get("estimators"), list):
        raise EstimatorError(f"estimator registry manifest {path} is not format {MANIFEST_FORMAT}")
    return manifest


def verified_file(root: Path, entry: dict[str, Any], role: str) -> Path:
    """The path of file `role` of a manifest entry, after checking that its sha256 matches."""
    ident = f"{entry.get('name')}@{entry.get('version')}"
    spec = entry.get("files", {}).get(role)
    if not isinstance(spec, dict) or "path" not in spec or "sha256" not in spec:
        raise EstimatorError(f"estimator {ident}: the manifest lists no {role!r} file")
    path = root / str(spec["path"])
    if not path.is_file():
        raise EstimatorError(f"estimator {ident}: {role} file {path} is missing")
    actual = file_sha256(path)
    if actual != spec["sha256"]:
        raise EstimatorError(
            f"estimator {ident}: {role} file {path} has sha256 {actual}, the manifest says "
            f"{spec['sha256']}; rebuild it (make models) or restore the file"
        )
    return path


def cpu_session(path: Path, threads: int = 1) -> Any:
    """An onnxruntime CPU session on `threads` intra-op threads, all graph optimisations on."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def truncating_tokenizer(path: Path, max_tokens: int) -> Any:
    """A `tokenizers` tokenizer from `path` that pads nothing and keeps at most `max_tokens` ids."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(path))
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=max_tokens)
    return tokenizer


def conversation_ids(tokenizer: Any, messages: Sequence[ChatMessage], max_tokens: int) -> list[int]:
    """The ids a model reads for a conversation: its text cut to a character budget, then tokenized."""
    ids: list[int] = tokenizer.encode(conversation_text(messages)[: max_tokens * CHARS_PER_TOKEN]).ids
    return ids


def _length_delimited(number: int, payload: bytes) -> bytes:
    """One protobuf field of wire type 2 (bytes or an embedded message)."""

    def varint(value: int) -> bytes:
        out = bytearray()
        while True:
            low, value = value & 0x7F, value >> 7
            out.append(low | (0x80 if value else 0))
            if not value:
                return bytes(out)

    return varint((number << 3) | 2) + varint(len(payload)) + payload


def with_graph_output(model: bytes, name: str) -> bytes:
    """`model` (a serialised ONNX ModelProto) with the float tensor `name` also a graph output.

    Protobuf merges a repeated embedded message field: a second `graph` (field 7) holding one `output`
    (field 12, a ValueInfoProto: name, and type tensor of elem_type FLOAT) appends to the graph's
    outputs, so the verified artefact needs no rebuild and no `onnx` package at run time.
    """
    float_tensor = _length_delimited(1, b"\x08\x01")  # TypeProto.tensor_type { elem_type: FLOAT }
    value_info = _length_delimited(1, name.encode("utf-8")) + _length_delimited(2, float_tensor)
    return model + _length_delimited(7, _length_delimited(12, value_info))


class OnnxEstimator:
    """A learned estimator: tokenizer + ONNX model from a verified registry entry, one thread."""

    def __init__(self, root: Path, entry: dict[str, Any], *, threads: int = 1) -> None:
        self.name = str(entry["name"])
        self.version = str(entry["version"])
        self.max_tokens = int(entry.get("max_tokens", 256))
        self.entry = entry
        model_path = verified_file(root, entry, "model")
        tokenizer_path = verified_file(root, entry, "tokenizer")
        feature = f"estimator {self.name}@{self.version}"
        np, ort, tokenizers = (
            import_extra(module, feature=feature, extra="onnx")
            for module in ("numpy", "onnxruntime", "tokenizers")
        )
        self._np = np
        tokenizer = tokenizers.Tokenizer.from_file(str(tokenizer_path))
        tokenizer.no_padding()
        tokenizer.enable_truncation(max_length=self.max_tokens)
        self._tokenizer = tokenizer
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        embedding = entry.get("embedding")
        self.embedding_output = str(embedding["output"]) if isinstance(embedding, dict) else None
        #: whether `embed` gives vectors (the manifest names the graph's pooled vector)
        self.can_embed = self.embedding_output is not None
        model: str | bytes = str(model_path)
        if self.embedding_output is not None:
            model = with_graph_output(model_path.read_bytes(), self.embedding_output)
        self._session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        outputs = {o.name for o in self._session.get_outputs()}
        #: what outcome records take as features: the exported `features`, else the pooled vector
        self.features_output = FEATURES_OUTPUT if FEATURES_OUTPUT in outputs else self.embedding_output
        #: whether the artefact gives features (`score_with_features`)
        self.has_features = self.features_output is not None
        self._head: tuple[Any, float] | None = None
        #: the extras (`HEAD_EXTRAS`) the fitted head reads after the features, in order
        self.head_extras: tuple[str, ...] = ()
        if "head" in entry.get("files", {}):
            self._head, self.head_extras = self._load_head(verified_file(root, entry, "head"))

    def _load_head(self, path: Path) -> tuple[tuple[Any, float], tuple[str, ...]]:
        """The fitted head's weights, bias and extras; it must read the features this graph gives."""
        ident = f"estimator {self.name}@{self.version}"
        try:
            head = json.loads(path.read_text(encoding="utf-8"))
            weights = self._np.asarray(head["weights"], dtype=self._np.float64)
            bias = float(head["bias"])
            source = str(head["input"])
            extras = tuple(str(name) for name in head.get("extras", ()))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise EstimatorError(f"{ident}: head file {path} is unreadable: {exc}") from exc
        if source != self.features_output:
            raise EstimatorError(
                f"{ident}: its head reads {source!r}; the model gives {self.features_output!r}"
            )
        unknown = [name for name in extras if name not in HEAD_EXTRAS]
        if unknown:
            raise EstimatorError(f"{ident}: its head reads extras {unknown} this version cannot compute")
        if weights.ndim != 1 or len(weights) <= len(extras):
            raise EstimatorError(
                f"{ident}: head file {path} has {weights.size} weights for {len(extras)} extras"
            )
        return (weights, bias), extras

    def _head_score(self, features: Any, prompt_chars: int | None) -> float:
        assert self._head is not None
        weights, bias = self._head
        x = features.reshape(-1).astype(self._np.float64)
        if self.head_extras:
            if prompt_chars is None:
                raise EstimatorError(
                    f"estimator {self.name}@{self.version}: its head reads {list(self.head_extras)}, "
                    "computed from the conversation: score it with `score`, not token ids alone"
                )
            extras = [HEAD_EXTRAS[name](prompt_chars) for name in self.head_extras]
            x = self._np.concatenate([x, self._np.asarray(extras, dtype=self._np.float64)])
        if len(x) != len(weights):
            raise EstimatorError(
                f"estimator {self.name}@{self.version}: its head has {len(weights)} weights for "
                f"{len(x)} inputs"
            )
        logit = float(x @ weights) + bias
        return 1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, logit))))

    def token_ids(self, messages: Sequence[ChatMessage]) -> list[int]:
        """The (truncated) token ids the model reads for a conversation."""
        return conversation_ids(self._tokenizer, messages, self.max_tokens)

    def score_ids(self, ids: Sequence[int], prompt_chars: int | None = None) -> float:
        """The model's score for already-tokenized input; a head that reads extras also needs the
        characters of the conversation's text (`prompt_chars`)."""
        feed = {"input_ids": self._np.asarray([ids], dtype=self._np.int64)}
        if self._head is not None:
            (features,) = self._session.run([self.features_output], feed)
            return self._head_score(features, prompt_chars)
        (out,) = self._session.run(["score"], feed)
        return float(out.reshape(-1)[0])

    def score(self, messages: Sequence[ChatMessage]) -> float:
        """The probability that escalating this conversation to the cloud pays."""
        return self.score_ids(self.token_ids(messages), len(conversation_text(messages)))

    def embed(self, messages: Sequence[ChatMessage]) -> list[float] | None:
        """The pooled unit vector the score is computed from; None when the artefact names none, or
        when the conversation is longer than the model reads (two that differ only past the cut would
        look the same)."""
        if self.embedding_output is None:
            return None
        if len(conversation_text(messages)) > self.max_tokens * CHARS_PER_TOKEN:
            return None
        ids = self.token_ids(messages)
        if len(ids) >= self.max_tokens:
            return None
        feed = {"input_ids": self._np.asarray([ids], dtype=self._np.int64)}
        (out,) = self._session.run([self.embedding_output], feed)
        vector: list[float] = out.reshape(-1).tolist()
        return vector

    def score_with_features(self, messages: Sequence[ChatMessage]) -> tuple[float, Sequence[float] | None]:
        """The score and, where the artefact exports them, its features (one run of the model)."""
        if not self.has_features:
            return self.score(messages), None
        feed = {"input_ids": self._np.asarray([self.token_ids(messages)], dtype=self._np.int64)}
        if self._head is not None:
            (features,) = self._session.run([self.features_output], feed)
            return self._head_score(features, len(conversation_text(messages))), features.reshape(-1)
        score, features = self._session.run(["score", self.features_output], feed)
        vector: Sequence[float] = features.reshape(-1)
        return float(score.reshape(-1)[0]), vector


def register_artefacts(root: Path) -> list[str]:
    """Register every estimator in the registry at `root`; each is verified when it is loaded.

    Returns the `name@version` of each. A missing or malformed manifest raises `EstimatorError`.
    """
    registered = []
    for entry in read_manifest(root)["estimators"]:
        name, version = str(entry["name"]), str(entry["version"])

        def factory(entry: dict[str, Any] = entry) -> OnnxEstimator:
            return OnnxEstimator(root, entry)

        register_estimator(name, version, factory)
        registered.append(f"{name}@{version}")
    return registered
