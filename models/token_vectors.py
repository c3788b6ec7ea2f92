"""The student encoder: static token embeddings distilled from the MiniLM teacher (build-time, torch).

Each vocabulary token's vector is the teacher's mean-pooled output for that token alone
(`[CLS] token [SEP]`), reduced by PCA and weighted by how rare the token is in the training
corpus (SIF, Arora et al. 2017: a / (a + p(token))), as model2vec distils sentence-transformers.
A sentence is then the mean of its tokens' vectors: one table lookup per token, no attention,
so its cost is a few microseconds per token instead of a transformer pass.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

SIF_A = 1e-3


@dataclass
class StaticEmbeddings:
    """A [vocab, dims] table (weights folded in) and how it was made."""

    table: npt.NDArray[np.float32]
    explained_variance: float  # share of the teacher's token-output variance the PCA keeps

    @property
    def dims(self) -> int:
        """Width of each token vector."""
        return int(self.table.shape[1])


def teacher_token_outputs(
    model: Any, vocab_size: int, cls_id: int, sep_id: int, batch_size: int = 1024, progress: bool = False
) -> npt.NDArray[np.float32]:
    """The teacher's mean-pooled output for each vocabulary token on its own, one row per token id."""
    import torch
    from tqdm import tqdm

    rows = []
    with torch.inference_mode():
        for start in tqdm(
            range(0, vocab_size, batch_size), desc="distil token vectors", disable=not progress
        ):
            ids = torch.arange(start, min(start + batch_size, vocab_size))
            batch = torch.stack([torch.full_like(ids, cls_id), ids, torch.full_like(ids, sep_id)], dim=1)
            hidden = model(input_ids=batch, attention_mask=torch.ones_like(batch)).last_hidden_state
            rows.append(hidden.mean(dim=1).numpy())
    return np.concatenate(rows).astype(np.float32)


def token_frequencies(encodings: Iterable[Sequence[int]], vocab_size: int) -> npt.NDArray[np.float64]:
    """Relative frequency of each token id over a corpus of token-id sequences."""
    counts = np.zeros(vocab_size, dtype=np.float64)
    for ids in encodings:
        np.add.at(counts, np.asarray(ids, dtype=np.int64), 1.0)
    total = counts.sum()
    return counts / total if total else counts


def distil(
    token_outputs: npt.NDArray[np.float32], frequencies: npt.NDArray[np.float64], dims: int
) -> StaticEmbeddings:
    """PCA the teacher's token outputs to `dims` and fold in SIF weights from `frequencies`."""
    centred = token_outputs - token_outputs.mean(axis=0, keepdims=True)
    _, singular, components = np.linalg.svd(centred.astype(np.float64), full_matrices=False)
    reduced = centred @ components[:dims].T
    kept = float((singular[:dims] ** 2).sum() / (singular**2).sum())
    weights = SIF_A / (SIF_A + frequencies)
    return StaticEmbeddings((reduced * weights[:, None]).astype(np.float32), kept)
