"""BSMamba2 (Kim & Choi 2025, arXiv 2508.14556): band-split RoFormer with bidirectional Mamba2.

Data path, top to bottom:

    audio (b, c, t)
      -> STFT (2048 / hop 441, Hann)                       (b, c, f=1025, n)
      -> bands: 62 BS-RoFormer bands, RMSNorm + Linear      (b, n, k=62, d=256)
      -> 6 x [time: bidirectional Mamba2 over n,  band: bidirectional Mamba2 over k]
      -> RMSNorm
      -> per stem, per band: Linear -> Tanh -> Linear -> GLU = complex mask
      -> mask * mixture STFT -> iSTFT                       (b, s, c, t)

Module and parameter names follow MSST's `bs_mamba2` port (`BSMamba2Model`) and the
official code, so their state dicts load here unchanged.
"""
from __future__ import annotations

import inspect
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from beartype import BeartypeConf, beartype
from beartype.roar import BeartypeCallHintViolation
from torch import Tensor, nn

from ..settings import positive_int, whole_number
from .backend import check_backend, use_mamba_ssm
from .linear_weight import is_linear, stacked_linear
from .mamba2 import HEADDIM, Mamba2, RMSNorm, both_directions, fp32_or_wider

# BS-RoFormer's split of 1025 bins (n_fft 2048): 24 x 2, 12 x 4, 8 x 12, 8 x 24, 8 x 48, 128, 129.
DEFAULT_FREQS_PER_BANDS = (2,) * 24 + (4,) * 12 + (12,) * 8 + (24,) * 8 + (48,) * 8 + (128, 129)

# Keys of MSST's bs_mamba2 `model:` section that only its transformer variants use.
TRANSFORMER_ONLY_KEYS = ("dim_head", "heads", "attn_dropout", "ff_dropout", "flash_attn", "audio_cfg")

# Mamba2 settings of the paper: expand 4, everything else mamba-ssm's default.
MAMBA2_EXPAND = 4


class BandRMSNorm(nn.Module):
    """RMSNorm of the band split and the output: x / ||x|| * sqrt(d) * gamma."""

    def __init__(self, dim: int):
        super().__init__()
        self.scale = dim**0.5
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        return F.normalize(fp32_or_wider(x), dim=-1) * self.scale * self.gamma


def runs_of_equal_width(widths: Sequence[int]) -> list[tuple[int, int, int]]:
    """(first band, band count, width) of each run of consecutive bands of one width: the bands of
    a run go through one batched product (the paper's 62 bands are 7 runs), a smaller graph and
    fewer, larger kernels than one product per band."""
    runs: list[tuple[int, int, int]] = []
    for index, width in enumerate(widths):
        if runs and runs[-1][2] == width:
            first, count, _ = runs[-1]
            runs[-1] = (first, count + 1, width)
        else:
            runs.append((index, 1, width))
    return runs


def per_band_linear(x: Tensor, linears: Sequence[nn.Module]) -> Tensor:
    """x: (r, tokens, d_in), band i through linears[i] -> (r, tokens, d_out), as one batched product.

    The layers' effective weights (linear_weight.py): a LoRA adapter on a band's layer is applied."""
    weight, bias = stacked_linear(linears)
    if bias is None:
        return torch.bmm(x, weight.transpose(1, 2))
    return torch.baddbmm(bias[:, None], x, weight.transpose(1, 2))  # (r 1 d_out) + (r tokens d_in) @ (r d_in d_out)


