"""ONNX export of BSMamba2's PyTorch path, and a separator that runs the export with onnxruntime.

What goes into the graph is the network between the spectrograms, the model's own steps
(`BSMamba2.band_input`, `estimate_masks`, `apply_masks`):

    mixture STFT, real and imaginary parts   (batch, channels, freqs, frames, 2)   float32
      -> band split, the bidirectional Mamba2 layers, final norm, mask estimators
      -> complex masks times the mixture STFT, in real arithmetic
    separated STFTs                          (batch, stems, channels, freqs, frames, 2)

The STFT and the inverse STFT stay outside (`OnnxChunkModel` runs the model's own
`mixture_stft` / `inverse_stft` with torch): ONNX has no inverse STFT operator, and complex
tensors do not export. Traced for export, each Mamba2 mixer takes its graph form
(`mamba2.graph_mixer`: channels first from in_proj to out_proj; the causal conv, as ONNX Conv, and
the SSD scan in `ssd.ssd_graph`, with head-batched products, an ONNX Scan over blocks of sequences
and in each an inner Scan over chunks that carries the state), so the graph's size does not grow
with heads, sequences or chunks. The frame count is fixed at export time (the chunk layout of the
scan and the blocks of sequences depend on it); MSST's demix calls the model with chunks of
`audio.chunk_size` samples anyway. The batch axis stays dynamic.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from ml_collections import ConfigDict
from torch import Tensor, nn

from .atomic_file import atomic_path
from .model import BSMamba2, Mamba2
from .model.bsmamba2 import inverse_stft, mixture_stft, stft_padded_length
from .separate.separator import Separator
from .settings import InferenceSettings

INPUT_NAME = "mixture_stft"
OUTPUT_NAME = "separated_stft"
DEFAULT_OPSET = 18


class SpectrogramNetwork(nn.Module):
    """BSMamba2's forward between torch.stft and torch.istft, complex numbers as (re, im) pairs.

    stft: (b, c, f, n, 2) -> (b, s, c, f, n, 2). Shares the parameters of `model` (no copy).
    """

    def __init__(self, model: BSMamba2):
        super().__init__()
        self.model = model

    def forward(self, stft: Tensor) -> Tensor:
        return self.model.apply_masks(self.model.estimate_masks(self.model.band_input(stft)), stft)


def frames_for(stft_kwargs: Mapping[str, Any], samples: int) -> int:
    """The STFT frame count of `samples` samples (center=True, after the model's short-input padding)."""
    return stft_padded_length(stft_kwargs, samples) // stft_kwargs["hop_length"] + 1


def export_metadata(model: BSMamba2, chunk_samples: int, config: Any = None) -> dict[str, str]:
    """What a runner needs besides the graph, stored in the .onnx file's metadata_props."""
    kwargs = model.stft_kwargs
    meta = {
        "bsmamba2.chunk_samples": str(chunk_samples),
        "bsmamba2.num_stems": str(model.num_stems),
        "bsmamba2.audio_channels": str(model.audio_channels),
        "bsmamba2.stft_n_fft": str(kwargs["n_fft"]),
        "bsmamba2.stft_hop_length": str(kwargs["hop_length"]),
        "bsmamba2.stft_win_length": str(kwargs["win_length"]),
        "bsmamba2.stft_normalized": str(bool(kwargs["normalized"])).lower(),
        "bsmamba2.window": "hann",
    }
    if config is not None:
        settings = InferenceSettings.from_config(config, chunk_size=chunk_samples)
        meta.update({
            "bsmamba2.sample_rate": str(settings.sample_rate),
            "bsmamba2.instruments": json.dumps(list(settings.all_instruments)),
            "bsmamba2.target_instrument": settings.instruments[0] if settings.target_index is not None else "",
            "bsmamba2.num_overlap": str(settings.num_overlap),
            "bsmamba2.batch_size": str(settings.batch_size),
            "bsmamba2.normalize": str(settings.normalize).lower(),
        })
    return meta


def export_onnx(
    model: BSMamba2,
    path: str | os.PathLike,
    chunk_samples: int,
    opset: int = DEFAULT_OPSET,
    config: Any = None,
) -> Path:
    """Write the network of `model` (PyTorch path, float32) to `path` for inputs of `chunk_samples` samples.

    The graph's input is `mixture_stft` (batch, channels, freqs, frames, 2) with frames fixed to
    `frames_for(model.stft_kwargs, chunk_samples)`; its output `separated_stft` (batch, stems, channels,
    freqs, frames, 2). The batch axis is dynamic. The file is written atomically; weights are
    stored inside the one .onnx file (protobuf's 2 GB limit is far above the paper model's ~200 MB).
    With the MSST ``config`` the file also records its stems, sample rate and inference settings,
    so `OnnxSeparator` needs nothing but the file.
    """
    if not isinstance(model, BSMamba2):
        raise TypeError(f"export_onnx exports a BSMamba2, got {type(model).__name__}")
    if chunk_samples <= 0:
        raise ValueError(f"chunk_samples must be a positive number of samples, got {chunk_samples}")
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"the folder of the ONNX output {path} does not exist")
    # The export traces the PyTorch scan; mamba-ssm's CUDA kernels have no ONNX form. The model
    # moves to float32 on the CPU in eval mode (in place, as nn.Module.to does); its backend comes back after.
    model = model.float().cpu().eval()
    backends = {module: module.backend for module in model.modules() if isinstance(module, Mamba2)}
    model.set_backend("torch")
    network = SpectrogramNetwork(model).eval()
    example = model.mixture_stft(torch.zeros(2, model.audio_channels, chunk_samples))[0]
    batch = torch.export.Dim("batch", min=1, max=4096)

    try:
        # float32 even if the caller runs under autocast (`both_directions` folds the merge only in float32)
        with torch.no_grad(), torch.autocast("cpu", enabled=False), warnings.catch_warnings():
            warnings.simplefilter("ignore", category=UserWarning)  # exporter chatter about decompositions
            warnings.simplefilter("ignore", category=FutureWarning)  # torch.export about its own pytree API
            program = torch.onnx.export(
                network, (example,), dynamo=True, opset_version=opset, input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME], dynamic_shapes=({0: batch},), external_data=False, verbose=False,
                # onnxscript's pattern rewriter took half of the export's minutes on the paper model;
                # onnxruntime folds constants and fuses when it loads the graph anyway.
                optimize=False,
            )
        program.model.metadata_props.update(export_metadata(model, chunk_samples, config))
        with atomic_path(path) as temporary:
            program.save(str(temporary), external_data=False)
    finally:
        for module, backend in backends.items():
            module.backend = backend
    return path


