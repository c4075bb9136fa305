"""What the CPU reports about itself: its feature flags and its vendor, read from /proc/cpuinfo.

The package's CPU choices (bf16 autocast in `precision.py`, the float32 GEMM library in
`model/projection.py`) ask the CPU instead of guessing from its name.
"""
from __future__ import annotations

import platform

CPUINFO = "/proc/cpuinfo"


def _first_field(cpuinfo: str, keys: tuple[str, ...]) -> str | None:
    """The value of the first line of `cpuinfo` whose key is one of `keys`; "" when no line has one,
    None where the file cannot be read."""
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                if key.strip() in keys:
                    return value.strip()
    except OSError:
        return None
    return ""


def cpu_flags(cpuinfo: str = CPUINFO) -> frozenset[str] | None:
    """The CPU feature flags the Linux kernel reports, or None where there is no such file."""
    value = _first_field(cpuinfo, ("flags", "Features"))  # x86, ARM
    return None if value is None else frozenset(value.split())


def cpu_vendor(cpuinfo: str | None = CPUINFO) -> str:
    """The x86 vendor string ("AuthenticAMD", "GenuineIntel"), from /proc/cpuinfo where there is one,
    else (no such file, or `cpuinfo` None off Linux) from the platform's processor description (Windows
    names it there); "" when unknown."""
    value = None if cpuinfo is None else _first_field(cpuinfo, ("vendor_id",))
    if value:
        return value
    if value is None:  # no /proc/cpuinfo: Windows says e.g. "AMD64 Family 25 Model 17 Stepping 1, AuthenticAMD"
        for vendor in ("AuthenticAMD", "GenuineIntel"):
            if vendor in platform.processor():
                return vendor
    return ""
