"""The tuned chunked SSD scan and its plain reference form against the recurrence they must equal."""
from __future__ import annotations

import importlib

import pytest
import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from bsmamba2_plugin.metrics import usdr
from bsmamba2_plugin.model.ssd import (
    GRAPH_BLOCK_BYTES, LOG_DECAY_FLOOR, _decay, padded_length, sequences_per_block, ssd_chunked, ssd_graph,
    ssd_reference, ssd_sequential,
)


def scan_inputs(length: int, batch: int = 2, heads: int = 4, headdim: int = 8, groups: int = 2, d_state: int = 16,
                dtype: torch.dtype = torch.float64, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    dt = F.softplus(torch.randn(batch, length, heads, generator=g, dtype=dtype) - 2)
    A = -(torch.rand(heads, generator=g, dtype=dtype) * 15 + 1)  # mamba's A_init_range (1, 16)
    x = torch.randn(batch, length, heads, headdim, generator=g, dtype=dtype) * dt.unsqueeze(-1)
    B = torch.randn(batch, length, groups, d_state, generator=g, dtype=dtype)
    C = torch.randn(batch, length, groups, d_state, generator=g, dtype=dtype)
    return x, dt * A, B, C


@pytest.mark.parametrize("length", [1, 7, 255, 256, 257, 801])
@pytest.mark.parametrize("chunk_size", [16, 48, 64, 256])
def test_chunked_scan_equals_sequential_recurrence(length: int, chunk_size: int) -> None:
    x, a, B, C = scan_inputs(length)
    expected = ssd_sequential(x, a, B, C)
    got = ssd_chunked(x, a, B, C, chunk_size)
    assert got.shape == expected.shape
    relative = ((got - expected).abs().max() / expected.abs().max()).item()
    assert relative < 1e-6, f"L={length} Q={chunk_size}: max relative error {relative:.2e}"


def test_chunk_size_does_not_change_the_result_in_float32() -> None:
    x, a, B, C = scan_inputs(801, dtype=torch.float32)
    reference = ssd_chunked(x, a, B, C, 256)
    for chunk in (32, 64, 128):
        difference = (ssd_chunked(x, a, B, C, chunk) - reference).abs().max() / reference.abs().max()
        assert difference < 5e-5, f"chunk {chunk}: {difference:.1e} of the largest output"


def test_padded_length() -> None:
    assert padded_length(62, 64) == 64  # the band axis: one chunk, rounded to 16
    assert padded_length(801, 64) == 832  # the time axis: whole chunks
    assert padded_length(1, 64) == 16
    assert padded_length(64, 64) == 64
    assert padded_length(801, 64, ragged=True) == 816  # training: 12 chunks of 64 and one of 48
    assert padded_length(62, 64, ragged=True) == 64


@pytest.mark.parametrize("length, chunk_size", [(5, 4), (9, 4), (6, 16)])
def test_gradcheck(length: int, chunk_size: int) -> None:
    x, a, B, C = scan_inputs(length, batch=1, heads=2, headdim=2, groups=1, d_state=3)
    inputs = tuple(t.clone().requires_grad_() for t in (x, a, B, C))
    assert torch.autograd.gradcheck(lambda *t: ssd_chunked(*t, chunk_size), inputs)


@pytest.mark.parametrize("length, chunk_size", [(70, 16), (70, 64), (100, 48)])
def test_gradients_equal_those_of_the_recurrence(length: int, chunk_size: int) -> None:
    """Whole chunks, and a shorter last chunk (64 + 16 steps, 48 + 48 + 16) as training lays them out."""
    x, a, B, C = scan_inputs(length)
    weights = torch.randn(2, length, 4, 8, dtype=torch.float64)
    grads = []
    for scan in (lambda *t: ssd_chunked(*t, chunk_size), ssd_sequential):
        inputs = [t.clone().requires_grad_() for t in (x, a, B, C)]
        (scan(*inputs) * weights).sum().backward()
        grads.append([t.grad for t in inputs])
    for got, expected in zip(*grads):
        torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-9)