def session_options(threads: int | None = None) -> Any:
    """The onnxruntime SessionOptions `OnnxChunkModel` runs a graph with.

    threads: onnxruntime's intra-op threads. The default, its own choice, is one per physical core,
    each pinned to its core; a number given here leaves them unpinned, which was 7 % slower with the
    same 2 threads on a 2-core Xeon (paper model, 8 s chunks, one run: 18.5 s against 19.9 s, 2026-12-07).
    """
    import onnxruntime

    options = onnxruntime.SessionOptions()
    # onnxruntime's arena is left on. It outgrew 23 GB on the graph of 2026-12-02 (activations of up
    # to 1 GB each); on the Scan graph, paper model, 8 s chunks of batch 2, 1, 2, it peaked at
    # 10.3 GiB against 9.9 GiB without it, 1-10 % faster per chunk (2026-12-07, README).
    # Its memory-pattern planner sizes one block for all intermediates it expects together: for a
    # paper-width depth-2 model on a 4 s chunk that peaked at 22.5 GB, against 8.1 GB without it
    # (same time per chunk, 2026-12-03).
    options.enable_mem_pattern = False
    # Denormal floats (below 1.2e-38) as zero, on which x86 CPUs run many times slower. The graph
    # floors its decays (ssd.LOG_DECAY_FLOOR), which keeps strongly decaying heads out of that range;
    # this also covers what the floor cannot, small activations times small decays. They are zero
    # to the model's float32 sums anyway. (Before the floor, a time-axis mixer with dt A near -3 per
    # step took 2.26 s without this and 0.79 s with it, 2026-12-07.)
    options.add_session_config_entry("session.set_denormal_as_zero", "1")
    if threads is not None:
        options.intra_op_num_threads = threads
    return options


