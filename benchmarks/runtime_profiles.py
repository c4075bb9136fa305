"""Profiles of one run in onnxruntime and in torch, read into the same kinds of work: matrix products
(with their FLOPs), depthwise convs, and everything else. Used by onnx_profile.py; no side effects."""
from __future__ import annotations

import json
import math
import os
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from timing import Timings

ONNX_PRODUCTS = frozenset({"MatMul", "FusedMatMul", "Gemm"})
ONNX_CONTAINERS = frozenset({"Scan", "Loop", "If"})  # their time is their nodes' and their own overhead
TORCH_LINEAR = "mkldnn::_linear_pointwise"  # the fp32 projections through oneDNN (model/projection.py)
TORCH_PRODUCTS = frozenset({"aten::mm", "aten::bmm", "aten::addmm", "aten::addmm_", "aten::baddbmm",
                            "aten::baddbmm_", "aten::addbmm", TORCH_LINEAR})
KINDS = ("matrix products", "depthwise convs", "everything else")


@dataclass
class Profile:
    """One runtime's profiled chunk: wall seconds, seconds by kind (`KINDS`), the products' FLOPs,
    and per product shape [calls, seconds, FLOPs]."""

    wall: float
    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(KINDS, 0.0))
    shapes: dict[str, list[float]] = field(default_factory=dict)

    @property
    def flops(self) -> float:
        return sum(flops for _, _, flops in self.shapes.values())

    def add(self, kind: str, seconds: float, shape: str = "", flops: float = 0.0, calls: int = 1) -> None:
        self.seconds[kind] += seconds
        if kind == "matrix products":
            totals = self.shapes.setdefault(shape, [0, 0.0, 0.0])
            totals[0] += calls
            totals[1] += seconds
            totals[2] += flops

    def finish(self) -> Profile:
        """Everything the kinds' ops did not take (a container's own work, the executor, Python) counts
        as everything else."""
        self.seconds["everything else"] += max(0.0, self.wall - sum(self.seconds.values()))
        return self

    def rate(self) -> float:
        """The products' GFLOP/s."""
        return self.flops / self.seconds["matrix products"] / 1e9 if self.seconds["matrix products"] else math.nan


def onnx_product_flops(inputs: Sequence[Sequence[int]], output: Sequence[int]) -> float:
    """2 M N K of a MatMul-like node from the shapes onnxruntime's profiler records: the output is
    (..., M, N); the first input, A, whichever way it is transposed, holds batch x M x K elements, its
    batch being its own leading axes (a prepacked constant B is not listed)."""
    a, m = inputs[0], output[-2]
    k = math.prod(a) // (math.prod(a[:-2]) * m)
    return 2.0 * math.prod(output) * k


def onnxruntime_profile(path: str | os.PathLike) -> Profile:
    """The last `model_run` of an onnxruntime profile (the JSON file its `end_profiling` names)."""
    with open(path) as f:
        try:
            events = json.load(f)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path} is not JSON, as an onnxruntime profile is: {error}") from None
    runs = [e for e in events if e.get("name") == "model_run"]
    if not runs:
        raise ValueError(f"{path} has no model_run event: not an onnxruntime profile of a run")
    run = runs[-1]
    profile = Profile(wall=run["dur"] / 1e6)
    for event in events:
        if event.get("cat") != "Node" or not event["name"].endswith("_kernel_time") or event["ts"] < run["ts"]:
            continue
        args = event["args"]
        op = args["op_name"]
        if op in ONNX_CONTAINERS:
            continue
        seconds = event["dur"] / 1e6
        if op in ONNX_PRODUCTS:
            inputs = [next(iter(d.values())) for d in args["input_type_shape"]]
            output = next(iter(args["output_type_shape"][0].values()))
            shape = f"{op} {' x '.join(str(tuple(s)) for s in inputs)} -> {tuple(output)}"
            profile.add("matrix products", seconds, shape, onnx_product_flops(inputs, output))
        else:
            profile.add("depthwise convs" if op == "Conv" else "everything else", seconds)
    return profile.finish()


def torch_product_flops(input_shapes: Sequence[Sequence[int]], op: str = "aten::mm") -> float:
    """2 x multiply-adds of mm/bmm/addmm/baddbmm from their recorded input shapes: the last two
    matrices, (..., M, K) and (..., K, N); of oneDNN's linear, x (M, K) and its weight (N, K)."""
    if op == TORCH_LINEAR:
        x, weight = input_shapes[:2]
        return 2.0 * math.prod(x) * weight[0]
    a, b = [s for s in input_shapes if len(s) >= 2][-2:]
    return 2.0 * math.prod(a) * b[-1]


def torch_profile(averages: Iterable, wall: float) -> Profile:
    """From torch.profiler's `key_averages(group_by_input_shape=True)` of one forward of `wall` seconds."""
    profile = Profile(wall=wall)
    for event in averages:
        seconds = event.self_cpu_time_total / 1e6
        if event.key in TORCH_PRODUCTS:
            shapes = [list(s) for s in event.input_shapes]
            flops = torch_product_flops(shapes, event.key) * event.count
            label = f"{event.key} {' x '.join(str(tuple(s)) for s in shapes if len(s) >= 2)}"
            profile.add("matrix products", seconds, label, flops, calls=event.count)
        else:
            profile.add("depthwise convs" if "convolution" in event.key else "everything else", seconds)
    return profile.finish()


def report(profiles: dict[str, Profile], timings: Timings, top: int) -> None:
    """Prints the two profiles side by side, each one's `top` costliest product shapes, the unprofiled
    rounds of `timings` (the same two names), and how much of the gap the first's products' rate makes."""
    names = list(profiles)
    print(f"one chunk each, profiled:\n{'':18s}" + "".join(f"{name:>34s}" for name in names))
    for kind in KINDS:
        cells = []
        for profile in profiles.values():
            extra = (f" ({profile.flops / 1e9:,.0f} GFLOP, {profile.rate():.0f} GF/s)"
                     if kind == "matrix products" else "")
            cells.append(f"{profile.seconds[kind]:.2f} s{extra}")
        print(f"{kind:18s}" + "".join(f"{cell:>34s}" for cell in cells))
    print(f"{'whole chunk':18s}" + "".join(f"{f'{p.wall:.2f} s':>34s}" for p in profiles.values()))
    for name, profile in profiles.items():
        print(f"{name}: largest products (calls, seconds, GFLOP/s)")
        for shape, (calls, seconds, flops) in sorted(profile.shapes.items(), key=lambda kv: -kv[1][1])[:top]:
            print(f"  {shape}: {calls:.0f}, {seconds:.2f} s, {flops / seconds / 1e9 if seconds else math.nan:.0f}")
    ours, theirs = profiles[names[0]], profiles[names[1]]
    at_their_rate = ours.flops / theirs.rate() / 1e9
    gaps = [a - b for a, b in zip(timings.seconds[names[0]], timings.seconds[names[1]])]
    print(f"unprofiled, in turn: {names[0]} {timings.listed(names[0])} s, {names[1]} {timings.listed(names[1])} s; "
          f"median ratio {timings.median_ratio(names[0], names[1]):.3f}, gap {statistics.median(gaps):+.2f} s")
    print(f"{names[0]}'s products at {names[1]}'s rate would take {at_their_rate:.2f} s instead of "
          f"{ours.seconds['matrix products']:.2f} s: {ours.seconds['matrix products'] - at_their_rate:+.2f} s of that gap "
          f"is the GEMM kernels' speed (MLAS against torch's), the rest the graph's other work")