def test_no_nan_for_silence_or_extreme_decay() -> None:
    # All-zero input; and decays so strong that an unmasked exp(segsum) would overflow.
    for scale in (0.0, 200.0):
        x, a, B, C = scan_inputs(130, dtype=torch.float32)
        inputs = [(x * 0 if scale == 0 else x).requires_grad_(), (a * scale).requires_grad_(),
                  B.requires_grad_(), C.requires_grad_()]
        y = ssd_chunked(*inputs, 64)
        y.sum().backward()
        assert torch.isfinite(y).all()
        assert all(torch.isfinite(t.grad).all() for t in inputs)


def test_decays_below_the_floor_are_zero_and_strong_decays_stay_exact() -> None:
    """Decays under exp(LOG_DECAY_FLOOR) are taken as none, so that no denormal float reaches the scan's
    products (x86 CPUs run many times slower on them: README, Speed). The result must not move: strongly
    decaying heads, float32, against the float64 recurrence."""
    log_decay = torch.tensor([0.0, -10.0, LOG_DECAY_FLOOR + 1, LOG_DECAY_FLOOR - 1, -200.0, float("-inf")])
    assert torch.equal(_decay(log_decay)[:3], log_decay[:3].exp())
    assert torch.equal(_decay(log_decay)[3:], torch.zeros(3))
    x, a, B, C = scan_inputs(300)
    a = a * 4  # -2 to -11 per step on average by head: float32's smallest normal, exp(-87), within a chunk
    expected = ssd_sequential(x, a, B, C)
    inputs = [t.float() for t in (x, a, B, C)]
    with torch.no_grad():
        inference = ssd_chunked(*inputs, 64)
    differentiable = ssd_chunked(*(t.requires_grad_() for t in inputs), 64)
    for got in (inference, differentiable.detach()):
        assert ((got.double() - expected).abs().max() / expected.abs().max()).item() < 1e-5


@pytest.mark.parametrize("length", [1, 7, 256, 257, 801])
@pytest.mark.parametrize("chunk_size", [16, 64])
def test_reference_form_equals_the_recurrence_and_the_tuned_scan(length: int, chunk_size: int) -> None:
    x, a, B, C = scan_inputs(length)
    expected = ssd_sequential(x, a, B, C)
    reference = ssd_reference(x, a, B, C, chunk_size)
    assert reference.shape == expected.shape
    assert ((reference - expected).abs().max() / expected.abs().max()).item() < 1e-6
    with torch.no_grad():  # the tuned scan's in-place inference path
        tuned = ssd_chunked(x, a, B, C, chunk_size)
    assert ((tuned - reference).abs().max() / reference.abs().max()).item() < 1e-9


def test_reference_form_gradients_are_finite_and_exact() -> None:
    x, a, B, C = (t.requires_grad_() for t in scan_inputs(40, batch=1, heads=2, headdim=3, groups=1, d_state=4))
    assert torch.autograd.gradcheck(lambda *args: ssd_reference(*args, chunk_size=16), (x, a, B, C))
    # Extreme decays: the masked upper triangle must not turn into NaN gradients.
    big = (a * 1e4).detach().requires_grad_()
    ssd_reference(x, big, B, C, 16).sum().backward()
    assert all(torch.isfinite(t.grad).all() for t in (x, big, B, C))


def raw_scan_inputs(length: int, batch: int = 2, heads: int = 4, groups: int = 2, dtype: torch.dtype = torch.float64,
                    seed: int = 1):
    """(x, a, B, C, dt, D) as the mixer passes them: x not yet times dt, D one skip per sequence and head."""
    x_dt, _, B, C = scan_inputs(length, batch=batch, heads=heads, groups=groups, dtype=dtype, seed=seed)
    g = torch.Generator().manual_seed(seed + 100)
    dt = F.softplus(torch.randn(batch, length, heads, generator=g, dtype=dtype) - 2)
    x = torch.randn(x_dt.shape, generator=g, dtype=dtype)
    a = dt * -(torch.rand(heads, generator=g, dtype=dtype) * 15 + 1)  # mamba's A_init_range (1, 16)
    D = torch.randn(batch, heads, generator=g, dtype=dtype)
    return x, a, B, C, dt, D


