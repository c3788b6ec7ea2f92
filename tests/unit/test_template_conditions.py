"""template.yaml's intrinsic functions are whole: every `!If` names a declared condition and has both
branches (a merge once left `!If [UseResponseCache, <statement>]`, which cfn-lint only warns about and
CloudFormation refuses at deploy)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]


class _Intrinsics(yaml.SafeLoader):
    """Reads `!If [...]` as `{"Fn::If": [...]}` and `!Ref x` as `{"Ref": x}`, as CloudFormation does."""


def _intrinsic(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    return {"Ref" if suffix == "Ref" else f"Fn::{suffix}": value}


_Intrinsics.add_multi_constructor("!", _intrinsic)


def _ifs(node: Any, where: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "Fn::If":
                yield where, value
            yield from _ifs(value, f"{where}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _ifs(value, f"{where}/{i}")


def test_every_if_names_a_condition_and_has_both_branches() -> None:
    template = yaml.load((ROOT / "template.yaml").read_text(), Loader=_Intrinsics)
    conditions = set(template["Conditions"])
    found = list(_ifs(template["Resources"])) + list(_ifs(template.get("Outputs", {})))
    assert len(found) > 10  # the walk reaches the functions' policies and environments
    broken = [where for where, args in found if not (len(args) == 3 and args[0] in conditions)]
    assert broken == []
