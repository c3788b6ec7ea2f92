"""`hybrid-router models build`: the learned estimator from a clean checkout plus shared/data.

    hybrid-router models build [--output models/artefacts] [--dims 256] [--version 1.1.0]
                               [--target weak-failure|escalation-gain]
    hybrid-router models verify [--root models/artefacts]
    hybrid-router models compare [--json bench/results/estimator_candidates.json]   # vs MiniLM int8
    hybrid-router models fit --outcomes sqlite:PATH   # a version from this deployment's labels
    hybrid-router models canary --outcomes sqlite:PATH   # the canary and the A/B arms

Steps (each with a progress bar where it takes time): tokenize the training conversations with the
teacher's tokenizer; distil static token vectors from the MiniLM teacher (`models/token_vectors.py`);
train the head with torch on every source the evaluation benchmarks do not use; export the whole
student to ONNX and quantize it to int8 with onnxruntime; check the int8 graph against torch;
score the held-out benchmarks through the run-time estimator (the artefact as it ships); write the
files and their manifest entry (sha256, source data digests, the command, metrics).

The build needs the `models` extra (torch); serving needs only onnxruntime and tokenizers.
"""

from __future__ import annotations

import json
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from hyrouter.models.artefacts import ARTEFACTS_DIR
from hyrouter.models.canary import add_canary_command
from hyrouter.models.candidates import add_compare_command
from hyrouter.models.evaluate import evaluate
from hyrouter.models.fit import add_fit_command
from hyrouter.models.quality import summarize
from hyrouter.models.routing_data import BENCHMARKS, default_data_dir, load_benchmark
from hyrouter.models.training_data import DEFAULT_TARGET, TARGETS, all_examples, training_excludes
from hyrouter.router._estimator import conversation_text
from hyrouter.router._onnx_estimator import (
    MANIFEST_FORMAT,
    MANIFEST_NAME,
    OnnxEstimator,
    file_sha256,
    read_manifest,
    verified_file,
)

ESTIMATOR_NAME = "static-minilm"
DEFAULT_VERSION = "1.1.0"
DEFAULT_DIMS = 256
DEFAULT_OUTPUT = ARTEFACTS_DIR
SOURCE_FILES = (
    "routellm-mixtral-gpt4/mmlu_correctness.csv",
    "routellm-mixtral-gpt4/gsm8k_responses.csv",
    "routellm-mixtral-gpt4/mt_bench_judgements.jsonl",
    "mt-bench/question.jsonl",
    "llmrouter-9model/scores.jsonl",
)


