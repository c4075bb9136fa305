"""Run from an MSST checkout: scripts/stream.py's model path, without an audio device.

    python <this file> <report.json> <config.yaml> <checkpoint> <stereo.wav>     (cwd = the MSST checkout)

stream.py records from and plays to a sound card through pyaudio, which this machine has not.
So the unedited script is executed as a module (runpy, run_name not __main__, so its audio
loop does not start) and its own functions are called the way its main block and
type_1_main's process_audio call them: parse_args, load_model (get_model_from_config, then
the checkpoint's weights with strict load_state_dict), demix on a stereo copy of a mono
chunk. The report says which get_model_from_config stream.py bound and what came out.
"""
from __future__ import annotations

import json
import os
import runpy
import sys

import numpy as np
import soundfile as sf
import torch


def main() -> None:
    report, config_path, checkpoint, wav = sys.argv[1:5]
    from msst_compat.patching import is_patched

    namespace = runpy.run_path(os.path.join("scripts", "stream.py"), run_name="msst_stream_probe")
    # stream.py's dict form calls parse_args([]), which its required --type rejects: use argv.
    sys.argv = ["stream.py", "--type", "1", "--model_type", "bsmamba2", "--config_path", config_path,
                "--force_cpu"]
    args = namespace["parse_args"](None)
    model, config = namespace["load_model"](args, "cpu")
    # MSST's load_start_checkpoint needs lora_checkpoint_loralib, which stream.py's parser lacks,
    # so the weights are loaded the way load_start_checkpoint does before it reads that.
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    model.load_state_dict(state.get("model_state_dict", state))
    model.eval()
    mono, _ = sf.read(wav, dtype="float32")
    chunk = mono[: config.audio.chunk_size, 0]
    audio = np.concatenate([chunk[None], chunk[None]], axis=0)  # as process_audio builds it
    separated = namespace["demix"](config, model, audio, "cpu", model_type=args.model_type)
    findings = {
        "stream_factory_patched": is_patched(namespace["get_model_from_config"]),
        "model_class": type(model).__name__,
        "model_module": type(model).__module__,
        "stems": sorted(separated),
        "vocals_shape": list(separated["vocals"].shape),
        "input_shape": list(audio.shape),
        "vocals_finite": bool(np.isfinite(separated["vocals"]).all()),
    }
    with open(report, "w", encoding="utf-8") as handle:
        json.dump(findings, handle, indent=1)


if __name__ == "__main__":
    main()