class BandSplit(nn.Module):
    """(b, n, sum(dim_inputs)) -> (b, n, k, dim): each band normalised and projected."""

    def __init__(self, dim: int, dim_inputs: Sequence[int]):
        super().__init__()
        self.dim_inputs = tuple(dim_inputs)
        self.to_features = nn.ModuleList(nn.Sequential(BandRMSNorm(d), nn.Linear(d, dim)) for d in dim_inputs)
        self.runs = runs_of_equal_width(self.dim_inputs)

    def forward(self, x: Tensor) -> Tensor:
        b, frames = x.shape[:2]
        features, start = [], 0
        for first, count, width in self.runs:
            bands = x[..., start:start + count * width].unflatten(-1, (count, width))  # (b n r d)
            start += count * width
            modules = self.to_features[first:first + count]
            gamma = torch.stack([module[0].gamma for module in modules])  # (r d)
            normed = F.normalize(bands, dim=-1) * modules[0][0].scale * gamma
            projected = per_band_linear(normed.permute(2, 0, 1, 3).reshape(count, b * frames, width),
                                        [module[1] for module in modules])  # (r (b n) dim)
            features.append(projected.unflatten(1, (b, frames)))
        return torch.cat(features).permute(1, 2, 0, 3)  # (b n k dim)


class MaskEstimator(nn.Module):
    """(b, n, k, dim) -> (b, n, sum(dim_inputs)): per band an MLP with a GLU output."""

    def __init__(self, dim: int, dim_inputs: Sequence[int], depth: int, expansion: int = 4):
        super().__init__()
        hidden = dim * expansion

        def mlp(dim_out: int) -> nn.Sequential:
            dims = (dim, *(hidden,) * (depth - 1), dim_out)
            layers: list[nn.Module] = []
            for i, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:])):
                layers.append(nn.Linear(d_in, d_out))
                if i < len(dims) - 2:
                    layers.append(nn.Tanh())
            return nn.Sequential(*layers)

        self.to_freqs = nn.ModuleList(nn.Sequential(mlp(2 * d), nn.GLU(dim=-1)) for d in dim_inputs)
        self.runs = runs_of_equal_width(tuple(dim_inputs))

    def forward(self, x: Tensor) -> Tensor:
        b, frames, _, dim = x.shape
        masks = []
        for first, count, _ in self.runs:
            h = x[:, :, first:first + count].permute(2, 0, 1, 3).reshape(count, b * frames, dim)  # (r (b n) dim)
            mlps = [to_freq[0] for to_freq in self.to_freqs[first:first + count]]
            for position, layer in enumerate(mlps[0]):
                if is_linear(layer):  # also a LoRA-wrapped one (peft's wrapper is no nn.Linear)
                    h = per_band_linear(h, [mlp[position] for mlp in mlps])
                else:
                    h = layer(h)  # Tanh
            h = F.glu(h, dim=-1)  # (r (b n) d)
            masks.append(h.unflatten(1, (b, frames)).permute(1, 2, 0, 3).flatten(2))  # (b n (r d))
        return torch.cat(masks, dim=-1)


class MambaBlock(nn.Module):
    """mamba-ssm's `Block` without MLP: x + Mamba2(RMSNorm(x))."""

    def __init__(self, dim: int, backend: str | None):
        super().__init__()
        self.norm = RMSNorm(dim, eps=1e-5)
        self.mixer = Mamba2(dim, expand=MAMBA2_EXPAND, backend=backend, layer_idx=0)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.mixer(self.norm(x))


