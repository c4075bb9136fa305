"""The SSD scan of Mamba2 (Dao & Gu 2024), in plain PyTorch.

For every head the scan computes, with a_t = dt_t * A the (negative) log decay of step t,

    h_t = exp(a_t) * h_{t-1} + B_t x_t^T        (state: d_state x headdim; x already times dt)
    y_t = C_t^T h_t

`ssd_chunked` evaluates it as mamba's `ssd_minimal.py` does: the sequence is cut into chunks
of Q steps; inside a chunk the recurrence is a masked (Q x Q) matrix product, between chunks
only the (d_state x headdim) state is carried. Everything here runs in float32 (the caller
casts): decays are products of many factors below one.
`ssd_sequential` is the recurrence as a loop: the reference the tests hold the chunked form
to, and the baseline of the speed benchmark.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _pad_time(t: Tensor, pad: int) -> Tensor:
    # Zero steps at the end change nothing before them: a = 0 is no decay, x = 0 no input.
    return t if pad == 0 else F.pad(t, (0, 0) * (t.dim() - 2) + (0, pad))


def padded_length(length: int, chunk_size: int) -> int:
    """The length the scan works on: whole chunks, or one chunk rounded up to 16 steps
    (odd matrix sizes such as 62 x 62 run at a quarter of the speed of 64 x 64 on CPU)."""
    if length > chunk_size:
        return -(-length // chunk_size) * chunk_size
    return -(-length // 16) * 16


def ssd_chunked(x: Tensor, a: Tensor, B: Tensor, C: Tensor, chunk_size: int) -> Tensor:
    """Chunked SSD scan.

    x: (b, l, h, p) inputs times dt; a: (b, l, h) log decays dt * A (<= 0);
    B, C: (b, l, g, n), each group's B and C shared by h / g heads. Returns y: (b, l, h, p).
    A sequence no longer than `chunk_size` is one chunk: no state to carry, which keeps the
    short band axis cheap. Input of `padded_length` needs no padding copy here.
    """
    b, l, h, p = x.shape
    g, n = B.shape[-2:]
    hg = h // g  # heads per group
    padded = padded_length(l, chunk_size)
    x, a, B, C = (_pad_time(t, padded - l) for t in (x, a, B, C))
    q = min(padded, chunk_size)
    c = padded // q
    differentiable = torch.is_grad_enabled() and any(t.requires_grad for t in (x, a, B, C))

    a_cum = a.view(b, c, q, g, hg).cumsum(2)  # (b c q g hg)
    a_cum_h = a_cum.permute(0, 1, 3, 4, 2).contiguous()  # (b c g hg q)
    Bg = B.view(b, c, q, g, n).transpose(2, 3)  # (b c g q n)
    Cg = C.view(b, c, q, g, n).transpose(2, 3)
    xg = x.view(b * c, q, g, hg, p)

    # 1. Inside each chunk: y_t = sum_{s<=t} (C_t . B_s) exp(a_cum_t - a_cum_s) x_s.
    #    Mask before exp: the upper triangle would overflow, and 0 * inf is a NaN gradient.
    causal = torch.ones(q, q, dtype=torch.bool, device=x.device).tril()
    segsum = a_cum_h.unsqueeze(-1) - a_cum_h.unsqueeze(-2)  # (b c g hg q_t q_s)
    CB = (Cg @ Bg.transpose(-1, -2)).unsqueeze(3)  # (b c g 1 q_t q_s)
    if differentiable:
        scores = torch.exp(segsum.masked_fill(~causal, float("-inf"))) * CB
    else:  # same values, no temporaries
        scores = segsum.masked_fill_(~causal, float("-inf")).exp_().mul_(CB)
    scores = scores.view(b * c, g, hg, q, q)
    # One product per head on strided views of x, written token-major: on CPU this beats
    # permuting x to head-major and y back by a factor of five.
    heads = [(group, head) for group in range(g) for head in range(hg)]
    if differentiable:  # stack: autograd would copy all of y for every in-place slice
        y = torch.stack([torch.bmm(scores[:, gi, hi], xg[:, :, gi, hi]) for gi, hi in heads], dim=2)
    else:  # in place: 4x faster than stacking 64-float rows
        y = x.new_empty(b * c, q, g, hg, p)
        for gi, hi in heads:
            y[:, :, gi, hi] = torch.bmm(scores[:, gi, hi], xg[:, :, gi, hi])
    y = y.view(b, c, q, g, hg, p)

    # 2. Between chunks: carry the state chunk by chunk; C_t^T state exp(a_cum_t) adds to y.
    if c > 1:
        state = x.new_zeros(b, g, n, hg * p)
        x_chunks = x.view(b, c, q, g, hg, p)
        from_before = [torch.zeros_like(y[:, 0])]
        for j in range(c - 1):
            to_end = torch.exp(a_cum[:, j, -1:] - a_cum[:, j])  # (b q g hg)
            weighted = (x_chunks[:, j] * to_end.unsqueeze(-1)).transpose(1, 2).reshape(b, g, q, hg * p)
            chunk_decay = a_cum[:, j, -1].exp().view(b, g, 1, hg, 1)
            if differentiable:
                decayed = (state.view(b, g, n, hg, p) * chunk_decay).view(b, g, n, hg * p)
                state = torch.baddbmm(decayed.flatten(0, 1), Bg[:, j].transpose(-1, -2).flatten(0, 1),
                                      weighted.flatten(0, 1)).view(b, g, n, hg * p)
            else:  # the state is the largest tensor here: update it in place, the product accumulating
                state.view(b, g, n, hg, p).mul_(chunk_decay)
                state.flatten(0, 1).baddbmm_(Bg[:, j].transpose(-1, -2).flatten(0, 1), weighted.flatten(0, 1))
            carried = (Cg[:, j + 1] @ state).view(b, g, q, hg, p).transpose(1, 2)  # (b q g hg p)
            contribution = carried * a_cum[:, j + 1].exp().unsqueeze(-1)
            if differentiable:
                from_before.append(contribution)
            else:
                y[:, j + 1] += contribution
        if differentiable:  # in-place slices would make autograd copy all of y for each chunk
            y = y + torch.stack(from_before, dim=1)

    return y.view(b, c * q, h, p)[:, :l]


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
