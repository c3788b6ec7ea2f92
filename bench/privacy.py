"""The privacy detector: precision and recall per kind on the labelled set, old detector beside the new.

python -m bench.privacy [--base f894083] [--calls 300]

- quality: for each kind, precision and recall over the texts of tests/fixtures/privacy/labelled.jsonl
  (a text counts once per kind), for the detector as it was at `--base` (its source read with
  `git show`, loaded as a throwaway module) and for the current one; a kind the old one did not know
  has recall 0 and no precision (and the texts the new one gets wrong);
- cost: the time of one call on a text without digits, on one with a few numbers, and on a 20 kB
  numeric table, with the default phone regions and with one (a scan stops at the first phone); and
  the import of phonenumbers (libphonenumber) in a fresh interpreter, which the detector pays on its
  first text with seven digits or more.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from bench.common import report
from hyrouter.edge._privacy import find_personal_data

ROOT = Path(__file__).resolve().parents[1]
LABELLED = ROOT / "tests" / "fixtures" / "privacy" / "labelled.jsonl"
#: The commit before phonenumbers, IBANs and SSNs: the old detector's source.
BASE = "f894083"

Detector = Callable[[str], Iterable[str]]
#: Every kind either detector reports (the old one knew only card, email and phone).
KINDS = ("card", "email", "iban", "phone", "ssn")


def labelled() -> list[dict[str, Any]]:
    """The labelled set: {"text", "kinds", "group"} per line."""
    return [json.loads(line) for line in LABELLED.read_text().splitlines()]


def scores(detect: Detector, rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per kind: true and false positives, false negatives, precision and recall (None: nothing found)."""
    counts = {kind: {"tp": 0, "fp": 0, "fn": 0} for kind in KINDS}
    for row in rows:
        found, truth = set(detect(row["text"])), set(row["kinds"])
        for kind, count in counts.items():
            if kind in found:
                count["tp" if kind in truth else "fp"] += 1
            elif kind in truth:
                count["fn"] += 1
    out: dict[str, dict[str, Any]] = {}
    for kind, c in counts.items():
        flagged, present = c["tp"] + c["fp"], c["tp"] + c["fn"]
        out[kind] = {
            **c,
            "precision": round(c["tp"] / flagged, 3) if flagged else None,
            "recall": round(c["tp"] / present, 3) if present else None,
        }
    return out


def mistakes(detect: Detector, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The texts a detector gets wrong, with what it found."""
    wrong = []
    for row in rows:
        found = sorted(set(detect(row["text"])))
        if found != row["kinds"]:
            wrong.append({"text": row["text"], "expected": row["kinds"], "found": found})
    return wrong


def old_detector(base: str) -> Detector:
    """`find_personal_data` as `edge/_privacy.py` was at commit `base`, loaded from its source."""
    source = subprocess.run(
        ["git", "show", f"{base}:edge/_privacy.py"], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "old_privacy.py"
        path.write_text(source)
        spec = importlib.util.spec_from_file_location("old_privacy", path)
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    find: Detector = module.find_personal_data
    return find


def per_call_ms(text: str, calls: int, **options: Any) -> float:
    """Mean milliseconds of one `find_personal_data` call (after a first, uncounted one)."""
    find_personal_data(text, **options)
    start = time.perf_counter()
    for _ in range(calls):
        find_personal_data(text, **options)
    return round((time.perf_counter() - start) / calls * 1000, 4)


def import_ms(runs: int = 5) -> float:
    """The best of `runs` fresh interpreters' cumulative import time of phonenumbers (-X importtime)."""
    best = float("inf")
    for _ in range(runs):
        lines = subprocess.run(
            [sys.executable, "-X", "importtime", "-c", "import phonenumbers"],
            check=True,
            capture_output=True,
            text=True,
        ).stderr.splitlines()
        ours = next(line for line in reversed(lines) if line.rstrip().endswith("| phonenumbers"))
        cumulative_us = int(ours.split("|")[1])
        best = min(best, cumulative_us / 1000)
    return round(best, 2)


TEXTS = {
    "no_digits_500B": "Explain how photosynthesis works and why leaves change colour in autumn. " * 7,
    "few_numbers_200B": "Order 4471 arrived on 2024-05-01; call me on +1 (415) 555-0132 or 020 7946 0958. "
    * 2,
    "numeric_table_20kB": " ".join(
        f"row {i}: {i * 7919 % 100000:05d} units, {i * 104729 % 10**7:07d}" for i in range(700)
    ),
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--base", default=BASE, help="the commit whose edge/_privacy.py is the old detector")
    parser.add_argument("--calls", type=int, default=300)
    args = parser.parse_args()
    rows = labelled()
    old = old_detector(args.base)
    cost = {
        name: {
            "default_regions_ms": per_call_ms(text, max(1, args.calls // (10 if len(text) > 5000 else 1))),
            "one_region_ms": per_call_ms(
                text, max(1, args.calls // (10 if len(text) > 5000 else 1)), regions=("US",)
            ),
            "chars": len(text),
        }
        for name, text in TEXTS.items()
    }
    report(
        "privacy",
        {
            "labelled_set": {"texts": len(rows), "without_personal_data": sum(not r["kinds"] for r in rows)},
            "old": {"base": args.base, "scores": scores(old, rows)},
            "new": {"scores": scores(find_personal_data, rows)},
            "new_mistakes": mistakes(find_personal_data, rows),
            "per_call": cost,
            "phonenumbers_import_ms": import_ms(),
        },
    )


if __name__ == "__main__":
    main()
