"""Every alarm of the SAM template names its SLO and links to a runbook section that exists."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
RUNBOOK = ROOT / "docs" / "runbooks.md"
LINK = re.compile(r"Runbook: (docs/runbooks\.md)#([a-z0-9-]+)")


class _CloudFormationLoader(yaml.SafeLoader):
    """Reads `!Sub`, `!Ref` ... as the value they tag (enough to read descriptions and metrics)."""


def _tagged(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
    if isinstance(node, yaml.ScalarNode):
        return loader.construct_scalar(node)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    return loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]


_CloudFormationLoader.add_multi_constructor("!", _tagged)


def _alarms() -> dict[str, dict[str, Any]]:
    template = yaml.load((ROOT / "template.yaml").read_text(), Loader=_CloudFormationLoader)
    return {
        name: resource["Properties"]
        for name, resource in template["Resources"].items()
        if resource["Type"] == "AWS::CloudWatch::Alarm"
    }


def _sections() -> dict[str, str]:
    """The runbook's sections by their GitHub anchor: heading text lowered, punctuation dropped."""
    sections: dict[str, str] = {}
    anchor = None
    for line in RUNBOOK.read_text(encoding="utf-8").splitlines():
        heading = re.match(r"#{2,4} (.+)", line)
        if heading:
            anchor = re.sub(r"[^a-z0-9 -]", "", heading.group(1).lower()).replace(" ", "-")
            sections[anchor] = ""
        elif anchor is not None:
            sections[anchor] += line + "\n"
    return sections


def _slo_table() -> dict[str, str]:
    """The alarms of the runbook's SLO table: alarm name -> SLO."""
    rows = [line.split(" | ") for line in _sections()["the-slos-and-their-alarms"].splitlines()]
    return {
        alarm: row[0].removeprefix("| ")
        for row in rows
        if len(row) > 2 and "`" in row[2]
        for alarm in re.findall(r"`(\w+Alarm)`", row[2])
    }


@pytest.mark.parametrize("name", sorted(_alarms()))
def test_each_alarm_names_its_slo_and_links_to_a_runbook_section(name: str) -> None:
    description = _alarms()[name]["AlarmDescription"]
    slo = _slo_table().get(name)
    assert slo is not None, f"{name} is not in the runbook's SLO table"
    assert f"SLO: {slo} (" in description
    link = LINK.search(description)
    assert link is not None, f"{name} links to no runbook section"
    sections = _sections()
    assert link.group(2) in sections, f"{name} links to #{link.group(2)}, which docs/runbooks.md lacks"
    assert f"`{name}`" in sections[link.group(2)], f"the section #{link.group(2)} does not explain {name}"
    assert len(description) <= 1024  # CloudWatch's limit


def test_every_slo_in_the_runbook_has_its_alarm_in_the_template() -> None:
    assert set(_slo_table()) == set(_alarms())


def test_the_estimator_latency_slo_is_alarmed_on_the_emf_metric() -> None:
    alarm = _alarms()["EstimatorLatencyP99Alarm"]
    assert (alarm["Namespace"], alarm["MetricName"], alarm["ExtendedStatistic"]) == (
        "HybridRouter",
        "EstimatorLatency",
        "p99",
    )
    assert alarm["Dimensions"] == [{"Name": "service", "Value": "hybrid-router-${StageName}"}]
    assert alarm["Threshold"] == "EstimatorLatencyP99ThresholdMs"  # a stack parameter


def test_runbook_links_point_at_sections_that_exist() -> None:
    text = RUNBOOK.read_text(encoding="utf-8")
    sections = _sections()
    missing = {a for a in re.findall(r"\]\(#([a-z0-9-]+)\)", text) if a not in sections}
    assert not missing
