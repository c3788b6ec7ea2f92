"""Estimator latency: the learned estimator vs the heuristic per prompt length, on one thread; artefact
size and load time; what the truncation policy costs in routing quality. Side by side, in one run.

    python -m bench.estimator_latency [--iterations 500] [--lengths 32,128,512,1024,4096]
                                      [--quality-max-tokens 32,64,128,256,512] [--no-quality]

- latency: `score(messages)` of `heuristic@1.0.0`, of `static-minilm@1.1.0` as shipped (truncating to
  the manifest's `max_tokens`, 256) and of the same artefact with `max_tokens` raised to the longest
  length (at least 1024; so nothing is truncated: how cost grows with length), interleaved in a
  shuffled order each iteration so machine noise hits all alike; the ONNX ones also split into
  tokenize (`token_ids`) and `session.run` (`score_ids`). Prompts are real text (MT-Bench turns, then
  GSM8K questions) cut to exactly the requested number of tokens as the estimator's tokenizer counts
  them before truncation, [CLS] and [SEP] included; several different prompts per length, in turn.
  (Truncation bounds what `session.run` reads, not tokenizing: the whole text is tokenized first.)
- artefact: file sizes; load time (the first load in a fresh process through `router.load_estimator`,
  imports included; then the median of fresh `OnnxEstimator` constructions), the sha256 check's share
  of it, and the RSS it adds;
- truncation: APGR / CPT50 of `static-minilm` on mmlu, gsm8k and mt-bench with `max_tokens` set to
  each value of the sweep, and the share of items each setting truncates (`heuristic` for reference).

numpy and the benchmark loaders are imported after the load measurements, so that the first load
pays for importing onnxruntime, tokenizers and numpy as a router process does.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench.common import percentiles, report
from hyrouter.models.artefacts import ARTEFACTS_DIR
from hyrouter.router import ChatMessage, load_estimator
from hyrouter.router._estimator import HeuristicEstimator, conversation_text
from hyrouter.router._onnx_estimator import OnnxEstimator, read_manifest, truncating_tokenizer, verified_file

ESTIMATOR = "static-minilm"
UNTRUNCATED_MAX_TOKENS = 1024
TARGET_LENGTH = 128
TARGET_P50_MS = 2.0
TARGET_P99_MS = 5.0


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def manifest_entry(name: str = ESTIMATOR) -> dict[str, Any]:
    entries = [e for e in read_manifest(ARTEFACTS_DIR)["estimators"] if e["name"] == name]
    if not entries:
        raise SystemExit(f"no estimator {name!r} in {ARTEFACTS_DIR}; build it first (make models)")
    return max(entries, key=lambda e: tuple(int(p) for p in str(e["version"]).split(".")))


def untruncated_tokenizer(entry: dict[str, Any]) -> Any:
    """The estimator's tokenizer with truncation off: to count a prompt's tokens before truncation."""
    tokenizer = truncating_tokenizer(ARTEFACTS_DIR / entry["files"]["tokenizer"]["path"], 1)
    tokenizer.no_truncation()
    return tokenizer


def count_tokens(tokenizer: Any, text: str) -> int:
    return len(tokenizer.encode(text).ids)


def build_prompt(tokenizer: Any, passages: Sequence[str], n_tokens: int, start: int = 0) -> str:
    """Real text of exactly `n_tokens` tokens as `tokenizer` counts them, special tokens included.

    Passages are joined from `passages[start]` on (wrapping round) until long enough, then cut at the
    end of a token; the cut is moved a token at a time until the count is exact.
    """
    specials = count_tokens(tokenizer, "")
    if n_tokens <= specials:
        raise ValueError(f"a prompt needs more than the {specials} special tokens")
    if not passages:
        raise ValueError("no passages to build a prompt from")
    parts: list[str] = []
    i = start
    text = ""
    while True:
        parts.append(passages[i % len(passages)].strip())
        i += 1
        text = "\n\n".join(parts)
        if count_tokens(tokenizer, text) > n_tokens:
            break
        if i - start > 100 * len(passages):
            raise ValueError("the passages are empty")
    offsets = [end for _, end in tokenizer.encode(text).offsets]
    # offsets[0] is [CLS]; content token k (1-based) ends at offsets[k].
    k = n_tokens - specials
    for _ in range(50):
        candidate = text[: offsets[k]]
        n = count_tokens(tokenizer, candidate)
        if n == n_tokens:
            return candidate
        k += 1 if n < n_tokens else -1
        k = max(1, min(k, len(offsets) - 2))
    raise ValueError(f"could not cut the text at exactly {n_tokens} tokens")


def real_passages(data_dir: Path | None = None) -> list[str]:
    """Real prompts in a fixed order: every MT-Bench turn, then every GSM8K question."""
    from hyrouter.models.routing_data import load_benchmark

    passages = [m.text for conv in load_benchmark("mt-bench", data_dir).conversations for m in conv]
    passages += [conv[-1].text for conv in load_benchmark("gsm8k", data_dir).conversations]
    return [p for p in passages if p.strip()]


def user(text: str) -> list[ChatMessage]:
    return [ChatMessage(role="user", content=text)]


def ms_since(started: int) -> float:
    return (time.perf_counter_ns() - started) / 1e6


# --- artefact: size, load time, RSS ------------------------------------------------------------------


def artefact_and_load(entry: dict[str, Any], loads: int) -> tuple[dict[str, Any], Any]:
    """Sizes, load times and RSS; returns them and the estimator loaded through the registry."""
    files = {role: ARTEFACTS_DIR / spec["path"] for role, spec in entry["files"].items()}
    sizes = {role: path.stat().st_size for role, path in files.items()}

    rss_before = rss_mb()
    started = time.perf_counter_ns()
    estimator = load_estimator(ESTIMATOR)  # entry-point discovery, imports, sha256 check, session
    first_ms = ms_since(started)
    rss_after_first = rss_mb()
    if not isinstance(estimator, OnnxEstimator):
        raise SystemExit(f"{ESTIMATOR} loaded as {type(estimator).__name__}, not OnnxEstimator")

    load_ms, sha_ms = [], []
    kept = []  # kept alive, so the RSS of a further instance shows
    rss_before_more = rss_mb()
    for _ in range(loads):
        started = time.perf_counter_ns()
        kept.append(OnnxEstimator(ARTEFACTS_DIR, entry))
        load_ms.append(ms_since(started))
    rss_after_more = rss_mb()
    for _ in range(loads):
        started = time.perf_counter_ns()
        for role in files:
            verified_file(ARTEFACTS_DIR, entry, role)
        sha_ms.append(ms_since(started))
    del kept

    load_median, sha_median = statistics.median(load_ms), statistics.median(sha_ms)
    return {
        "files": {
            role: {
                "path": str(files[role].relative_to(ARTEFACTS_DIR.parent.parent)),
                "bytes": size,
                "mib": round(size / 2**20, 2),
            }
            for role, size in sizes.items()
        },
        "total_bytes": sum(sizes.values()),
        "total_mib": round(sum(sizes.values()) / 2**20, 2),
        "load_ms": {
            "first_in_process_via_load_estimator": round(first_ms, 1),
            "first_note": "entry-point discovery + importing onnxruntime/tokenizers/numpy + sha256 + session",
            "fresh_constructions": loads,
            "median": round(load_median, 2),
            "min": round(min(load_ms), 2),
            "max": round(max(load_ms), 2),
            "sha256_check_median": round(sha_median, 2),
            "sha256_check_share": round(sha_median / load_median, 3),
        },
        "rss_mb": {
            "before_load": round(rss_before, 1),
            "after_first_load": round(rss_after_first, 1),
            "first_load_delta": round(rss_after_first - rss_before, 1),
            "per_further_instance": round((rss_after_more - rss_before_more) / loads, 1),
        },
    }, estimator


# --- latency -----------------------------------------------------------------------------------------


def latency(
    shipped: OnnxEstimator,
    untruncated: OnnxEstimator,
    heuristic: HeuristicEstimator,
    prompts: dict[int, list[list[ChatMessage]]],
    *,
    iterations: int,
    warmup: int,
    seed: int,
) -> dict[str, Any]:
    """p50/p99/mean of each estimator per length, interleaved in a shuffled order each iteration."""
    samples: dict[tuple[int, str], list[float]] = {}

    def whole(name: str, score: Callable[[Sequence[ChatMessage]], float]) -> Callable[..., None]:
        def run(length: int, messages: list[ChatMessage], keep: bool) -> None:
            started = time.perf_counter_ns()
            score(messages)
            elapsed = ms_since(started)
            if keep:
                samples.setdefault((length, name), []).append(elapsed)

        return run

    def split(name: str, estimator: OnnxEstimator) -> Callable[..., None]:
        def run(length: int, messages: list[ChatMessage], keep: bool) -> None:
            started = time.perf_counter_ns()
            ids = estimator.token_ids(messages)
            middle = time.perf_counter_ns()
            estimator.score_ids(ids)
            end = time.perf_counter_ns()
            if keep:
                samples.setdefault((length, f"{name}:tokenize"), []).append((middle - started) / 1e6)
                samples.setdefault((length, f"{name}:session_run"), []).append((end - middle) / 1e6)

        return run

    runners = [
        whole("heuristic", heuristic.score),
        whole("shipped", shipped.score),
        whole("untruncated", untruncated.score),
        split("shipped", shipped),
        split("untruncated", untruncated),
    ]
    rng = random.Random(seed)
    tasks = [(length, runner) for length in prompts for runner in runners]
    for i in range(warmup + iterations):
        rng.shuffle(tasks)
        for length, runner in tasks:
            variants = prompts[length]
            runner(length, variants[i % len(variants)], i >= warmup)

    by_length: dict[str, Any] = {}
    for length, variants in prompts.items():
        row: dict[str, Any] = {
            "requested_tokens": length,
            "prompt_variants": len(variants),
            "heuristic": {
                "words": sorted({len(conversation_text(v).split()) for v in variants}),
                "score": percentiles(samples[(length, "heuristic")]),
            },
        }
        for name, estimator in (("shipped", shipped), ("untruncated", untruncated)):
            scored = sorted({len(estimator.token_ids(v)) for v in variants})
            row[f"{ESTIMATOR}_{name}"] = {
                "max_tokens": estimator.max_tokens,
                "tokens_scored": scored[0] if len(scored) == 1 else scored,
                "score": percentiles(samples[(length, name)]),
                "tokenize": percentiles(samples[(length, f"{name}:tokenize")]),
                "session_run": percentiles(samples[(length, f"{name}:session_run")]),
            }
        by_length[str(length)] = row
    return by_length


def growth(by_length: dict[str, Any]) -> dict[str, Any]:
    """Least-squares line through the p50s of the untruncated runs (and the heuristic) against tokens."""
    import numpy as np

    tokens = np.array([int(k) for k in by_length], dtype=float)

    def fit(values: list[float]) -> dict[str, float]:
        slope, intercept = np.polyfit(tokens, np.array(values), 1)
        return {"us_per_token": round(float(slope) * 1000, 3), "intercept_ms": round(float(intercept), 4)}

    key = f"{ESTIMATOR}_untruncated"
    out: dict[str, Any] = {"fit_over_tokens": [int(t) for t in tokens], "of": "p50"}
    for part in ("score", "tokenize", "session_run"):
        out[f"{ESTIMATOR}_{part}"] = fit([row[key][part]["p50_ms"] for row in by_length.values()])
    out["heuristic_score"] = fit([row["heuristic"]["score"]["p50_ms"] for row in by_length.values()])
    lo, hi = by_length[str(int(tokens.min()))], by_length[str(int(tokens.max()))]
    out[f"{ESTIMATOR}_p50_ratio_longest_to_shortest"] = round(
        hi[key]["score"]["p50_ms"] / lo[key]["score"]["p50_ms"], 2
    )
    return out


# --- truncation cost in quality ----------------------------------------------------------------------


def truncation_quality(
    entry: dict[str, Any], tokenizer: Any, sweep: list[int], data_dir: Path | None
) -> dict[str, Any]:
    """APGR / CPT50 per benchmark at each `max_tokens`, with the share of items truncated."""
    import numpy as np

    from hyrouter.models.evaluate import evaluate
    from hyrouter.models.quality import summarize
    from hyrouter.models.routing_data import BENCHMARKS, load_benchmark

    benchmarks = {name: load_benchmark(name, data_dir) for name in BENCHMARKS}
    estimators = {m: OnnxEstimator(ARTEFACTS_DIR, {**entry, "max_tokens": m}) for m in sweep}
    heuristic = HeuristicEstimator()
    shipped_max = int(entry.get("max_tokens", 256))
    out: dict[str, Any] = {"shipped_max_tokens": shipped_max, "sweep": sweep, "benchmarks": {}}
    for name, bench in benchmarks.items():
        lengths = np.array([count_tokens(tokenizer, conversation_text(c)) for c in bench.conversations])
        q = np.percentile(lengths, [50, 90, 99])
        row: dict[str, Any] = {
            "items": len(bench),
            "tokens_untruncated": {
                "p50": int(q[0]),
                "p90": int(q[1]),
                "p99": int(q[2]),
                "max": int(lengths.max()),
            },
            "heuristic": summarize(evaluate(bench, {"heuristic": heuristic.score})["heuristic"]),
            "by_max_tokens": {},
        }
        for m, estimator in estimators.items():
            started = time.perf_counter()
            summary = summarize(evaluate(bench, {"m": estimator.score})["m"])
            elapsed = time.perf_counter() - started
            row["by_max_tokens"][str(m)] = {
                **summary,
                "truncated_share": round(float((lengths > m).mean()), 4),
                "scoring_ms_per_item": round(elapsed * 1000 / len(bench), 3),
            }
        shipped = row["by_max_tokens"].get(str(shipped_max))
        if shipped is not None:
            recorded = entry.get("metrics", {}).get(name, {}).get("apgr")
            row["shipped_apgr_matches_manifest"] = recorded is None or abs(shipped["apgr"] - recorded) < 1e-3
            for m in sweep:
                r = row["by_max_tokens"][str(m)]
                r["apgr_vs_shipped"] = round(r["apgr"] - shipped["apgr"], 4)
        out["benchmarks"][name] = row
    return out


# --- report --------------------------------------------------------------------------------------------


def print_table(result: dict[str, Any]) -> None:
    key_s, key_u = f"{ESTIMATOR}_shipped", f"{ESTIMATOR}_untruncated"
    print(f"\nestimator latency, one thread, ms (p50 / p99); {result['iterations']} iterations per cell")
    print(
        f"{'tokens':>6} {'scored':>6} | {'heuristic':>13} | {ESTIMATOR + ' (shipped)':>22} | "
        f"{'tokenize':>13} {'session.run':>13} | {'untruncated':>13} {'tokenize':>13} {'run':>13}"
    )

    def pr(d: dict[str, Any]) -> str:
        return f"{d['p50_ms']:.3f} / {d['p99_ms']:.3f}"

    for length, row in result["latency"].items():
        s, u = row[key_s], row[key_u]
        print(
            f"{length:>6} {s['tokens_scored']!s:>6} | {pr(row['heuristic']['score']):>13} | "
            f"{pr(s['score']):>22} | {pr(s['tokenize']):>13} {pr(s['session_run']):>13} | "
            f"{pr(u['score']):>13} {pr(u['tokenize']):>13} {pr(u['session_run']):>13}"
        )
    g = result["growth_untruncated"]
    if g:
        score, tok, run = (g[f"{ESTIMATOR}_{part}"] for part in ("score", "tokenize", "session_run"))
        print(
            f"growth (untruncated p50): score {score['us_per_token']} us/token (tokenize "
            f"{tok['us_per_token']}, run {run['us_per_token']}), intercept {score['intercept_ms']} ms; "
            f"heuristic {g['heuristic_score']['us_per_token']} us/token"
        )
    a = result["artefact"]
    files, load, rss = a["files"], a["load_ms"], a["rss_mb"]
    print(
        f"artefact: model {files['model']['mib']} MiB + tokenizer {files['tokenizer']['mib']} MiB; "
        f"load median {load['median']} ms (sha256 {load['sha256_check_median']} ms, "
        f"{load['sha256_check_share']:.0%}); first load in process "
        f"{load['first_in_process_via_load_estimator']} ms; RSS +{rss['first_load_delta']} MB first, "
        f"+{rss['per_further_instance']} MB per further instance"
    )
    t = result["targets"]
    print(
        f"targets at {t['length_tokens']} tokens: p50 {t['p50_ms']['measured']} <= {t['p50_ms']['target']} "
        f"{'PASS' if t['p50_ms']['pass'] else 'FAIL'}; p99 {t['p99_ms']['measured']} <= "
        f"{t['p99_ms']['target']} {'PASS' if t['p99_ms']['pass'] else 'FAIL'}"
    )
    quality = result.get("truncation_quality")
    if not quality:
        return
    print(f"\ntruncation cost: {ESTIMATOR} APGR / CPT50 (truncated share) by max_tokens")
    sweep = quality["sweep"]
    print(f"{'benchmark':>9} | " + " | ".join(f"{m:>22}" for m in sweep) + f" | {'heuristic':>15}")
    for name, row in quality["benchmarks"].items():
        cells = []
        for m in sweep:
            r = row["by_max_tokens"][str(m)]
            cells.append(f"{r['apgr']:.4f} / {r['cpt50']:.3f} ({r['truncated_share']:.0%})")
        h = row["heuristic"]
        heur = f"{h['apgr']:.4f} / {h['cpt50']:.3f}"
        print(f"{name:>9} | " + " | ".join(f"{c:>22}" for c in cells) + f" | {heur:>15}")


def int_list(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--iterations", type=int, default=500)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--lengths", type=int_list, default=[32, 128, 512, 1024, 4096])
    parser.add_argument("--variants", type=int, default=8, help="different prompts per length")
    parser.add_argument("--loads", type=int, default=5, help="fresh constructions timed for the load")
    parser.add_argument("--quality-max-tokens", type=int_list, default=[32, 64, 128, 256, 512])
    parser.add_argument("--no-quality", action="store_true", help="skip the truncation-quality sweep")
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    entry = manifest_entry()
    artefact, shipped = artefact_and_load(entry, args.loads)
    tokenizer = untruncated_tokenizer(entry)
    longest = max(args.lengths)
    untruncated = OnnxEstimator(ARTEFACTS_DIR, {**entry, "max_tokens": max(UNTRUNCATED_MAX_TOKENS, longest)})
    heuristic = HeuristicEstimator()

    passages = real_passages(args.data_dir)
    step = max(1, len(passages) // args.variants)
    prompts = {
        length: [user(build_prompt(tokenizer, passages, length, v * step)) for v in range(args.variants)]
        for length in args.lengths
    }
    for length, variants in prompts.items():
        assert all(count_tokens(tokenizer, conversation_text(v)) == length for v in variants)

    load_before = os.getloadavg()
    by_length = latency(
        shipped,
        untruncated,
        heuristic,
        prompts,
        iterations=args.iterations,
        warmup=args.warmup,
        seed=args.seed,
    )
    at_target = by_length.get(str(TARGET_LENGTH), {}).get(f"{ESTIMATOR}_shipped", {}).get("score")
    targets: dict[str, Any] = {
        "estimator": f"{shipped.name}@{shipped.version}",
        "length_tokens": TARGET_LENGTH,
    }
    for stat, target in (("p50_ms", TARGET_P50_MS), ("p99_ms", TARGET_P99_MS)):
        measured = at_target[stat] if at_target else None
        targets[stat] = {
            "target": target,
            "measured": measured,
            "pass": measured is not None and measured <= target,
        }

    result: dict[str, Any] = {
        "estimators": {
            "learned": f"{shipped.name}@{shipped.version}",
            "heuristic": f"{heuristic.name}@{heuristic.version}",
            "shipped_max_tokens": shipped.max_tokens,
            "untruncated_variant_max_tokens": untruncated.max_tokens,
            "threads": 1,
        },
        "iterations": args.iterations,
        "warmup": args.warmup,
        "load_average_1m": {"before": round(load_before[0], 2), "after": round(os.getloadavg()[0], 2)},
        "token_count_note": "tokens as the estimator's tokenizer counts them, [CLS] and [SEP] included; "
        "requested = before truncation, tokens_scored = what the model reads",
        "latency": by_length,
        "growth_untruncated": growth(by_length) if len(by_length) > 1 else None,
        "artefact": artefact,
        "targets": targets,
    }
    if not args.no_quality:
        result["truncation_quality"] = truncation_quality(
            entry, tokenizer, args.quality_max_tokens, args.data_dir
        )
    report("estimator_latency", result)
    print_table(result)


if __name__ == "__main__":
    main()
