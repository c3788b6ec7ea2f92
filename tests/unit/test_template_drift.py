"""The template alarms on the drift metrics the router writes (`emit_drift`), with sane thresholds."""

from __future__ import annotations

from typing import Any

import yaml

from tests.unit.test_template_alarms import ROOT, _CloudFormationLoader


def _template() -> dict[str, Any]:
    return dict(yaml.load((ROOT / "template.yaml").read_text(), Loader=_CloudFormationLoader))


def test_score_drift_alarms_fire_above_the_conventional_psi_per_tier() -> None:
    t = _template()
    assert t["Parameters"]["DriftPsiThreshold"]["Default"] == 0.2
    for tier in ("free", "standard"):
        alarm = t["Resources"][f"{tier.title()}ScoreDriftAlarm"]["Properties"]
        assert (alarm["Namespace"], alarm["MetricName"]) == ("HybridRouter", "ScorePSI")
        assert {"Name": "tier", "Value": tier} in alarm["Dimensions"]
        assert alarm["Threshold"] == "DriftPsiThreshold"
        assert alarm["ComparisonOperator"] == "GreaterThanThreshold"
        assert alarm["TreatMissingData"] == "notBreaching"  # no traffic is no drift


def test_the_edge_good_rate_alarm_fires_below_its_floor_and_not_without_data() -> None:
    t = _template()
    assert 0.0 < t["Parameters"]["EdgeGoodRateThreshold"]["Default"] < 1.0
    alarm = t["Resources"]["StandardEdgeGoodRateAlarm"]["Properties"]
    assert (alarm["MetricName"], alarm["ComparisonOperator"]) == ("EdgeGoodRate", "LessThanThreshold")
    assert alarm["TreatMissingData"] == "notBreaching"  # shadow judging is off by default