def build(
    output: Path,
    *,
    dims: int,
    version: str,
    data_dir: Path,
    command: str,
    target: str = DEFAULT_TARGET,
    progress: bool = True,
) -> dict[str, Any]:
    """Build the student estimator into `output` and record it in the manifest there; its entry."""
    import torch
    from tokenizers import Tokenizer
    from transformers import AutoModel

    from hyrouter.models.student_estimator import (
        EMBEDDING_OUTPUT,
        MAX_TOKENS,
        HeadConfig,
        export_onnx,
        head_scores,
        pooled_features,
        quantize_int8,
        source_weights,
        student_module,
        train_head,
    )
    from hyrouter.models.teacher import teacher_dir, teacher_version
    from hyrouter.models.token_vectors import distil, teacher_token_outputs, token_frequencies

    started = time.perf_counter()
    torch.manual_seed(0)
    tokenizer_file = teacher_dir() / "tokenizer.json"
    tokenizer = Tokenizer.from_file(str(tokenizer_file))
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=MAX_TOKENS)

    excluded = training_excludes()
    examples = all_examples(data_dir).without(excluded)
    texts = [conversation_text(c) for c in examples.conversations]
    encodings = [e.ids for e in tokenizer.encode_batch(texts)]
    _say(f"{len(examples)} training conversations from {len(set(examples.sources))} sources", progress)

    teacher = AutoModel.from_pretrained(teacher_dir(), local_files_only=True).eval()
    outputs = teacher_token_outputs(
        teacher,
        tokenizer.get_vocab_size(),
        _special(tokenizer, "[CLS]"),
        _special(tokenizer, "[SEP]"),
        progress=progress,
    )
    student = distil(outputs, token_frequencies(encodings, tokenizer.get_vocab_size()), dims)
    features = pooled_features(student.table, encodings)
    config = HeadConfig(target=target)
    head = train_head(features, examples.target(target), source_weights(examples.sources), config, progress)

    target_dir = output / f"{ESTIMATOR_NAME}-{version}"
    target_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        export_onnx(student_module(student.table, head), fp32)
        fp32_bytes = fp32.stat().st_size
        quantize_int8(fp32, target_dir / "model.onnx")
    shutil.copyfile(tokenizer_file, target_dir / "tokenizer.json")

    entry: dict[str, Any] = {
        "name": ESTIMATOR_NAME,
        "version": version,
        "kind": "static-embeddings+head, int8 ONNX",
        "max_tokens": MAX_TOKENS,
        "files": {
            role: {"path": f"{target_dir.name}/{file}", "sha256": file_sha256(target_dir / file)}
            for role, file in (("model", "model.onnx"), ("tokenizer", "tokenizer.json"))
        },
        "embedding": {"output": EMBEDDING_OUTPUT, "dims": dims},
        "teacher": teacher_version(),
        "student": {"dims": dims, "pca_explained_variance": round(student.explained_variance, 4)},
        "head": config.__dict__,
        "training": {
            "command": command,
            "examples": len(examples),
            "sources": sorted(set(examples.sources)),
            "excluded_sources": sorted(excluded),
            "target": f"{TARGETS[target]}; sources weighted equally",
        },
        "source_data": {name: file_sha256(data_dir / name) for name in SOURCE_FILES},
        "size_bytes": {"model_int8": (target_dir / "model.onnx").stat().st_size, "model_fp32": fp32_bytes},
    }
    estimator = OnnxEstimator(output, entry)  # the artefact as it ships, its files checked against `entry`
    sample = list(range(0, len(encodings), max(1, len(encodings) // 500)))
    reference = head_scores(head, features[sample])
    shipped = np.array([estimator.score_ids(encodings[i]) for i in sample])
    entry["int8_vs_fp32"] = {
        "max_abs_diff": round(float(np.abs(shipped - reference).max()), 5),
        "rank_correlation": round(
            float(np.corrcoef(np.argsort(np.argsort(shipped)), np.argsort(np.argsort(reference)))[0, 1]), 5
        ),
    }
    entry["metrics"] = evaluate_estimator(estimator, data_dir, progress)
    entry["build_seconds"] = round(time.perf_counter() - started, 1)
    _write_entry(output, entry)
    return entry


def evaluate_estimator(estimator: OnnxEstimator, data_dir: Path, progress: bool) -> dict[str, Any]:
    """APGR, CPT and AUC of the shipped artefact on every benchmark it was held out from."""
    metrics: dict[str, Any] = {}
    for name in BENCHMARKS:
        bench = load_benchmark(name, data_dir)
        curve = evaluate(bench, {"eval": estimator.score}, progress=progress)["eval"]
        metrics[name] = {
            "pair": bench.pair,
            "items": len(bench),
            **{k: round(v, 4) for k, v in summarize(curve).items()},
        }
    return metrics


def _write_entry(root: Path, entry: dict[str, Any]) -> None:
    path = root / MANIFEST_NAME
    manifest: dict[str, Any] = {"format": MANIFEST_FORMAT, "estimators": []}
    if path.exists():
        manifest = read_manifest(root)
    others = [
        e for e in manifest["estimators"] if (e["name"], e["version"]) != (entry["name"], entry["version"])
    ]
    manifest["estimators"] = [*others, entry]
    path.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")


def verify(root: Path) -> list[str]:
    """Check every manifest entry's files against their sha256, the edge models' calibrations
    included (each loaded and validated too); the `name@version` of each."""
    from hyrouter.router._calibrations import RegisteredCalibration

    checked = []
    manifest = read_manifest(root)
    for entry in manifest["estimators"]:
        for role in entry.get("files", {}):
            verified_file(root, entry, role)
        checked.append(f"{entry['name']}@{entry['version']}")
    for entry in manifest.get("calibrations", []):
        calibration = RegisteredCalibration(
            name=entry["name"],
            version=entry["version"],
            path=root / entry["path"],
            sha256=entry["sha256"],
            gguf_sha256=entry["gguf_sha256"],
        )
        calibration.load()  # checks its sha256 and its document
        checked.append(f"calibration {calibration.ident}")
    return checked


def _special(tokenizer: Any, token: str) -> int:
    ident = tokenizer.token_to_id(token)
    if ident is None:
        raise RuntimeError(f"the teacher's tokenizer has no {token} token")
    return int(ident)


def _say(message: str, enabled: bool) -> None:
    if enabled:
        print(message, file=sys.stderr, flush=True)


def add_models_command(subparsers: Any) -> None:
    """Register `hybrid-router models build|verify|compare|fit|canary|fit-confidence`."""
    p = subparsers.add_parser("models", help="build or verify the learned estimator artefacts")
    sub = p.add_subparsers(dest="models_command", required=True)
    b = sub.add_parser("build", help="rebuild the estimator (needs the `models` extra: torch, optimum)")
    b.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="artefact registry folder")
    b.add_argument("--dims", type=int, default=DEFAULT_DIMS, help="width of the static token vectors")
    b.add_argument("--version", default=DEFAULT_VERSION, help="version to record in the manifest")
    b.add_argument("--data-dir", type=Path, help="shared data folder (default: ../shared/data)")
    b.add_argument(
        "--target", choices=tuple(TARGETS), default=DEFAULT_TARGET, help="what the head learns to predict"
    )
    b.set_defaults(func=_cmd_build)
    v = sub.add_parser("verify", help="check every artefact against the manifest's sha256")
    v.add_argument("--root", type=Path, default=DEFAULT_OUTPUT, help="artefact registry folder")
    v.set_defaults(func=_cmd_verify)
    add_compare_command(sub)
    add_fit_command(sub)
    add_canary_command(sub)
    from hyrouter.models.cascade import add_fit_confidence_command

    add_fit_confidence_command(sub)


def _cmd_build(args: Any) -> int:
    command = "hybrid-router " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    entry = build(
        args.output,
        dims=args.dims,
        version=args.version,
        data_dir=args.data_dir or default_data_dir(),
        command=command,
        target=args.target,
    )
    print(
        json.dumps(
            {k: entry[k] for k in ("name", "version", "size_bytes", "int8_vs_fp32", "metrics")}, indent=2
        )
    )
    return 0


def _cmd_verify(args: Any) -> int:
    for ident in verify(args.root):
        print(f"ok {ident}")
    return 0
