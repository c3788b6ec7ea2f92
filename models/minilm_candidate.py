"""The MiniLM int8 candidate estimator, which `hybrid-router models compare` measures against the
static student (`models/candidates.py`).

all-MiniLM-L6-v2 (the teacher) exported to ONNX with optimum, pre-processed and quantized to int8
(dynamic, per channel) with onnxruntime and run on one thread (`export_minilm_int8`,
`MiniLMEncoder`); its token outputs mean-pooled and L2-normalised as sentence-transformers does,
plus the student's log-length feature (`mean_pooled_features`), into a logistic head evaluated in
numpy (`linear_head_scores`, `linear_head_parameters`, `MiniLMEstimator`), so the score path is
tokenize + session.run + pool + head.

Build-time only (the `models` extra: torch, optimum); importing this module needs only numpy, the
heavy libraries are imported inside the functions that use them.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from hyrouter.models.student_estimator import LENGTH_SCALE, MAX_TOKENS
from hyrouter.router._wire import ChatMessage

# --- pooling and the numpy head (numpy only) ---------------------------------------------------


def mean_pooled_features(hidden: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """The head's input for one sequence of token outputs [n, d] (or [1, n, d]): the L2-normalised
    mean token vector (sentence-transformers' mean pooling, every token attended), then
    log1p(n) / LENGTH_SCALE, the student's length feature (`pooled_features`)."""
    tokens = np.asarray(hidden, dtype=np.float32).reshape(-1, np.shape(hidden)[-1])
    row = np.zeros(tokens.shape[1] + 1, dtype=np.float32)
    if len(tokens) == 0:
        return row
    mean = tokens.mean(axis=0)
    row[:-1] = mean / max(float(np.linalg.norm(mean)), 1e-12)
    row[-1] = math.log1p(len(tokens)) / LENGTH_SCALE
    return row


def linear_head_scores(
    features: npt.NDArray[np.float32], weight: npt.NDArray[np.float32], bias: float
) -> npt.NDArray[np.float64]:
    """sigmoid(features @ weight + bias) for one row [d] or many [m, d]: a logistic head in numpy."""
    logits = np.asarray(features, dtype=np.float64) @ np.asarray(weight, dtype=np.float64) + float(bias)
    return np.asarray(1.0 / (1.0 + np.exp(-logits)), dtype=np.float64)


# --- the teacher as an int8 ONNX encoder ------------------------------------------------------


def export_minilm_int8(cache_dir: Path, progress: bool = True) -> dict[str, Any]:
    """Export MiniLM-L6 with optimum, pre-process and quantize it to int8 with onnxruntime, into
    `cache_dir` (reused while the stamp matches); the paths, sizes and seconds taken."""
    from onnxruntime import __version__ as ort_version
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from hyrouter.models.teacher import teacher_dir, teacher_version

    folder = cache_dir / "minilm-l6-onnx"
    fp32, prepared, int8 = folder / "model.onnx", folder / "model-prep.onnx", folder / "model-int8.onnx"
    stamp_path = folder / "stamp.json"
    stamp = {
        "teacher": teacher_version(),
        "onnxruntime": ort_version,
        "recipe": "quant_pre_process(skip_symbolic_shape) + quantize_dynamic(QInt8, per_channel)",
    }
    seconds: dict[str, float] = {}
    recorded: dict[str, Any] = json.loads(stamp_path.read_text()) if stamp_path.is_file() else {}
    cached = int8.is_file() and {k: recorded.get(k) for k in stamp} == stamp
    if cached:
        seconds = dict(recorded.get("seconds", {}))  # what the cached build took
    if not cached:
        from optimum.exporters.onnx import main_export

        folder.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        _say("exporting MiniLM-L6 to ONNX with optimum", progress)
        main_export(
            str(teacher_dir()),
            output=folder,
            task="feature-extraction",
            library_name="transformers",  # last_hidden_state; pooling is ours (as sentence-transformers)
            local_files_only=True,
            device="cpu",
        )
        seconds["export"] = round(time.perf_counter() - started, 1)
        started = time.perf_counter()
        # Symbolic shape inference fails on this graph; ONNX shape inference and optimisation still run.
        quant_pre_process(fp32, prepared, skip_symbolic_shape=True)
        quantize_dynamic(prepared, int8, weight_type=QuantType.QInt8, per_channel=True)
        seconds["quantize"] = round(time.perf_counter() - started, 1)
        stamp_path.write_text(json.dumps({**stamp, "seconds": seconds}, indent=2) + "\n")
    return {
        "fp32": fp32,
        "int8": int8,
        "tokenizer": teacher_dir() / "tokenizer.json",
        "cached": cached,
        "seconds": seconds,
        "size_bytes": {"model_int8": int8.stat().st_size, "model_fp32": fp32.stat().st_size},
    }


class MiniLMEncoder:
    """The teacher's ONNX graph on one thread: token ids → the head's features."""

    def __init__(self, model: Path, tokenizer: Path, threads: int = 1) -> None:
        from hyrouter.router._onnx_estimator import cpu_session, truncating_tokenizer

        self.tokenizer = truncating_tokenizer(tokenizer, MAX_TOKENS)
        self.session = cpu_session(model, threads)
        self.inputs = {i.name for i in self.session.get_inputs()}

    def token_ids(self, messages: Sequence[ChatMessage]) -> list[int]:
        """The (truncated) token ids of a conversation, as the static student reads them."""
        from hyrouter.router._onnx_estimator import conversation_ids

        return conversation_ids(self.tokenizer, messages, MAX_TOKENS)

    def features_ids(self, ids: Sequence[int]) -> npt.NDArray[np.float32]:
        """Mean-pooled, L2-normalised token outputs and the log length, for one token sequence."""
        input_ids = np.asarray([ids], dtype=np.int64)
        feed = {"input_ids": input_ids}
        if "attention_mask" in self.inputs:
            feed["attention_mask"] = np.ones_like(input_ids)
        if "token_type_ids" in self.inputs:
            feed["token_type_ids"] = np.zeros_like(input_ids)
        (hidden,) = self.session.run(["last_hidden_state"], feed)
        return mean_pooled_features(hidden)


@dataclass
class MiniLMEstimator:
    """Candidate A at run time: MiniLM int8 features, then the logistic head in numpy."""

    encoder: MiniLMEncoder
    weight: npt.NDArray[np.float32]
    bias: float

    def score(self, messages: Sequence[ChatMessage]) -> float:
        """The head's probability for a conversation (tokenize + session.run + pool + head)."""
        features = self.encoder.features_ids(self.encoder.token_ids(messages))
        return float(linear_head_scores(features, self.weight, self.bias))


def linear_head_parameters(head: Any) -> tuple[npt.NDArray[np.float32], float]:
    """The weight vector and bias of a trained `torch.nn.Linear(d, 1)` head (`HeadConfig(hidden=0)`)."""
    import torch

    if not isinstance(head, torch.nn.Linear) or head.out_features != 1:
        raise ValueError("only the logistic head (HeadConfig(hidden=0)) runs in numpy")
    weight = head.weight.detach().numpy().reshape(-1).astype(np.float32)
    return weight, float(head.bias.detach().numpy().reshape(-1)[0])


def _say(message: str, enabled: bool) -> None:
    if enabled:
        print(message, file=sys.stderr, flush=True)