def folded_by_hand(x, a, B, C, dt, D):
    return ssd_sequential(x * dt.unsqueeze(-1), a, B, C) + x * D[:, None, :, None]


@pytest.mark.parametrize("length", [1, 7, 64, 257, 801])
@pytest.mark.parametrize("groups", [1, 2])
def test_step_sizes_and_skip_folded_into_the_scan(length: int, groups: int) -> None:
    x, a, B, C, dt, D = raw_scan_inputs(length, groups=groups)
    expected = folded_by_hand(x, a, B, C, dt, D)
    with torch.no_grad():
        inference = ssd_chunked(x, a, B, C, 64, dt=dt, D=D)
        one_D = ssd_chunked(x, a, B, C, 64, dt=dt, D=D[0])  # (h,): the same skip for every sequence
    inputs = [t.clone().requires_grad_() for t in (x, a, B, C, dt, D)]
    differentiable = ssd_chunked(*inputs[:4], 64, dt=inputs[4], D=inputs[5])
    for got in (inference, differentiable):
        assert got.shape == expected.shape
        assert ((got - expected).abs().max() / expected.abs().max()).item() < 1e-9
    same_D = folded_by_hand(x, a, B, C, dt, D[:1].expand_as(D))
    assert ((one_D - same_D).abs().max() / same_D.abs().max()).item() < 1e-9


def channels_first(t: torch.Tensor) -> torch.Tensor:
    """(b, l, ...) -> (b, ..., l), the layout `ssd_graph` takes."""
    return t.movedim(1, -1)


def time_major(y: torch.Tensor, length: int) -> torch.Tensor:
    """`ssd_graph`'s blocks of chunk-major output (r, c, k, h, p, q) -> (b, l, h, p), the padding dropped."""
    r, c, k, h, p, q = y.shape
    return y.permute(0, 2, 1, 5, 3, 4).reshape(r * k, c * q, h, p)[:, :length]


@pytest.mark.parametrize("length", [1, 7, 64, 257, 801])
@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize("chunk_size", [16, 64])
@pytest.mark.parametrize("block", [None, 2])  # None: the 4 sequences in one block (small); 2: two blocks
def test_graph_form_equals_the_recurrence(length: int, groups: int, chunk_size: int, block: int | None) -> None:
    """The form the ONNX export traces: channels first, dt, D and the gate folded in, in blocks of sequences."""
    x, a, B, C, dt, D = raw_scan_inputs(length, batch=4, groups=groups)
    D = D[0]  # the mixer's skip: one per head
    z = torch.randn(x.shape, generator=torch.Generator().manual_seed(9), dtype=x.dtype)
    expected = folded_by_hand(x, a, B, C, dt, D.expand(x.shape[0], -1)) * F.silu(z)
    got = ssd_graph(*(channels_first(t) for t in (x, a, B, C)), chunk_size, dt=channels_first(dt), D=D,
                    z=channels_first(z), block=block)
    chunks = -(-length // chunk_size) if length > chunk_size else 1
    blocks, per_block = (1, 4) if block is None else (2, 2)
    assert got.shape[:5] == (blocks, chunks, per_block, *channels_first(expected).shape[1:3])  # (r, c, k, h, p, q)
    got = time_major(got, length)
    assert got.shape == expected.shape
    assert ((got - expected).abs().max() / expected.abs().max()).item() < 1e-9


def loop_scan(combine, init, xs):
    """torch's scan as a Python loop, so that every op inside runs eagerly (torch's own compiles its body)."""
    carry, ys = init, []
    for index in range(xs[0].shape[0]):
        carry, y = combine(carry, tuple(t[index] for t in xs))
        ys.append(y)
    return carry, torch.stack(ys)


class DenormalsSeen(TorchFunctionMode):
    """Names the torch functions whose float results hold denormal numbers."""

    def __init__(self) -> None:
        super().__init__()
        self.functions: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor) and t.is_floating_point():
                if ((t != 0) & (t.abs() < torch.finfo(t.dtype).tiny)).any():
                    self.functions.append(getattr(func, "__name__", str(func)))
        return out