class OnnxChunkModel(nn.Module):
    """An exported network with a model's contract: (batch, channels, chunk_samples) float32 ->
    (batch, stems, channels, chunk_samples) float32, as MSST's demix and the package's overlap-add
    call a model. Torch STFT -> onnxruntime -> torch iSTFT; the output is on the input's device.

    Everything besides the graph (chunk length, STFT settings, stems) comes from the file's
    metadata, written by `export_onnx`. It has no parameters; autocast does not reach the graph.
    """

    def __init__(self, onnx_path: str | os.PathLike, providers: Sequence[str] | None = None,
                 threads: int | None = None, options: Any = None):
        """threads: as `session_options`; options: onnxruntime SessionOptions to use instead of
        `session_options(threads)` (the benchmarks' profiler starts from those)."""
        super().__init__()
        import onnxruntime

        onnx_path = Path(onnx_path)
        if not onnx_path.is_file():
            raise FileNotFoundError(f"ONNX model {onnx_path} does not exist")
        self.onnx_path = onnx_path
        if options is None:
            options = session_options(threads)
        elif threads is not None:
            raise ValueError(f"OnnxChunkModel({onnx_path.name}): pass threads or options, not both (threads={threads} "
                             "would be ignored; set intra_op_num_threads on the options instead)")
        try:
            self.session = onnxruntime.InferenceSession(str(onnx_path), options,
                                                        providers=list(providers or ["CPUExecutionProvider"]))
        except Exception as error:  # onnxruntime's own classes (InvalidProtobuf, Fail, ...)
            raise ValueError(f"{onnx_path} is not an ONNX model onnxruntime can load (expected a file written "
                             f"by bsmamba2_plugin.onnx_export): {error}") from error
        meta = self.session.get_modelmeta().custom_metadata_map
        try:
            self.chunk_samples = int(meta["bsmamba2.chunk_samples"])
            self.num_stems = int(meta["bsmamba2.num_stems"])
            self.audio_channels = int(meta["bsmamba2.audio_channels"])
            self.stft_kwargs = dict(n_fft=int(meta["bsmamba2.stft_n_fft"]),
                                    hop_length=int(meta["bsmamba2.stft_hop_length"]),
                                    win_length=int(meta["bsmamba2.stft_win_length"]),
                                    normalized=meta["bsmamba2.stft_normalized"] == "true", center=True)
        except KeyError as missing:
            raise ValueError(f"{onnx_path} lacks the metadata key {missing.args[0]!r}: it was not written by "
                             "bsmamba2_plugin.onnx_export.export_onnx") from None
        self.register_buffer("stft_window", torch.hann_window(self.stft_kwargs["win_length"]), persistent=False)

    def forward(self, audio: Tensor) -> Tensor:
        """(b, c, chunk_samples) -> (b, stems, c, chunk_samples)."""
        if audio.dim() != 3 or audio.shape[1] != self.audio_channels or audio.shape[2] != self.chunk_samples:
            raise ValueError(f"{self.onnx_path.name} takes chunks of shape (batch, {self.audio_channels}, "
                             f"{self.chunk_samples}), got {tuple(audio.shape)}")
        device = audio.device
        window = self.stft_window.cpu()
        stft, padded = mixture_stft(audio.detach().float().cpu(), self.stft_kwargs, window)
        (separated,) = self.session.run([OUTPUT_NAME], {INPUT_NAME: stft.numpy()})
        out = inverse_stft(torch.from_numpy(separated), self.stft_kwargs, window, padded, audio.shape[2])
        return out.to(device)


def config_from_metadata(chunk_model: OnnxChunkModel) -> ConfigDict:
    """The MSST config an export recorded (see `export_metadata`)."""
    meta = chunk_model.session.get_modelmeta().custom_metadata_map
    if "bsmamba2.instruments" not in meta:
        raise ValueError(f"{chunk_model.onnx_path} records no stems or sample rate (exported without a config): "
                         f"pass the model's MSST YAML as config=")
    return ConfigDict({
        "audio": {"chunk_size": chunk_model.chunk_samples, "sample_rate": int(meta["bsmamba2.sample_rate"])},
        "training": {"instruments": json.loads(meta["bsmamba2.instruments"]),
                     "target_instrument": meta.get("bsmamba2.target_instrument") or None, "use_amp": False},
        "inference": {"num_overlap": int(meta["bsmamba2.num_overlap"]), "batch_size": int(meta["bsmamba2.batch_size"]),
                      "normalize": meta.get("bsmamba2.normalize") == "true"},
    })


