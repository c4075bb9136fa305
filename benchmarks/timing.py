"""What the benchmarks share: the machine's name and variants timed in turn, round after round.

The hosts these benchmarks run on drift in speed by up to 2x within a day. Timing one variant's
runs and then the other's puts that drift into their ratio; timing them in turn, one run of each
per round, gives each round its own ratio under the same conditions, and the median of those
ratios is what the benchmarks report.
"""
from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


@dataclass
class Timings:
    """Seconds per run of each variant, in the order the rounds ran, and each variant's last output."""

    seconds: dict[str, list[float]] = field(default_factory=dict)
    outputs: dict[str, Any] = field(default_factory=dict)

    def best(self, name: str) -> float:
        return min(self.seconds[name])

    def ratios(self, slower: str, faster: str) -> list[float]:
        """Per round: `slower`'s time over `faster`'s."""
        return [s / f for s, f in zip(self.seconds[slower], self.seconds[faster])]

    def median_ratio(self, slower: str, faster: str) -> float:
        return statistics.median(self.ratios(slower, faster))

    def listed(self, name: str) -> str:
        return ", ".join(f"{t:.2f}" for t in self.seconds[name])


def add_rounds_argument(parser: argparse.ArgumentParser, default: int, what: str) -> None:
    """--rounds (also --repeats, its former name): how many rounds `in_turn` runs, at least one."""
    def rounds(text: str) -> int:
        if not text.isdigit() or int(text) < 1:
            raise argparse.ArgumentTypeError(f"expected a whole number of rounds, at least 1, got {text!r}")
        return int(text)

    parser.add_argument("--rounds", "--repeats", type=rounds, default=default,
                        help=f"rounds of {what} (default {default}; --repeats: the option's former name)")


def in_turn(variants: dict[str, Callable[[], Any]], rounds: int, warmup: int = 1) -> Timings:
    """Runs every variant `warmup` times untimed (first-touch memory, one-time setup), then
    `rounds` rounds of one timed run of each variant in turn."""
    timings = Timings({name: [] for name in variants})
    for _ in range(warmup):
        for run in variants.values():
            run()
    for _ in range(rounds):
        for name, run in variants.items():
            start = time.perf_counter()
            timings.outputs[name] = run()
            timings.seconds[name].append(time.perf_counter() - start)
    return timings