def test_graph_form_makes_no_denormals_for_strong_decays(monkeypatch: pytest.MonkeyPatch) -> None:
    """The graph form floors its decays at exp(LOG_DECAY_FLOOR) (README, ONNX): with strongly decaying heads
    none of its results in float32 is denormal, and the output still matches the float64 recurrence. The
    Scans run as a Python loop here (`loop_scan`), so that every op is seen."""
    monkeypatch.setattr(importlib.import_module("torch._higher_order_ops.scan"), "scan", loop_scan)
    x, a, B, C, dt, D = raw_scan_inputs(300, batch=4, groups=1)
    a = a * 4  # as in test_decays_below_the_floor_are_zero_and_strong_decays_stay_exact
    z = torch.randn(x.shape, generator=torch.Generator().manual_seed(9), dtype=x.dtype)
    expected = folded_by_hand(x, a, B, C, dt, D[0].expand(4, -1)) * F.silu(z)
    with DenormalsSeen() as seen:
        got = ssd_graph(*(channels_first(t.float()) for t in (x, a, B, C)), 64, dt=channels_first(dt.float()),
                        D=D[0].float(), z=channels_first(z.float()), block=2)
    assert seen.functions == []
    got = time_major(got, 300).double()
    assert ((got - expected).abs().max() / expected.abs().max()).item() < 1e-5


