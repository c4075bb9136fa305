"""The paper's input-length study: each N-second segment is one model input, on its own."""
from __future__ import annotations

import numpy as np
import torch

from bsmamba2_plugin.separate.overlap_add import input_channel_mode


def separate_in_segments(
    model: torch.nn.Module, mixture: np.ndarray, segment: int, batch_size: int, device: torch.device,
    num_stems: int, target_index: int | None = None,
) -> np.ndarray:
    """(channels, n * segment) -> (stems, channels, n * segment); segment k sees only its own samples.

    No overlap, padding or windowing: the model gets exactly ``segment`` samples per input, so the
    result shows how much context the model needs. Callers cut the mixture to whole segments.
    """
    channels, length = mixture.shape
    if length % segment:
        raise ValueError(f"mixture length {length} is not a whole number of {segment}-sample segments")
    duplicate = input_channel_mode(model, channels)
    pieces = torch.from_numpy(mixture).reshape(channels, -1, segment).permute(1, 0, 2)
    if duplicate:
        pieces = pieces.repeat(1, 2, 1)
    outputs = []
    with torch.inference_mode():
        for start in range(0, pieces.shape[0], batch_size):
            estimate = model(pieces[start:start + batch_size].to(device)).float().cpu()
            if target_index is not None and estimate.shape[1] != num_stems:
                estimate = estimate[:, target_index:target_index + 1]
            outputs.append(estimate[:, :, :1] if duplicate else estimate)
    stacked = torch.cat(outputs, dim=0)  # (segments, stems, channels, segment)
    return stacked.permute(1, 2, 0, 3).reshape(num_stems, channels, length).numpy()
