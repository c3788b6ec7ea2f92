"""Device signals read from /sys- and /proc-style fixture trees (tests/fixtures/device/)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hyrouter.edge import DeviceSignals, LinuxSignalReader, SignalSource, StaticSignals

DEVICES = Path(__file__).parents[1] / "fixtures" / "device"


def read(name: str) -> DeviceSignals:
    return LinuxSignalReader(DEVICES / name).read()


def test_laptop_on_battery() -> None:
    signals = read("laptop-low-battery")
    assert signals.battery_pct == 12
    assert signals.charging is False  # discharging, and the AC adapter is offline
    assert signals.free_memory_mb == 1024  # MemAvailable, not MemFree
    assert signals.temperature_c == 52  # the -273 °C zone is a sensor error, ignored
    assert signals.link_rtt_ms is None and signals.metered is None


def test_phone_charging_and_hot() -> None:
    signals = read("phone-charging-hot")
    assert signals.battery_pct == 8
    assert signals.charging is True
    assert signals.free_memory_mb == 100
    assert signals.temperature_c == 81.5  # the hottest zone


def test_desktop_without_battery_or_thermal_zones() -> None:
    signals = read("desktop-old-kernel")
    assert signals.battery_pct is None and signals.charging is None
    assert signals.temperature_c is None
    assert signals.free_memory_mb == 4096  # no MemAvailable on old kernels: MemFree


def test_unreadable_values_leave_signals_unknown() -> None:
    signals = read("garbage")
    assert signals == DeviceSignals()  # no readable capacity: nothing said about the battery


def test_a_missing_root_reads_nothing(tmp_path: Path) -> None:
    assert LinuxSignalReader(tmp_path / "nowhere").read() == DeviceSignals()


def test_battery_full_on_the_charger_counts_as_charging(tmp_path: Path) -> None:
    bat = tmp_path / "sys/class/power_supply/BAT1"
    bat.mkdir(parents=True)
    (bat / "type").write_text("Battery\n")
    (bat / "capacity").write_text("100\n")
    (bat / "status").write_text("Not charging\n")
    assert LinuxSignalReader(tmp_path).battery() == (100, True)


@pytest.mark.parametrize("source", [LinuxSignalReader("/"), StaticSignals()])
def test_sources_implement_the_protocol(source: SignalSource) -> None:
    assert isinstance(source, SignalSource)
    assert isinstance(source.read(), DeviceSignals)


def test_with_link_sets_the_round_trip() -> None:
    signals = DeviceSignals(battery_pct=50, metered=True).with_link(120.0)
    assert signals.link_rtt_ms == 120.0 and signals.metered is True and signals.battery_pct == 50