def test_graph_blocks_divide_the_sequences() -> None:
    """Blocks of about GRAPH_BLOCK_BYTES, a divisor of the sequence count, else all sequences at once."""
    per_sequence = GRAPH_BLOCK_BYTES // 8  # eight sequences a block
    assert sequences_per_block(62 * 8, per_sequence) == 8
    assert sequences_per_block(801, per_sequence) == 9  # 801 = 9 x 89: the divisor nearest 8
    assert sequences_per_block(101, per_sequence) == 101  # prime: blocks of one would be 101 small steps
    assert sequences_per_block(20, per_sequence) == 20  # few: one block
    assert sequences_per_block(62, GRAPH_BLOCK_BYTES // 2) == 2


def test_gradcheck_with_step_sizes_and_skip() -> None:
    x, a, B, C, dt, D = raw_scan_inputs(9, batch=1, heads=2, groups=1)
    inputs = tuple(t[..., :2].clone().requires_grad_() if t is x else t.clone().requires_grad_()
                   for t in (x, a, B, C, dt, D))
    assert torch.autograd.gradcheck(lambda x, a, B, C, dt, D: ssd_chunked(x, a, B, C, 4, dt=dt, D=D), inputs)


def test_zero_step_sizes_give_no_nan() -> None:
    # softplus underflows to exactly 0 for very negative dt: log(dt) = -inf must decay to 0, not NaN.
    x, a, B, C, dt, D = raw_scan_inputs(200, dtype=torch.float32)
    dt[:, ::3] = 0.0
    a = a * (dt > 0)
    with torch.no_grad():
        got = ssd_chunked(x, a, B, C, 64, dt=dt, D=D)
    expected = folded_by_hand(*(t.double() for t in (x, a, B, C, dt, D)))
    assert torch.isfinite(got).all()
    assert ((got - expected).abs().max() / expected.abs().max()).item() < 1e-4
    z = torch.full_like(x, 30.0)  # silu(z) = z: the graph form's gate out of the way
    graph = time_major(ssd_graph(*(channels_first(t) for t in (x, a, B, C)), 64, dt=channels_first(dt), D=D[0],
                                 z=channels_first(z)), x.shape[1]) / 30.0
    expected = folded_by_hand(*(t.double() for t in (x, a, B, C, dt, D[:1].expand_as(D))))
    assert torch.isfinite(graph).all()
    assert ((graph - expected).abs().max() / expected.abs().max()).item() < 1e-4


def sdr_db(reference: torch.Tensor, estimate: torch.Tensor) -> float:
    """The package's uSDR over all elements."""
    return usdr(*(t.detach().double().reshape(1, -1).numpy() for t in (reference, estimate)))


@pytest.mark.parametrize("length", [62, 801])  # the band axis (one chunk) and the time axis (13 chunks)
def test_bf16_products_stay_close_to_the_exact_scan(length: int) -> None:
    # Under bf16 autocast the mixer passes bf16 x, B, C (decays, dt and D stay fp32): the products and
    # the carried state are bf16 as in mamba-ssm's kernels, in inference and in training. The bound is
    # the paper model's, 35 dB; the ragged layout of training (801 -> 816 steps) is covered too.
    x, a, B, C, dt, D = raw_scan_inputs(length, batch=3, heads=4, groups=1, dtype=torch.float32)
    B, C = B * 16**-0.5, C * 16**-0.5  # unit-scale C . B, as after the conv's SiLU
    exact = [t.double().requires_grad_() for t in (x, a, B, C, dt, D)]
    expected = folded_by_hand(*exact)
    with torch.no_grad():
        got = ssd_chunked(x.bfloat16(), a, B.bfloat16(), C.bfloat16(), 64, dt=dt, D=D)
        fp32 = ssd_chunked(x, a, B, C, 64, dt=dt, D=D)
    assert got.dtype == torch.bfloat16 and torch.isfinite(got).all()
    assert sdr_db(expected, fp32) > 100
    assert sdr_db(expected, got) > 35, f"bf16 products: {sdr_db(expected, got):.1f} dB from the exact scan"

    leaves = [t.clone().requires_grad_() for t in (x.bfloat16(), a, B.bfloat16(), C.bfloat16(), dt, D)]
    trained = ssd_chunked(*leaves[:4], 64, dt=leaves[4], D=leaves[5])
    assert trained.dtype == torch.bfloat16
    assert sdr_db(expected, trained) > 35, f"differentiable: {sdr_db(expected, trained):.1f} dB"
    weights = torch.randn(expected.shape, generator=torch.Generator().manual_seed(3))
    (expected * weights.double()).sum().backward()
    (trained.float() * weights).sum().backward()
    for name, leaf, reference in zip("x a B C dt D".split(), leaves, exact):
        assert leaf.grad.dtype == leaf.dtype and torch.isfinite(leaf.grad).all()
        agreement = sdr_db(reference.grad, leaf.grad)
        assert agreement > 40, f"gradient of {name}: {agreement:.1f} dB from the exact scan's"


@pytest.mark.parametrize("length", [7, 64, 801])
def test_gate_applied_inside_the_scan(length: int) -> None:
    """z (as mamba-ssm's chunk scan's): y * silu(z), on the inference and the differentiable path."""
    x, a, B, C, dt, D = raw_scan_inputs(length)
    z = torch.randn(x.shape, generator=torch.Generator().manual_seed(7), dtype=x.dtype)
    expected = folded_by_hand(x, a, B, C, dt, D) * F.silu(z)
    with torch.no_grad():
        inference = ssd_chunked(x, a, B, C, 64, dt=dt, D=D, z=z)
    inputs = [t.clone().requires_grad_() for t in (x, a, B, C, dt, D, z)]
    differentiable = ssd_chunked(*inputs[:4], 64, dt=inputs[4], D=inputs[5], z=inputs[6])
    for got in (inference, differentiable):
        assert ((got - expected).abs().max() / expected.abs().max()).item() < 1e-9


def test_gradient_reaches_the_gate_alone() -> None:
    x, a, B, C, dt, D = raw_scan_inputs(70)
    z = torch.randn(x.shape, dtype=x.dtype, requires_grad=True)
    ssd_chunked(x, a, B, C, 16, dt=dt, D=D, z=z).sum().backward()
    assert z.grad is not None and z.grad.abs().sum() > 0
