"""Device signals as routing inputs: battery, free memory, temperature, and the link to the cloud.

Linux exposes the first three as files: `/sys/class/power_supply/*/{type,capacity,status,online}`,
`/proc/meminfo` (`MemAvailable`), `/sys/class/thermal/thermal_zone*/temp` (millidegrees Celsius).
`LinuxSignalReader(root)` reads them under any root, so tests point it at a fixture tree. A signal
the OS does not expose is `None` and has no effect. The link's round trip is measured by the SDK
(see `LinkMonitor`), not read from a file.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol, runtime_checkable

# Temperatures outside this range are sensor errors (some zones report -273 °C or 0 when idle).
_PLAUSIBLE_CELSIUS = (1.0, 150.0)


@dataclass(frozen=True)
class DeviceSignals:
    """What the device can tell about itself now; `None` where the OS does not say."""

    battery_pct: float | None = None
    charging: bool | None = None
    free_memory_mb: float | None = None
    temperature_c: float | None = None
    link_rtt_ms: float | None = None
    metered: bool | None = None

    def with_link(self, rtt_ms: float | None, metered: bool | None = None) -> DeviceSignals:
        """A copy with the link facts set (where given)."""
        return replace(self, link_rtt_ms=rtt_ms, metered=self.metered if metered is None else metered)


@runtime_checkable
class SignalSource(Protocol):
    """Reads the device signals; cheap enough to call per request (the SDK caches it briefly)."""

    def read(self) -> DeviceSignals:
        """The signals now."""
        ...


@dataclass(frozen=True)
class StaticSignals:
    """Fixed signals: for platforms that push them from the app (Android, iOS) and for tests."""

    signals: DeviceSignals = DeviceSignals()

    def read(self) -> DeviceSignals:
        """The fixed signals."""
        return self.signals


class LinuxSignalReader:
    """Reads battery, memory and temperature from `/sys` and `/proc` under `root`."""

    def __init__(self, root: str | Path = "/") -> None:
        self.root = Path(root)

    def read(self) -> DeviceSignals:
        """The signals now; a missing or unreadable file leaves its signal `None`."""
        battery, charging = self.battery()
        return DeviceSignals(
            battery_pct=battery,
            charging=charging,
            free_memory_mb=self.free_memory_mb(),
            temperature_c=self.temperature_c(),
        )

    def battery(self) -> tuple[float | None, bool | None]:
        """Mean capacity of the batteries, and whether the device is on external power."""
        capacities: list[float] = []
        statuses: list[str] = []
        plugged: bool | None = None
        base = self.root / "sys/class/power_supply"
        for supply in sorted(base.glob("*")) if base.is_dir() else ():
            kind = _read(supply / "type")
            if kind == "Battery":
                if (capacity := _number(supply / "capacity")) is not None and 0 <= capacity <= 100:
                    capacities.append(capacity)
                if status := _read(supply / "status"):
                    statuses.append(status)
            elif (
                kind in ("Mains", "USB", "USB_C", "USB_PD", "Wireless")
                and (online := _number(supply / "online")) is not None
            ):
                plugged = bool(plugged) or online > 0
        if not capacities:
            return None, plugged
        # "Not charging" is a full battery held on the charger: on external power all the same.
        on_power = any(s in ("Charging", "Full", "Not charging") for s in statuses)
        charging = (on_power or bool(plugged)) if (statuses or plugged is not None) else None
        return sum(capacities) / len(capacities), charging

    def free_memory_mb(self) -> float | None:
        """`MemAvailable` (or, on old kernels, `MemFree`) from `/proc/meminfo`, in MiB."""
        text = _read(self.root / "proc/meminfo")
        if text is None:
            return None
        fields: dict[str, float] = {}
        for line in text.splitlines():
            name, _, rest = line.partition(":")
            parts = rest.split()
            with contextlib.suppress(ValueError, IndexError):
                fields[name.strip()] = float(parts[0])
        kib = fields.get("MemAvailable", fields.get("MemFree"))
        return None if kib is None else kib / 1024.0

    def temperature_c(self) -> float | None:
        """The hottest plausible thermal zone, in degrees Celsius."""
        base = self.root / "sys/class/thermal"
        temps: list[float] = []
        for zone in sorted(base.glob("thermal_zone*")) if base.is_dir() else ():
            milli = _number(zone / "temp")
            if milli is not None and _PLAUSIBLE_CELSIUS[0] <= milli / 1000.0 <= _PLAUSIBLE_CELSIUS[1]:
                temps.append(milli / 1000.0)
        return max(temps) if temps else None


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return None


def _number(path: Path) -> float | None:
    text = _read(path)
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        return None
