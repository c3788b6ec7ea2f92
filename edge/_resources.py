"""Resource limits for small devices: will the model fit before it is loaded?

llama.cpp maps the GGUF file and touches all of its weights while answering, so the file's size is
what the model costs in memory (SmolLM2-135M Q4_1: ~100 MB, ~210 MB RSS with a 2k context). The KV
cache grows with `n_ctx`, which the config bounds separately, and `n_threads` bounds the CPU.
"""

from __future__ import annotations

from pathlib import Path

from hyrouter.edge._errors import ModelTooLarge

MIB = 1024 * 1024


def check_model_fits(path: Path, *, max_model_memory_mb: float | None, free_memory_mb: float | None) -> float:
    """The model file's size in MiB; raises `ModelTooLarge` when it is over the limit or free memory."""
    size_mb = path.stat().st_size / MIB
    if max_model_memory_mb is not None and size_mb > max_model_memory_mb:
        raise ModelTooLarge(
            f"edge model {path.name} needs {size_mb:.0f} MB, more than max_model_memory_mb "
            f"({max_model_memory_mb:g} MB): use a smaller or more quantized GGUF, or raise the limit"
        )
    if free_memory_mb is not None and size_mb > free_memory_mb:
        raise ModelTooLarge(
            f"edge model {path.name} needs {size_mb:.0f} MB but only {free_memory_mb:.0f} MB of memory "
            "is free on this device: close other apps, or use a smaller GGUF"
        )
    return size_mb
