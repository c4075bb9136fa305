"""The SSD scan of Mamba2 (Dao & Gu 2024), in plain PyTorch.

For every head the scan computes, with a_t = dt_t * A the (negative) log decay of step t,

    h_t = exp(a_t) * h_{t-1} + B_t (dt_t x_t)^T        (state: d_state x headdim)
    y_t = C_t^T h_t + D x_t

`ssd_chunked` evaluates it as mamba's `ssd_minimal.py` does: the sequence is cut into chunks
of Q steps; inside a chunk the recurrence is a masked (Q x Q) matrix product, between chunks
only the (d_state x headdim) state is carried. The decays (cumulative sums of a and their
exponentials) are always float32: they are products of many factors below one. The matrix
products take x's dtype, so under bf16 autocast they run on bf16 operands, in training as in
inference, as in mamba-ssm's kernels.
`ssd_reference` is the same chunked algorithm in its plain form, every chunk at once, named as
in the paper (L = exp(segsum(A)), Y = (L o C B^T) X inside a chunk, states passed between
chunks), with no Python loop over heads or chunks. `ssd_graph` is the chunk-by-chunk algorithm
as the ONNX export traces it, channels first in and chunk-major out: the loops over blocks of
sequences and over chunks `scan`s (ONNX Scan nodes), heads batched, so the graph grows with none of
them. `ssd_sequential` is the recurrence as a loop: the reference the tests hold the three chunked
forms to, and the baseline of the speed benchmark.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor


def _pad_time(t: Tensor, pad: int) -> Tensor:
    # Zero steps at the end change nothing before them: a = 0 is no decay, x = 0 no input.
    return t if pad == 0 else F.pad(t, (0, 0) * (t.dim() - 2) + (0, pad))


def needs_gradients(*tensors: Tensor | None) -> bool:
    """Whether autograd records work on these tensors: the choice between the differentiable scan
    and the in-place inference one, which its callers lay their input out for."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def padded_length(length: int, chunk_size: int, ragged: bool = False) -> int:
    """The length the scan works on: whole chunks, or one chunk rounded up to 16 steps
    (odd matrix sizes such as 62 x 62 run at a quarter of the speed of 64 x 64 on CPU).
    ragged: the differentiable scan's layout, whose last chunk may be shorter: 16 steps at a time."""
    if length > chunk_size and not ragged:
        return -(-length // chunk_size) * chunk_size
    return -(-length // 16) * 16


def chunk_layout(length: int, chunk_size: int) -> tuple[int, int, int]:
    """(padded length, chunk length q, chunk count c) of a scan over `length` steps."""
    padded = padded_length(length, chunk_size)
    q = min(padded, chunk_size)
    return padded, q, padded // q


def ssd_chunked(x: Tensor, a: Tensor, B: Tensor, C: Tensor, chunk_size: int,
                dt: Tensor | None = None, D: Tensor | None = None, z: Tensor | None = None) -> Tensor:
    """Chunked SSD scan.

    x: (b, l, h, p) inputs, times dt unless `dt` is given; a: (b, l, h) log decays dt * A (<= 0);
    B, C: (b, l, g, n), each group's B and C shared by h / g heads; dt: (b, l, h) step sizes (> 0)
    for raw x; D: (h,) or (b, h) skip, y += D x; z: (b, l, h, p) gate, y * silu(z) (as the z of
    mamba-ssm's chunk scan). Returns y: (b, l, h, p) in x's dtype.
    A sequence no longer than `chunk_size` is one chunk: no state to carry, which keeps the
    short band axis cheap. Input of `padded_length` needs no padding copy here.
    The matrix products run in x's dtype (bf16 under autocast, see `_scan_inference`), with or
    without gradients; the decays in a's.
    """
    if not needs_gradients(x, a, B, C, dt, D, z):
        return _scan_inference(x, a, B, C, chunk_size, dt, D, z)
    products = x.dtype
    y = _scan_differentiable(x if dt is None else x * dt.unsqueeze(-1).to(products), a, B, C, chunk_size)
    y = y if D is None else torch.addcmul(y, x, D.reshape(-1, 1, x.shape[2], 1).to(products))
    return y if z is None else y * F.silu(z.to(products))


# Decays below exp(-60) ~ 1e-26 count as none: against float32 sums of terms near one they are zero,
# and the products of smaller ones fall into the denormal range (below 1.2e-38), where x86 CPUs run
# many times slower. Strongly decaying heads reach it within a chunk (exp(-88) after 64 steps of
# dt A = -1.4): the state's product into those values ran 10x slower, the whole time-axis scan 3x.
# In the PyTorch scans the per-step and per-chunk decays become zero there (`_decay`); the score
# matrices' exponents are clamped to the floor by the clamp that bounds them above, one pass for both.
# The ONNX graph clamps every exponent to the floor (a Clip before each Exp, no Where): a decay that
# small weighs exp(-60) instead of nothing, and a session without denormals-as-zero runs as fast.
LOG_DECAY_FLOOR = -60.0


def _decay(log_decay: Tensor) -> Tensor:
    """exp(log_decay), zero below exp(LOG_DECAY_FLOOR) (for the small per-step and per-chunk decays)."""
    return torch.exp(log_decay).masked_fill(log_decay < LOG_DECAY_FLOOR, 0.0)


# Sequences per step of `_scan_inference`, chosen so that a step's (heads x Q x Q) decays stay in
# the CPU's cache (4 MiB of float32) through the four passes over them. Swept at 1/2/4/8 MiB (the
# scan alone, paper shapes, medians in turn): on a 2-core AMX Xeon (2 MB L2 a core) 4 MiB was within
# 2.5 % of the best in both dtypes and 1 MiB 3-18 % slower; on a Zen 4 EPYC (1 MB L2) 1 MiB ran the
# time axis 12 % faster in float32 but 4 MiB was best in bf16. One size for all: the float32 gain
# there is 2.5 % of a forward, and no rule per cache could be checked on the CPUs it would be for.
SCAN_BLOCK_BYTES = 4 << 20


def _scan_inference(x: Tensor, a: Tensor, B: Tensor, C: Tensor, chunk_size: int,
                    dt: Tensor | None, D: Tensor | None, z: Tensor | None) -> Tensor:
    """`ssd_chunked` without gradients, for speed on CPU.

    The cumulative decays and their exponentials are float32 whatever x's dtype. The products and
    what they read (the decay-weighted scores, x, B, C, the carried state) are in x's dtype, as in
    mamba-ssm's Triton kernels under autocast, which cast the scores and states to bf16 for the dot
    products; the products accumulate in float32 inside the matrix kernels either way. For bf16 the
    state between chunks is held in bf16 too: on CPU there is no bf16 product with a float32
    result, and adding a bf16 product into a float32 state costs more than the product.
    dt goes into the exponent (exp(a_t - a_s + log dt_s)) and D onto the scores' diagonal, which
    spares two passes over the (l x h x p) activations, and the gate applies to each block of y
    while it is in cache. The work goes in blocks of sequences, chunk by chunk, so that each
    step's temporaries stay in cache.
    """
    b, l, h, p = x.shape
    g, n = B.shape[-2:]
    hg = h // g  # heads per group
    padded, q, c = chunk_layout(l, chunk_size)
    x, a, B, C = (_pad_time(t, padded - l) for t in (x, a, B, C))
    products = x.dtype
    a_cum = a.view(b, c, q, h).cumsum(2)  # (b c q h)
    # exp(a_cum_t - a_from_s) is the decay from s to t times dt_s; padded steps have dt = 0, decay 0.
    a_from = a_cum if dt is None else a_cum - _pad_time(dt, padded - l).view(b, c, q, h).log()
    a_cum_hq = a_cum.transpose(2, 3).contiguous()  # (b c h q)
    a_from_hq = a_from.transpose(2, 3).contiguous()
    to_end = _decay(a_cum[:, :, -1:] - a_from).to(products).unsqueeze(-1)  # (b c q h 1): s to chunk end
    decay_in = _decay(a_cum).to(products).unsqueeze(-1)  # (b c q h 1): chunk start to t
    chunk_decay = _decay(a_cum[:, :, -1]).to(products).view(b, c, g, 1, hg, 1)
    skip = None if D is None else D.to(a_cum.dtype).expand(b, h)[..., None]  # (b h 1)

    Bc = B.view(b, c, q, g, n).transpose(2, 3)  # (b c g q n)
    Cc = C.view(b, c, q, g, n).transpose(2, 3)
    # C_t . B_s is shared by the heads of a group; the causal mask goes on it (hg times fewer
    # entries than the per-head scores). Above the diagonal the exponent is positive: clamped to a
    # finite exp there, which the zero of CB cancels; below, to LOG_DECAY_FLOOR.
    causal = torch.ones(q, q, dtype=torch.bool, device=x.device).tril()
    CB = (Cc @ Bc.transpose(-1, -2)).masked_fill_(~causal, 0.0).to(a_cum.dtype).unsqueeze(3)  # (b c g 1 q_t q_s)
    xc = x.view(b, c, q, h, p)
    x_heads = xc.transpose(2, 3).contiguous()  # (b c h q p): one product for all heads of a chunk
    gates = None if z is None else _pad_time(z, padded - l).view(b, c, q, h, p)
    y = x.new_empty(b, c, q, h, p)

    # The scores are formed in float32 and rounded once for the product: four float32 passes and a
    # cast ran 30 % faster than the same passes in bf16 (bf16 elementwise ops convert inside).
    block = max(1, SCAN_BLOCK_BYTES // (h * q * q * 4)) if x.device.type == "cpu" else b  # a GPU: one launch each
    decays = a_cum.new_empty(min(block, b), h, q, q)
    scores = x.new_empty(decays.shape) if products != decays.dtype else decays
    for start in range(0, b, block):
        rows = slice(start, min(start + block, b))
        k = rows.stop - rows.start
        decays_k, scores_k = decays[:k], scores[:k]
        state = x.new_zeros(k, g, n, hg * p) if c > 1 else None  # per group: d_state x (heads x headdim)
        for j in range(c):
            # 1. Inside the chunk: y_t = sum_{s<=t} (C_t . B_s) exp(a_cum_t - a_cum_s) dt_s x_s + D x_t.
            torch.sub(a_cum_hq[rows, j, :, :, None], a_from_hq[rows, j, :, None, :], out=decays_k)  # (k h q_t q_s)
            decays_k.clamp_(LOG_DECAY_FLOOR, 80.0).exp_().view(k, g, hg, q, q).mul_(CB[rows, j])
            if skip is not None:
                decays_k.diagonal(dim1=-2, dim2=-1).add_(skip[rows])
            if scores_k is not decays_k:
                scores_k.copy_(decays_k)
            inside = torch.bmm(scores_k.view(k * h, q, q), x_heads[rows, j].reshape(k * h, q, p))
            inside = inside.view(k, h, q, p).transpose(1, 2)  # (k q h p)

            # 2. From the chunks before: C_t^T state exp(a_cum_t), the state carried chunk by chunk.
            y_j = y[rows, j]  # (k q h p)
            gate = None if gates is None else F.silu(gates[rows, j]).to(products)
            if j > 0:
                carried = (Cc[rows, j] @ state).view(k, g, q, hg, p).transpose(1, 2).reshape(k, q, h, p)
                torch.addcmul(inside, carried, decay_in[rows, j], out=y_j)
                if gate is not None:
                    y_j.mul_(gate)
            elif gate is not None:  # gated as it leaves the product's layout: one pass, not a copy and a pass
                torch.mul(inside, gate, out=y_j)
            else:
                y_j.copy_(inside)

            if j < c - 1:  # state at the chunk's end: decayed old state plus B^T (x decayed to the end)
                weighted = (xc[rows, j] * to_end[rows, j]).view(k, q, g, hg * p).transpose(1, 2)
                state.view(k, g, n, hg, p).mul_(chunk_decay[rows, j])
                state.view(k * g, n, hg * p).baddbmm_(Bc[rows, j].transpose(-1, -2).reshape(k * g, n, q),
                                                      weighted.reshape(k * g, q, hg * p))
    return y.view(b, c * q, h, p)[:, :l]


def _scan_differentiable(x: Tensor, a: Tensor, B: Tensor, C: Tensor, chunk_size: int) -> Tensor:
    """`ssd_chunked` for autograd (x times dt), chunk by chunk with no in-place writes.
    The last chunk may be shorter (`padded_length(..., ragged=True)`): the padding steps of whole
    chunks would cost as much as real ones, forward and backward.
    As in `_scan_inference` and mamba-ssm's kernels, the products and what they read (the decayed
    scores, x, B, C, the carried state) are in x's dtype and the decays in a's (float32); C . B,
    a product, is rounded to x's dtype once more than in mamba-ssm, which keeps it in float32."""
    b, l, h, p = x.shape
    g, n = B.shape[-2:]
    hg = h // g
    products, decays = x.dtype, a.dtype
    padded = padded_length(l, chunk_size, ragged=True)
    x, a, B, C = (_pad_time(t, padded - l) for t in (x, a, B, C))
    sizes = [chunk_size] * (padded // chunk_size) + ([padded % chunk_size] if padded % chunk_size else [])
    # The chunks as separate tensors: the backward of indexing chunk j fills a zero tensor of all
    # chunks (quadratic in the length); a split's backward is one concatenation.
    chunks = zip(*(t.split(sizes, dim=1) if len(sizes) > 1 else (t,) for t in (x, a, B, C)))

    y_chunks = []  # in-place writes into one y would make autograd copy all of y per chunk
    state = None  # (b g n hg*p): per group, d_state x (heads x headdim)
    for j, (x_j, a_j, B_j, C_j) in enumerate(chunks):
        q = x_j.shape[1]
        a_cum = a_j.cumsum(1)  # (b q h)
        a_hq = a_cum.transpose(1, 2).contiguous()  # (b h q)
        B_j, C_j = B_j.transpose(1, 2), C_j.transpose(1, 2)  # (b g q n)
        # Above the diagonal the decay exponent is positive: clamped to 0 there, exp stays finite and
        # the zero of C.B keeps values and gradients clean; below, floored (LOG_DECAY_FLOOR). C_t . B_s
        # is shared by a group's heads.
        causal = torch.ones(q, q, dtype=torch.bool, device=x.device).tril()
        CB = (C_j @ B_j.transpose(-1, -2)).masked_fill(~causal, 0.0)  # (b g q_t q_s), x's dtype
        CB = CB.to(decays).unsqueeze(2)  # (b g 1 q_t q_s)
        segsum = a_hq[..., :, None] - a_hq[..., None, :]  # (b h q_t q_s)
        scores = (segsum.clamp(LOG_DECAY_FLOOR, 0.0).exp().view(b, g, hg, q, q) * CB).view(b * h, q, q).to(products)
        # One product on a head-major copy: autograd's backward of h slices costs more than the copy.
        y_j = torch.bmm(scores, x_j.transpose(1, 2).reshape(b * h, q, p)).view(b, h, q, p).transpose(1, 2)  # (b q h p)
        if state is not None:
            carried = (C_j @ state).view(b, g, q, hg, p).transpose(1, 2).reshape(b, q, h, p)
            y_j = torch.addcmul(y_j, carried, _decay(a_cum).unsqueeze(-1).to(products))
        y_chunks.append(y_j)
        if j < len(sizes) - 1:
            to_end = _decay(a_cum[:, -1:] - a_cum).unsqueeze(-1).to(products)  # (b q h 1)
            weighted = (x_j * to_end).view(b, q, g, hg * p).transpose(1, 2).reshape(b * g, q, hg * p)
            B_t = B_j.transpose(-1, -2).reshape(b * g, n, q)
            if state is None:
                state = torch.bmm(B_t, weighted).view(b, g, n, hg * p)
            else:
                chunk_decay = _decay(a_cum[:, -1]).view(b, g, 1, hg, 1).to(products)
                decayed = (state.view(b, g, n, hg, p) * chunk_decay).view(b * g, n, hg * p)
                state = torch.baddbmm(decayed, B_t, weighted).view(b, g, n, hg * p)
    y = torch.cat(y_chunks, dim=1) if len(y_chunks) > 1 else y_chunks[0]
    return y if padded == l else y[:, :l]


def segsum(a: Tensor) -> Tensor:
    """(..., q) -> (..., q, q): entry (t, s) = a_{s+1} + ... + a_t for s <= t, -inf above the diagonal
    (so that exp gives the causal decay matrix; masked before exp, its gradient stays finite)."""
    q = a.shape[-1]
    cumulative = a.cumsum(-1)
    sums = cumulative[..., :, None] - cumulative[..., None, :]
    causal = torch.ones(q, q, dtype=torch.bool, device=a.device).tril()
    return sums.masked_fill(~causal, float("-inf"))


def ssd_reference(x: Tensor, a: Tensor, B: Tensor, C: Tensor, chunk_size: int) -> Tensor:
    """The chunked SSD scan, all chunks and heads at once (arguments and result as `ssd_chunked`)."""
    b, l, h, p = x.shape
    g, n = B.shape[-2:]
    padded, q, c = chunk_layout(l, chunk_size)
    X, A, B, C = (_pad_time(t, padded - l) for t in (x, a, B, C))
    X = X.view(b, c, q, g, h // g, p).permute(0, 1, 3, 4, 2, 5)  # (b c g hg q p)
    A = A.view(b, c, q, g, h // g).permute(0, 1, 3, 4, 2)  # (b c g hg q)
    B = B.view(b, c, q, g, 1, n).permute(0, 1, 3, 4, 2, 5)  # (b c g 1 q n): one B, C per group
    C = C.view(b, c, q, g, 1, n).permute(0, 1, 3, 4, 2, 5)
    A_cumsum = A.cumsum(-1)

    # 1. Inside each chunk (the diagonal blocks): Y = (L o C B^T) X.
    L = torch.exp(segsum(A))  # (b c g hg q q)
    Y_diag = (L * (C @ B.transpose(-1, -2))) @ X

    # 2. Each chunk's own final state: B^T (X decayed to the chunk's end).
    decay_states = torch.exp(A_cumsum[..., -1:] - A_cumsum)  # (b c g hg q)
    states = B.transpose(-1, -2) @ (X * decay_states[..., None])  # (b c g hg n p)

    # 3. The states passed between chunks: chunk j starts from sum_{i<j} (decay i+1..j-1) state_i.
    chunk_decay = torch.exp(segsum(A_cumsum[..., -1].permute(0, 2, 3, 1)))  # (b g hg c_j c_i)
    into = F.pad(chunk_decay, (0, 0, 1, 0))[..., :-1, :]  # row j: from the chunks before j
    states = (into @ states.permute(0, 2, 3, 1, 4, 5).flatten(-2)).unflatten(-1, (n, p))  # (b g hg c n p)

    # 4. What the carried state gives inside the chunk: exp(A_cumsum_t) C_t^T state.
    Y_off = torch.exp(A_cumsum)[..., None] * (C @ states.permute(0, 3, 1, 2, 4, 5))  # (b c g hg q p)
    Y = (Y_diag + Y_off).permute(0, 1, 4, 2, 3, 5).reshape(b, padded, h, p)
    return Y[:, :l]


# Sequences per iteration of `ssd_graph`'s loop over blocks: a block's decay matrices and chunk
# states (float32) about this many bytes, so that the passes over them stay in cache (or one sequence).
GRAPH_BLOCK_BYTES = 2 << 20


def ssd_graph(x: Tensor, a: Tensor, B: Tensor, C: Tensor, chunk_size: int, dt: Tensor, D: Tensor, z: Tensor,
              conv: tuple[Tensor, Tensor] | None = None, epilogue: Callable[[Tensor], Tensor] | None = None,
              block: int | None = None) -> Tensor:
    """`ssd_chunked(x, a, B, C, chunk_size, dt=dt, D=D, z=z)` in the form an ONNX graph runs well (the
    export traces this one), channels first: x, z (b, h, p, l); a, dt (b, h, l); B, C (b, g, n, l);
    D (h,); conv: (weight (ch, 1, d_conv), bias (ch,)) of the causal depthwise conv and SiLU that x, B
    and C (ch = h p + 2 g n channels, in that order) go through first, or None where they have;
    epilogue: what becomes of each block's gated y, (c, k, h, p, q), or (k, h, p, q) for one chunk,
    while it is in cache; block: sequences per block, a divisor of b (default: by `GRAPH_BLOCK_BYTES`).
    Returns, for r blocks of k sequences (r k = b), each chunk-major in c chunks of q steps
    (`chunk_layout`), the gated y as (r, c, k, h, p, q), or the epilogue's results as (r, ...); steps
    past l are padding, for the caller to drop.

    Channels first, every product reads its operands where they lie: inside a chunk y^T = x^T S^T with
    S^T built transposed, the state is (heads x headdim) x d_state per group, and the depthwise conv
    gets the (b, ch, l) layout ONNX's Conv wants. The folds of `_scan_inference` (dt in the exponent,
    D on the diagonal, the gate on each chunk) spare passes over the activations, which is what
    onnxruntime's time goes to. The loops are `scan`s (ONNX Scan nodes: the graph grows with neither
    chunks nor sequences): over blocks of sequences, and in each block x's conv, every chunk's
    products at once (heads batched), and a loop over the chunks that carries only the state. Blocks
    keep the passes over the decays, the states and the conv's output in cache (paper model at 8 s in
    onnxruntime: 5 % faster with blocks, 3 % more with the conv in them, 6 % more with the mixer's
    norm and out_proj as the epilogue). y stays in the Scans' layout: out_proj reads it as it is, and
    onnxruntime's Transpose back to channels first took 10-11 ms a direction on a 2 s chunk.
    """
    from torch._higher_order_ops.scan import scan
    from torch.fx.experimental.symbolic_shapes import statically_known_true

    b, h, p, l = x.shape
    n = B.shape[2]
    padded, q, c = chunk_layout(l, chunk_size)
    if padded > l:  # zero steps at the end: dt = 0 is no input and (log dt = -inf) no decay into them
        x, a, dt, B, C, z = (F.pad(t, (0, padded - l)) for t in (x, a, dt, B, C, z))
    x_conv = None
    if conv is not None:  # B's and C's conv here, x's in the blocks (B and C are an eighth of the channels)
        weight, bias = conv
        ends = (h * p, h * p + B.shape[1] * n, weight.shape[0])
        x_conv = (weight[:ends[0]], bias[:ends[0]])
        B, C = (_causal_conv_silu(t, weight[start:stop], bias[start:stop])
                for t, start, stop in zip((B, C), ends[:-1], ends[1:]))
    if c > 1:
        # Steps outer, for the products inside the chunks. Transposed in the blocks, this and the
        # chunks' permute became one onnxruntime Transpose that ran at 1 GB/s.
        B = B.transpose(-1, -2)  # (b g l n)
    k = block or sequences_per_block(b, 4 * c * h * q * (q + (p * n // q if c > 1 else 0)))  # decays, states
    finish = epilogue or (lambda y: y)
    if statically_known_true(k == b):  # one block: no loop over blocks
        out = finish(_graph_block(x, a, dt, B, C, z, D, q, c, x_conv)).unsqueeze(0)
    else:
        def one_block(unused: Tensor, inputs: tuple[Tensor, ...]) -> tuple[Tensor, Tensor]:
            # (a scan carries a state; blocks have none to pass on)
            return unused.clone(), finish(_graph_block(*inputs, D, q, c, x_conv))

        blocks = tuple(t.view(b // k, k, *t.shape[1:]) for t in (x, a, dt, B, C, z))
        out = scan(one_block, torch.zeros(1, dtype=x.dtype, device=x.device), blocks)[1]
    # y's chunk axis where there is one chunk, added outside the Scans (inside, onnxruntime copies y for it)
    return out.unsqueeze(1) if c == 1 and epilogue is None else out


def _causal_conv_silu(t: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """SiLU of the causal depthwise conv over the last axis of t (k, ..., l), its middle axes the channels;
    weight (channels, 1, d_conv), bias (channels,). ONNX's Conv, onnxruntime fuses the left padding into it."""
    padded = F.pad(t.flatten(1, -2), (weight.shape[-1] - 1, 0))
    return F.silu(F.conv1d(padded, weight, bias, groups=padded.shape[1])).view(t.shape)


def sequences_per_block(b: int, bytes_per_sequence: int) -> int:
    """Sequences per block of `ssd_graph`: the divisor of b (a number, or when traced the symbolic batch
    times the sequences per item) whose block comes nearest `GRAPH_BLOCK_BYTES`, or all b where no
    divisor comes within 4x (b prime, say, where blocks of one sequence would be many small ops)."""
    from torch.fx.experimental.symbolic_shapes import statically_known_true

    target = GRAPH_BLOCK_BYTES / bytes_per_sequence
    if statically_known_true(b <= 4 * target):
        return b
    divisors = [k for k in range(1, min(int(4 * target), 1024) + 1) if statically_known_true(b % k == 0)] or [1]
    best = min(divisors, key=lambda k: abs(math.log(k / target)))
    return best if 4 * best >= target else b


def _graph_block(x: Tensor, a: Tensor, dt: Tensor, B: Tensor, C: Tensor, z: Tensor, D: Tensor, q: int, c: int,
                 x_conv: tuple[Tensor, Tensor] | None) -> Tensor:
    """`ssd_graph` on one block of sequences, padded to c chunks of q steps: x, z (k, h, p, c q),
    a, dt (k, h, c q), C (k, g, n, c q), B (k, g, n, q) for one chunk, else steps outer (k, g, c q, n);
    x_conv: x's conv, as `ssd_graph`'s conv -> y (c, k, h, p, q), or (k, h, p, q) for one chunk."""
    from torch._higher_order_ops.scan import scan

    b, h, p, _ = x.shape
    g, n = C.shape[1:3]
    hg = h // g
    if x_conv is not None:
        x = _causal_conv_silu(x, *x_conv)
    a_cum = a.view(b, h, c, q).cumsum(-1)  # (b h c q)
    a_from = a_cum - dt.view(b, h, c, q).log()  # exp(a_cum_t - a_from_s): the decay from s to t times dt_s
    # S^T: rows s, columns t, causal for s <= t. Below the diagonal the exponent is positive: clamped
    # to a finite exp there, which the zero of B.C cancels.
    causal = torch.ones(q, q, dtype=torch.bool, device=x.device).triu()
    skip = torch.eye(q, dtype=x.dtype, device=x.device) * D.view(g, hg, 1, 1)  # (g hg q q)

    def scores(BC: Tensor, a_cum: Tensor, a_from: Tensor) -> Tensor:
        """S^T with D on its diagonal: BC (..., g, q_s, q_t) = B_s . C_t, a_cum, a_from (..., h, q)
        -> (..., h, q_s, q_t)."""
        decays = torch.exp((a_cum[..., None, :] - a_from[..., :, None]).clamp(LOG_DECAY_FLOOR, 80.0))
        lead = a_cum.shape[:-2]
        return (decays.view(*lead, g, hg, q, q) * (BC * causal).unsqueeze(-3) + skip).view(*lead, h, q, q)

    if c == 1:  # inside the chunk, and D x
        return (x @ scores(B.transpose(-1, -2) @ C, a_cum.view(b, h, q), a_from.view(b, h, q))) * F.silu(z)
    # Chunk-major: every chunk's products at once, one loop over the chunks for the carried state only.
    xs, zs = (t.view(b, h, p, c, q).permute(3, 0, 1, 2, 4) for t in (x, z))  # (c b h p q)
    a_cums, a_froms = (t.permute(2, 0, 1, 3) for t in (a_cum, a_from))  # (c b h q)
    Bs = B.view(b, g, c, q, n).permute(2, 0, 1, 3, 4)  # (c b g q n)
    Cs = C.view(b, g, n, c, q).permute(3, 0, 1, 2, 4)  # (c b g n q)
    y = xs @ scores(Bs @ Cs, a_cums, a_froms)  # (c b h p q_t): inside each chunk, and D x
    # Each chunk's own state at its end: (x decayed to the chunk's end) B^T.
    to_end = torch.exp((a_cums[..., -1:] - a_froms).clamp_min(LOG_DECAY_FLOOR)).unsqueeze(3)  # (c b h 1 q)
    chunk_states = (xs * to_end).view(c, b, g, hg * p, q) @ Bs  # (c b g hg*p n)
    from_starts = torch.exp(a_cums.clamp_min(LOG_DECAY_FLOOR))  # (c b h q): from the chunk's start to t
    chunk_decays = from_starts[..., -1].reshape(c, b, g, hg, 1, 1)

    def step(state: Tensor, inputs: tuple[Tensor, ...]) -> tuple[Tensor, Tensor]:
        C_j, decay_j, own_j = inputs  # state (b g hg*p n): the sum of the chunks before
        k = C_j.shape[0]  # read inside the Scan: the outer traced size failed the export's capture of the Scan
        return own_j + (state.view(k, g, hg, p, n) * decay_j).view(k, g, hg * p, n), state @ C_j

    # From a zero state (one small wasted product on the first chunk). torch.zeros exports as one
    # Expand; x.new_zeros as ConstantOfShape and a cast of the whole state.
    state = torch.zeros(b, g, hg * p, n, dtype=x.dtype, device=x.device)
    y_before = scan(step, state, (Cs, chunk_decays, chunk_states))[1].view(c, b, h, p, q)  # state C_t
    return (y + y_before * from_starts.unsqueeze(3)) * F.silu(zs)


def ssd_sequential(x: Tensor, a: Tensor, B: Tensor, C: Tensor) -> Tensor:
    """The same scan as `ssd_chunked`, one step at a time (reference and benchmark baseline)."""
    b, l, h, p = x.shape
    g, n = B.shape[-2:]
    Bh = B.repeat_interleave(h // g, dim=2)  # (b l h n)
    Ch = C.repeat_interleave(h // g, dim=2)
    state = x.new_zeros(b, h, n, p)
    ys = []
    for t in range(l):
        state = state * torch.exp(a[:, t])[..., None, None] + Bh[:, t, :, :, None] * x[:, t, :, None, :]
        ys.append((Ch[:, t, :, :, None] * state).sum(-2))
    return torch.stack(ys, dim=1)
