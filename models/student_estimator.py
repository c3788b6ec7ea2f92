"""The student estimator as a torch module, its head's training, and its ONNX export + int8 quantization.

The module reads `input_ids` ([1, n], int64, the run-time tokenizer's output) and returns `score`
([1], float) and `features` (what the head reads, for outcome records): the mean of the tokens'
static vectors (L2-normalised) and the log token count go through a small head and a sigmoid.
`pooled_features` computes the same features in numpy, so the head trains on precomputed features
and the exported graph is checked against them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from hyrouter.models.training_data import DEFAULT_TARGET

MAX_TOKENS = 256
LENGTH_SCALE = math.log(MAX_TOKENS + 1.0)  # log1p(n) / LENGTH_SCALE is in [0, 1] after truncation
#: The exported graph's name for the normalised mean token vector (`pooled` in `student_module`'s
#: forward): the manifest names it so that the runtime can also return it (the semantic cache's key).
EMBEDDING_OUTPUT = "/Div_output_0"


def pooled_features(
    table: npt.NDArray[np.float32], encodings: Sequence[Sequence[int]], max_tokens: int = MAX_TOKENS
) -> npt.NDArray[np.float32]:
    """One row per token sequence: the normalised mean token vector, then the scaled log length."""
    rows = np.zeros((len(encodings), table.shape[1] + 1), dtype=np.float32)
    for i, ids in enumerate(encodings):
        ids = list(ids)[:max_tokens]
        if not ids:
            continue
        mean = table[np.asarray(ids, dtype=np.int64)].mean(axis=0)
        rows[i, :-1] = mean / max(float(np.linalg.norm(mean)), 1e-12)
        rows[i, -1] = math.log1p(len(ids)) / LENGTH_SCALE
    return rows


@dataclass
class HeadConfig:
    """How the head is trained: on which target, logistic regression (hidden=0) or one hidden layer."""

    target: str = DEFAULT_TARGET  # one of `hyrouter.models.training_data.TARGETS`
    hidden: int = 0
    weight_decay: float = 1e-3
    epochs: int = 60
    learning_rate: float = 0.01
    batch_size: int = 256
    seed: int = 0


def source_weights(sources: Sequence[str]) -> npt.NDArray[np.float64]:
    """Example weights that give every source the same total weight, whatever its size."""
    names, inverse, counts = np.unique(np.asarray(sources), return_inverse=True, return_counts=True)
    del names
    return 1.0 / counts[inverse].astype(np.float64)


def make_head(inputs: int, config: HeadConfig) -> Any:
    """A fresh head: `inputs` features → one logit."""
    import torch

    if config.hidden == 0:
        return torch.nn.Linear(inputs, 1)
    return torch.nn.Sequential(
        torch.nn.Linear(inputs, config.hidden),
        torch.nn.ReLU(),
        torch.nn.Dropout(0.1),
        torch.nn.Linear(config.hidden, 1),
    )


def train_head(
    features: npt.NDArray[np.float32],
    targets: npt.NDArray[np.float64],
    weights: npt.NDArray[np.float64],
    config: HeadConfig,
    progress: bool = False,
) -> Any:
    """Fit a head to soft targets in [0, 1] with weighted binary cross-entropy (AdamW, minibatches)."""
    import torch
    from tqdm import tqdm

    torch.manual_seed(config.seed)
    head = make_head(features.shape[1], config)
    optimiser = torch.optim.AdamW(
        head.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
    )
    x = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))
    y = torch.from_numpy(targets.astype(np.float32))
    w = torch.from_numpy(weights.astype(np.float32))
    generator = torch.Generator().manual_seed(config.seed)
    for _ in tqdm(range(config.epochs), desc="train head", disable=not progress):
        head.train()
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), config.batch_size):
            batch = order[start : start + config.batch_size]
            logits = head(x[batch]).squeeze(-1)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, y[batch], reduction="none")
            loss = (loss * w[batch]).sum() / w[batch].sum()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    return head.eval()


def head_scores(head: Any, features: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
    """The head's probabilities for precomputed features."""
    import torch

    with torch.inference_mode():
        logits = head(torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))).squeeze(-1)
    scores: npt.NDArray[np.float64] = torch.sigmoid(logits).double().numpy()
    return scores


def student_module(table: npt.NDArray[np.float32], head: Any) -> Any:
    """The whole student as one torch module: `input_ids` [1, n] → `score` [1] and `features` [1, d+1]
    (what the head reads: outcome records keep them, so that a per-deployment head can be fitted)."""
    import torch

    class StaticStudent(torch.nn.Module):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.embedding = torch.nn.Embedding.from_pretrained(torch.from_numpy(table), freeze=True)
            self.head = head

        def forward(self, input_ids: Any) -> Any:
            vectors = self.embedding(input_ids)  # [1, n, d]
            mean = vectors.mean(dim=1)
            pooled = mean / mean.norm(dim=-1, keepdim=True).clamp(min=1e-12)
            count = torch.ones_like(input_ids, dtype=torch.float32).sum(dim=1, keepdim=True)
            length = torch.log1p(count) / LENGTH_SCALE
            features = torch.cat([pooled, length], dim=-1)
            return torch.sigmoid(self.head(features)).reshape(-1), features

    return StaticStudent().eval()


def export_onnx(module: Any, path: Path) -> None:
    """Export the student with a dynamic sequence length (opset 17, constants folded)."""
    import torch

    example = torch.ones((1, 8), dtype=torch.int64)
    torch.onnx.export(
        module,
        (example,),
        str(path),
        input_names=["input_ids"],
        output_names=["score", "features"],
        dynamic_axes={"input_ids": {1: "tokens"}},
        opset_version=17,
        dynamo=False,
    )


def quantize_int8(source: Path, target: Path) -> None:
    """onnxruntime dynamic int8 quantization of the embedding table (Gather) and the head's MatMul/Gemm."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        str(source),
        str(target),
        weight_type=QuantType.QInt8,
        per_channel=True,
        op_types_to_quantize=["Gather", "MatMul", "Gemm"],
    )
