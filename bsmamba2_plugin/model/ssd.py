"""The SSD scan of Mamba2 (Dao & Gu 2024), in plain PyTorch.

For every head the scan computes, with a_t = dt_t * A (a negative scalar per step),

    h_t = exp(a_t) * h_{t-1} + B_t (dt_t x_t)^T        (state: d_state x headdim)
    y_t = C_t^T h_t

`ssd_chunked` evaluates it as mamba's `ssd_minimal.py` does: the sequence is cut into
chunks of Q steps; inside a chunk the recurrence is a masked (Q x Q) matrix product,
between chunks only the (d_state x headdim) states are carried. Everything here runs in
float32 (the caller casts), because the decays are products of many factors below one.
`ssd_sequential` is the recurrence written as a loop: the reference the tests hold the
chunked form to, and the baseline of the speed benchmark.
"""
from __future__ import annotations

import torch
from torch import Tensor


def _pad_time(t: Tensor, pad: int) -> Tensor:
    # Zero steps at the end change nothing before them: dt = 0 means no decay and no input.
    if pad == 0:
        return t
    return torch.nn.functional.pad(t, (0, 0) * (t.dim() - 2) + (0, pad))


def ssd_chunked(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, chunk_size: int) -> Tensor:
    """Chunked SSD scan.

    x: (b, l, h, p) inputs already multiplied by dt; dt: (b, l, h) step sizes (> 0);
    A: (h,) negative decay rates; B, C: (b, l, g, n) with h a multiple of g (heads
    h*g/g.. share the group's B and C). Returns y: (b, l, h, p).
    A sequence no longer than `chunk_size` is one chunk of exactly its length: no padding
    and no state passing, which is what makes the short band axis cheap.
    """
    b, l, h, p = x.shape
    g, n = B.shape[-2:]
    hg = h // g  # heads per group
    q = l if l <= chunk_size else chunk_size
    pad = -l % q
    x, dt, B, C = (_pad_time(t, pad) for t in (x, dt, B, C))
    c = (l + pad) // q

    a_cum = (dt * A).reshape(b, c, q, g, hg).permute(0, 1, 3, 4, 2).cumsum(-1)  # (b c g hg q)
    Bc = B.reshape(b, c, q, g, n).transpose(2, 3)  # (b c g q n)
    Cc = C.reshape(b, c, q, g, n).transpose(2, 3)  # (b c g q n)
    xc = x.reshape(b, c, q, g, hg, p)

    # 1. Inside each chunk: y_t = sum_{s<=t} (C_t . B_s) exp(a_cum_t - a_cum_s) x_s.
    #    Mask before exp: the upper triangle would overflow, and 0 * inf is a NaN gradient.
    causal = torch.ones(q, q, dtype=torch.bool, device=x.device).tril()
    segsum = a_cum.unsqueeze(-1) - a_cum.unsqueeze(-2)  # (b c g hg q_t q_s)
    decay = torch.exp(segsum.masked_fill(~causal, float("-inf")))
    scores = (Cc @ Bc.transpose(-1, -2)).unsqueeze(3) * decay  # (b c g hg q_t q_s)
    y = scores @ xc.permute(0, 1, 3, 4, 2, 5)  # (b c g hg q p)

    if c > 1:
        # 2. The state each chunk leaves behind from its own inputs: sum_s exp(a_end - a_s) B_s x_s^T.
        decay_to_end = torch.exp(a_cum[..., -1:] - a_cum)  # (b c g hg q)
        x_weighted = xc.permute(0, 1, 3, 2, 4, 5) * decay_to_end.transpose(-1, -2).unsqueeze(-1)
        chunk_states = Bc.transpose(-1, -2) @ x_weighted.reshape(b, c, g, q, hg * p)  # (b c g n hg*p)
        chunk_states = chunk_states.view(b, c, g, n, hg, p)

        # 3. Carry states across chunk boundaries: a short loop over c chunks.
        chunk_decay = torch.exp(a_cum[..., -1])  # (b c g hg)
        carried = [torch.zeros_like(chunk_states[:, 0])]
        for k in range(c - 1):
            decayed = carried[-1] * chunk_decay[:, k].unsqueeze(2).unsqueeze(-1)
            carried.append(decayed + chunk_states[:, k])
        states_in = torch.stack(carried, dim=1)  # (b c g n hg p): state entering each chunk

        # 4. What earlier chunks contribute: C_t^T (state entering the chunk), decayed to t.
        y_prev = (Cc @ states_in.reshape(b, c, g, n, hg * p)).view(b, c, g, q, hg, p)
        y = y + (y_prev * torch.exp(a_cum).permute(0, 1, 2, 4, 3).unsqueeze(-1)).permute(0, 1, 2, 4, 3, 5)

    return y.permute(0, 1, 4, 2, 3, 5).reshape(b, c * q, h, p)[:, :l]


def ssd_sequential(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor) -> Tensor:
    """The same scan as `ssd_chunked`, one step at a time (reference and benchmark baseline)."""
    b, l, h, p = x.shape
    g, n = B.shape[-2:]
    hg = h // g
    Bh = B.repeat_interleave(hg, dim=2)  # (b l h n)
    Ch = C.repeat_interleave(hg, dim=2)
    state = x.new_zeros(b, h, n, p)
    ys = []
    for t in range(l):
        decay = torch.exp(dt[:, t] * A)  # (b h)
        state = state * decay[..., None, None] + Bh[:, t, :, :, None] * x[:, t, :, None, :]
        ys.append((Ch[:, t, :, :, None] * state).sum(-2))
    return torch.stack(ys, dim=1)