class BidirectionalMamba(nn.Module):
    """One direction block on x, another on x reversed, concat -> 1x1 ConvTranspose -> + x.

    Named like MSST's `MambaBlock` (forward_blocks.0, backward_blocks.0, linear).
    """

    def __init__(self, dim: int, backend: str | None):
        super().__init__()
        self.forward_blocks = nn.ModuleList([MambaBlock(dim, backend)])
        self.backward_blocks = nn.ModuleList([MambaBlock(dim, backend)])
        self.linear = nn.ConvTranspose1d(2 * dim, dim, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        """x: (sequences, length, dim)."""
        fwd, bwd = self.forward_blocks[0], self.backward_blocks[0]
        merge_weight = self.linear.weight.squeeze(-1).t()  # (dim, 2 dim)
        if use_mamba_ssm(fwd.mixer.backend, x):
            both = torch.cat([fwd(x), bwd(x.flip(1)).flip(1)], dim=-1)
            return F.linear(both, merge_weight, self.linear.bias) + x
        # The PyTorch path: both Blocks and the merge as one computation (mamba2.py).
        return both_directions(x, [fwd.mixer, bwd.mixer], [fwd.norm.weight, bwd.norm.weight], fwd.norm.eps,
                               merge_weight, self.linear.bias)


class BSMamba2(nn.Module):
    """The paper's model. Keywords are the `model:` section of MSST's bs_mamba2 YAML."""

    @beartype(conf=BeartypeConf(is_pep484_tower=True))  # an int where a float is due is fine
    def __init__(
        self,
        dim: int = 256,
        *,
        depth: int = 6,
        stereo: bool = True,
        num_stems: int = 1,
        time_module_depth: int = 1,
        freq_module_depth: int = 1,
        freqs_per_bands: Sequence[int] = DEFAULT_FREQS_PER_BANDS,
        stft_n_fft: int = 2048,
        stft_hop_length: int = 441,
        stft_win_length: int = 2048,
        stft_normalized: bool = False,
        mask_estimator_depth: int = 2,
        multi_stft_resolution_loss_weight: float = 1.0,
        multi_stft_resolutions_window_sizes: Sequence[int] = (4096, 2048, 1024, 512, 256),
        multi_stft_hop_size: int = 147,
        multi_stft_normalized: bool = False,
        module_type: str = "mamba2",
        mamba_gmlp: bool = False,
        backend: str | None = None,
        **transformer_only: Any,
    ):
        super().__init__()
        unknown = sorted(set(transformer_only) - set(TRANSFORMER_ONLY_KEYS))
        if unknown:
            raise ValueError(
                f"unknown key(s) in the model section: {', '.join('model.' + key for key in unknown)}; BSMamba2 takes "
                f"{', '.join(sorted(MODEL_KEYS))}"
            )
        if module_type != "mamba2":
            raise ValueError(f"model.module_type={module_type!r}: BSMamba2 is the 'mamba2' variant only")
        if mamba_gmlp:
            raise ValueError("model.mamba_gmlp=True adds an MLP that is not in the paper's model; set it to false")
        for key, value in (("time_module_depth", time_module_depth), ("freq_module_depth", freq_module_depth)):
            if value != 1:  # MSST's bs_mamba2 ignores these for mamba2; so do we, to stay weight-compatible
                warnings.warn(f"model.{key}={value} is ignored: each direction has one Mamba2 block, as in MSST")
        for key, value in (("dim", dim), ("depth", depth), ("num_stems", num_stems), ("stft_n_fft", stft_n_fft),
                           ("stft_hop_length", stft_hop_length), ("stft_win_length", stft_win_length),
                           ("multi_stft_hop_size", multi_stft_hop_size),
                           *(("multi_stft_resolutions_window_sizes", size)
                             for size in multi_stft_resolutions_window_sizes)):
            positive_int(value, f"model.{key}")
        if MAMBA2_EXPAND * dim % HEADDIM:
            raise ValueError(f"model.dim={dim}: the Mamba2 blocks split {MAMBA2_EXPAND} x dim channels into heads of "
                             f"{HEADDIM}, so dim must be a multiple of {HEADDIM // MAMBA2_EXPAND} (paper: 256)")
        if stft_win_length > stft_n_fft:
            raise ValueError(f"model.stft_win_length={stft_win_length} exceeds model.stft_n_fft={stft_n_fft}; "
                             "the STFT window must fit in its frame")
        whole_number(mask_estimator_depth, "model.mask_estimator_depth")  # 0 builds the one-layer MLP of 1, as in MSST
        n_bins = stft_n_fft // 2 + 1
        if sum(freqs_per_bands) != n_bins or len(freqs_per_bands) < 2:
            raise ValueError(
                f"model.freqs_per_bands sums to {sum(freqs_per_bands)} over {len(freqs_per_bands)} bands; "
                f"it must cover the {n_bins} bins of stft_n_fft={stft_n_fft} in at least 2 bands"
            )
        if backend is not None:
            check_backend(backend, origin="model.backend")

        self.audio_channels = 2 if stereo else 1
        self.num_stems = num_stems
        self.stft_kwargs = dict(n_fft=stft_n_fft, hop_length=stft_hop_length, win_length=stft_win_length,
                                normalized=stft_normalized, center=True)
        self.register_buffer("stft_window", torch.hann_window(stft_win_length), persistent=False)
        self.loss_settings = dict(
            resolution_weight=multi_stft_resolution_loss_weight,
            window_sizes=tuple(multi_stft_resolutions_window_sizes),
            hop_size=multi_stft_hop_size,
            normalized=multi_stft_normalized,
            n_fft=stft_n_fft,
        )

        # A band's input: its bins x channels x (re, im), frequency outermost.
        band_inputs = tuple(2 * f * self.audio_channels for f in freqs_per_bands)
        self.band_split = BandSplit(dim, band_inputs)
        self.layers = nn.ModuleList(
            nn.ModuleList([BidirectionalMamba(dim, backend), BidirectionalMamba(dim, backend)]) for _ in range(depth)
        )
        self.final_norm = BandRMSNorm(dim)
        self.mask_estimators = nn.ModuleList(
            MaskEstimator(dim, band_inputs, depth=mask_estimator_depth) for _ in range(num_stems)
        )

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | Any, **overrides: Any) -> BSMamba2:
        """Build from an MSST config (ConfigDict or dict) with a `model` section."""
        model_section = config["model"] if "model" in config else None
        if model_section is None:
            raise KeyError("the config has no 'model' section")
        try:
            return cls(**{**dict(model_section), **overrides})
        except BeartypeCallHintViolation as error:  # a value of the wrong type: a ValueError, as the others
            raise ValueError(f"the model section: {error}") from None

    def set_backend(self, backend: str | None) -> None:
        """Choose the Mamba2 implementation for every block (None: BSMAMBA2_BACKEND or auto)."""
        if backend is not None:
            check_backend(backend)
        for module in self.modules():
            if isinstance(module, Mamba2):
                module.backend = backend

    def estimate_masks(self, bands: Tensor) -> Tensor:
        """The network between the spectrograms: band input (b, n, f*c*2), frequency outermost,
        then channel, then re/im -> masks (b, stems, n, f*c*2) in the same layout."""
        b, frames = bands.shape[:2]
        features = self.band_split(bands)  # (b n k d)
        k, d = features.shape[2:]
        for time_module, band_module in self.layers:
            features = features.transpose(1, 2).reshape(b * k, frames, d)
            features = time_module(features).reshape(b, k, frames, d).transpose(1, 2)
            features = band_module(features.reshape(b * frames, k, d)).reshape(b, frames, k, d)
        features = self.final_norm(features)
        return torch.stack([estimator(features) for estimator in self.mask_estimators], dim=1)

    def forward(self, x: Tensor) -> Tensor:
        """x: (b, channels, samples) -> (b, num_stems, channels, samples): the paper's three steps."""
        x = self.check_audio(x)
        stft, padded = self.mixture_stft(x)  # 1. STFT -> band input
        masks = self.estimate_masks(self.band_input(stft))  # 2. the network
        return self.inverse_stft(self.apply_masks(masks, stft), padded, x.shape[-1])  # 3. masks x mixture -> iSTFT

    def check_audio(self, x: Tensor) -> Tensor:
        """(b, channels, samples), (b, samples) for a mono model; a clear error otherwise."""
        if x.dim() == 2 and self.audio_channels == 1:  # (b, t) mono, as MSST allows
            x = x.unsqueeze(1)
        if x.dim() != 3 or x.shape[1] != self.audio_channels:
            raise ValueError(
                f"expected audio of shape (batch, {self.audio_channels} channel(s), samples), got {tuple(x.shape)}"
            )
        if x.shape[2] == 0:
            raise ValueError("expected at least one sample of audio, got 0")
        return x

    def mixture_stft(self, x: Tensor) -> tuple[Tensor, int]:
        """(b, c, t) -> (the mixture STFT (b, c, f, n, 2) in fp32, re/im last; the padded length)."""
        return mixture_stft(x, self.stft_kwargs, self.stft_window)

    @staticmethod
    def band_input(stft: Tensor) -> Tensor:
        """(b, c, f, n, 2) -> (b, n, (f c 2)): frequency outermost, then channel, then re/im."""
        b, c, f, frames, _ = stft.shape
        return stft.permute(0, 3, 2, 1, 4).reshape(b, frames, f * c * 2)

    def apply_masks(self, masks: Tensor, stft: Tensor) -> Tensor:
        """Complex masks (b, s, n, (f c 2)) times the mixture STFT (b, c, f, n, 2) -> (b, s, c, f, n, 2), fp32.

        The complex product in real arithmetic, so the ONNX graph (no complex tensors) shares it."""
        b, c, f, frames, _ = stft.shape
        with torch.autocast(device_type=stft.device.type, enabled=False):
            masks = fp32_or_wider(masks).reshape(b, self.num_stems, frames, f, c, 2).permute(0, 1, 4, 3, 2, 5)
            mix_re, mix_im = stft.unsqueeze(1).unbind(-1)  # (b 1 c f n)
            mask_re, mask_im = masks.unbind(-1)  # (b s c f n)
            return torch.stack([mix_re * mask_re - mix_im * mask_im, mix_re * mask_im + mix_im * mask_re], dim=-1)

    def inverse_stft(self, separated: Tensor, padded: int, length: int) -> Tensor:
        """(b, s, c, f, n, 2) -> (b, s, c, length), fp32."""
        return inverse_stft(separated, self.stft_kwargs, self.stft_window, padded, length)


