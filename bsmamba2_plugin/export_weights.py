"""Export any BSMamba2 checkpoint to a plain state dict (.ckpt/.pth/.pt) or .safetensors.

    python -m bsmamba2_plugin.export_weights --config_path CONFIG --start_check_point CKPT \\
        --output bsmamba2_vocals.safetensors [--weights auto|raw|ema] [--write_config bsmamba2_vocals.yaml]

CONFIG is an MSST YAML, an official `hparams.yaml` or an official run folder (then CKPT may be
left out when the folder holds one checkpoint). The weights are loaded into the model the config
builds first, so a file that does not fit is refused before anything is written; the output holds
exactly the model's state dict, with the key names MSST's BSMamba2Model and this package use,
readable by `torch.load(..., weights_only=True)` and by MSST-WebUI. `--write_config` writes the MSST
YAML the model was built from (for an official run: its hparams.yaml converted), so MSST's scripts
and MSST-WebUI get a config too.
"""
from __future__ import annotations

import argparse
import io
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from .atomic_file import atomic_path, write_bytes_atomically, write_text_atomically
from .checkpoint import SAFETENSORS_WEIGHTS_KEY, WEIGHT_CHOICES, CheckpointError, find_run_checkpoint, load_model
from .config import ConfigError, config_to_yaml, load_config

TORCH_SUFFIXES = (".ckpt", ".pth", ".pt", ".bin")


def export_weights(
    config_path: str | os.PathLike[str],
    checkpoint: str | os.PathLike[str] | None,
    output: str | os.PathLike[str],
    weights: str = "auto",
    config_output: str | os.PathLike[str] | None = None,
) -> str:
    """Write the model's state dict to `output` (format by suffix); returns what was exported, in words."""
    output = Path(output)
    suffix = output.suffix.lower()
    if suffix != ".safetensors" and suffix not in TORCH_SUFFIXES:
        raise ValueError(f"--output {output}: name it *.safetensors or one of {', '.join('*' + s for s in TORCH_SUFFIXES)}")
    if checkpoint is not None and Path(checkpoint).resolve() == output.resolve():
        raise ValueError(f"--output {output} is the checkpoint being read; choose another name")
    if checkpoint is None and Path(config_path).is_dir():
        checkpoint = find_run_checkpoint(config_path)
    config = load_config(config_path)  # once: an official hparams.yaml's conversion notes print once
    model = load_model(config, checkpoint, weights=weights)
    info = model.loaded_weights
    if info.path is None:
        raise ValueError(f"no checkpoint to export: give --start_check_point ({config_path} names none)")
    state = {key: value.detach().contiguous().cpu() for key, value in model.state_dict().items()}
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        kind = {"EMA": "ema", "raw": "raw"}.get(info.kind, "not recorded")
        metadata = {"format": "pt", SAFETENSORS_WEIGHTS_KEY: kind, "source": info.path.name, "model": "bsmamba2"}
        with atomic_path(output) as temporary:
            save_file(state, str(temporary), metadata=metadata)
    else:
        buffer = io.BytesIO()
        torch.save(state, buffer)
        write_bytes_atomically(output, buffer.getvalue())
    if config_output is not None:
        write_text_atomically(config_output, config_to_yaml(config))
    return f"{info} -> {output}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bsmamba2_plugin.export_weights",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--config_path", required=True,
                        help="MSST YAML, the official run's tb_logs/hparams.yaml, or the official run folder")
    parser.add_argument("--start_check_point", default=None,
                        help="checkpoint in any layout (default: the run folder's only weights/*.ckpt)")
    parser.add_argument("--output", required=True, help="*.safetensors, or *.ckpt / *.pth / *.pt for a plain state dict")
    parser.add_argument("--weights", choices=WEIGHT_CHOICES, default="auto",
                        help="auto: what the file offers for inference; raw or ema: insist (the official Lightning "
                             "files hold both: raw in state_dict, EMA in the optimizer state)")
    parser.add_argument("--write_config", default=None, metavar="YAML",
                        help="also write the MSST YAML of the model (useful for an official run's hparams.yaml)")
    args = parser.parse_args(argv)
    try:
        print(export_weights(args.config_path, args.start_check_point, args.output, args.weights,
                             args.write_config))
    except (CheckpointError, ConfigError, ValueError) as error:
        print(f"export_weights: {error}", file=sys.stderr)
        return 2
    if args.write_config:
        print(f"config -> {args.write_config}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