class OnnxSeparator(Separator):
    """The package's separation engine around an exported network: MSST's overlap-add, TTA,
    bigshifts, any rate and length, files and folders, exactly as `Separator` does with the
    PyTorch model (the same output up to the graph's float32 rounding).

    ``OnnxSeparator("model.onnx")`` takes stems, rate and inference settings from the file (written
    by `export_onnx` with a config); ``config=`` (an MSST YAML or config) overrides them, its chunk
    size set to the graph's. ``chunk_model`` is the per-chunk function (`OnnxChunkModel`).
    """

    def __init__(self, onnx_path: str | os.PathLike, config: Any = None, providers: Sequence[str] | None = None,
                 **options: Any):
        from .config import load_config

        chunk_model = OnnxChunkModel(onnx_path, providers)
        if config is None:
            config = config_from_metadata(chunk_model)
        else:
            config = copy.deepcopy(load_config(config) if isinstance(config, (str, os.PathLike)) else config)
            chunk = config["audio"].get("chunk_size") if "audio" in config else None
            if chunk is not None and int(chunk) != chunk_model.chunk_samples:
                warnings.warn(f"{chunk_model.onnx_path.name} takes {chunk_model.chunk_samples}-sample chunks: "
                              f"audio.chunk_size {chunk} of the config is replaced by it", UserWarning, stacklevel=2)
            config["audio"]["chunk_size"] = chunk_model.chunk_samples
            if "inference" in config and "chunk_size" in config["inference"]:
                config["inference"]["chunk_size"] = chunk_model.chunk_samples
        super().__init__(config, model=chunk_model, device="cpu", precision="fp32", **options)
        self.chunk_model = chunk_model
        self.session = chunk_model.session
        self.chunk_samples = chunk_model.chunk_samples
        self.num_stems = chunk_model.num_stems
        self.audio_channels = chunk_model.audio_channels
        self.stft_kwargs = chunk_model.stft_kwargs

    def separate_chunk(self, audio: Tensor) -> Tensor:
        """(b, c, chunk_samples) -> (b, stems, c, chunk_samples): one call of the graph."""
        return self.chunk_model(audio)


def samples_argument(text: str) -> int:
    """A command line's chunk length: a positive whole number of samples (an argparse type)."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number of samples, got {text!r}")
    return int(text)


def main(argv: Sequence[str] | None = None) -> int:
    from .checkpoint import load_model
    from .config import load_config

    parser = argparse.ArgumentParser(prog="python -m bsmamba2_plugin.onnx_export", description=__doc__.split("\n")[0])
    parser.add_argument("--config_path", required=True, help="MSST bs_mamba2 YAML config")
    parser.add_argument("--start_check_point", default=None, help="checkpoint (.ckpt/.pt/.safetensors); none: random")
    parser.add_argument("--output", required=True, help="the .onnx file to write")
    parser.add_argument("--chunk_size", type=samples_argument, default=None,
                        help="samples per chunk the graph takes (default: the config's audio.chunk_size)")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET)
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config_path)
        chunk = args.chunk_size
        if chunk is None:
            audio = config.get("audio") if hasattr(config, "get") else None
            chunk = None if audio is None else audio.get("chunk_size")
            if chunk is None:
                parser.error(f"{args.config_path} has no audio.chunk_size; pass --chunk_size")
        if args.start_check_point is None:
            print("no --start_check_point: exporting randomly initialised weights", file=sys.stderr)
        model = load_model(config, args.start_check_point)
        written = export_onnx(model, args.output, chunk_samples=int(chunk), opset=args.opset, config=config)
    except (ValueError, OSError) as error:  # setup errors (CheckpointError, ConfigError too): one line, no traceback
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {written} ({frames_for(model.stft_kwargs, int(chunk))} STFT frames = {chunk} samples per chunk)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