def stft_padded_length(stft_kwargs: Mapping[str, Any], samples: int) -> int:
    """torch.stft's reflect padding needs more than n_fft // 2 samples: short input is zero-padded."""
    return max(samples, stft_kwargs["n_fft"] // 2 + 1)


def mixture_stft(x: Tensor, stft_kwargs: Mapping[str, Any], window: Tensor) -> tuple[Tensor, int]:
    """The model's STFT (also run outside the ONNX graph): (b, c, t) -> ((b, c, f, n, 2) fp32, padded length)."""
    b, c, length = x.shape
    padded = stft_padded_length(stft_kwargs, length)
    with torch.autocast(device_type=x.device.type, enabled=False):
        audio = F.pad(fp32_or_wider(x), (0, padded - length))
        stft = torch.stft(audio.reshape(b * c, padded), window=window.to(audio.device, audio.dtype),
                          return_complex=True, **stft_kwargs)
        return torch.view_as_real(stft).unflatten(0, (b, c)), padded


def inverse_stft(separated: Tensor, stft_kwargs: Mapping[str, Any], window: Tensor, padded: int,
                 length: int) -> Tensor:
    """The model's iSTFT (also run outside the ONNX graph): (b, s, c, f, n, 2) -> (b, s, c, length)."""
    b, s, c, f, frames, _ = separated.shape
    with torch.autocast(device_type=separated.device.type, enabled=False):
        spec = torch.view_as_complex(fp32_or_wider(separated).contiguous()).reshape(b * s * c, f, frames)
        audio = torch.istft(spec, window=window.to(spec.device, spec.real.dtype), length=padded, **stft_kwargs)
    return audio.reshape(b, s, c, padded)[..., :length]


MODEL_KEYS = frozenset(
    name for name in inspect.signature(BSMamba2.__init__).parameters if name not in ("self", "transformer_only")
) | frozenset(TRANSFORMER_ONLY_KEYS)
