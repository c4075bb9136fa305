"""Peak memory of file separation for 1, 10 and 60 minutes of audio: it must not grow with length.

Each length runs in a fresh child process (so peaks do not mix) that loads a tiny BSMamba2, then
separates a generated stereo file with ``Separator.separate_file``; the child reports its peak
resident set size (``ru_maxrss``) before and after separating. A tiny model and a low model sample
rate keep the 60-minute run to a minute or two on a small CPU; the chunking, overlap-add, block
reading/writing and (with --input_rate) resampling paths are the ones every model uses.

    python benchmarks/separate_memory.py                     # 1, 10, 60 minutes
    python benchmarks/separate_memory.py --minutes 1 10 --input_rate 11025   # include resampling
    python benchmarks/separate_memory.py --minutes 60 --bigshifts 1 4 --use_tta   # extra passes

With several --bigshifts values each length runs once per value, and the last column gives the peak
relative to the first value's run (MSST's bigshifts and TTA passes are summed in a temporary file).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np
import soundfile as sf

CONFIG = """\
audio:
  chunk_size: 16384
  sample_rate: {rate}
training:
  instruments: [vocals]
  target_instrument: null
  use_amp: true
inference:
  num_overlap: 2
  batch_size: 4
model:
  dim: 16
  depth: 1
  num_stems: 1
  stft_n_fft: 256
  stft_hop_length: 128
  stft_win_length: 256
  freqs_per_bands: !!python/tuple [64, 65]
  mask_estimator_depth: 1
"""

CHILD = textwrap.dedent("""
    import json, resource, sys, time
    import torch
    torch.set_num_threads(1)
    from bsmamba2_plugin.separate import Separator
    config, checkpoint, audio, out, bigshifts, tta = sys.argv[1:7]
    separator = Separator(config, checkpoint, device="cpu", bigshifts=int(bigshifts), use_tta=tta == "1")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.time()
    written = separator.separate_file(audio, out)
    seconds = time.time() - start
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"before_kib": before, "peak_kib": after, "seconds": seconds,
                      "outputs": {k: str(v) for k, v in written.items()}}))
""")


def write_input(path: Path, minutes: float, rate: int, block: int = 1 << 20) -> int:
    frames = int(minutes * 60 * rate)
    rng = np.random.default_rng(0)
    with sf.SoundFile(str(path), "w", samplerate=rate, channels=2, subtype="FLOAT", format="WAV") as out:
        for start in range(0, frames, block):
            n = min(block, frames - start)
            t = (start + np.arange(n)) / rate
            tone = 0.2 * np.sin(2 * np.pi * 220.0 * t)
            out.write((np.stack([tone, -tone], axis=1) + 0.05 * rng.standard_normal((n, 2))).astype(np.float32))
    return frames


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, nargs="+", default=[1, 10, 60])
    parser.add_argument("--sample_rate", type=int, default=8000, help="the tiny model's sample rate")
    parser.add_argument("--input_rate", type=int, default=None, help="file rate (default: the model's)")
    parser.add_argument("--workdir", default=None, help="folder for the generated audio (default: a temp dir)")
    parser.add_argument("--bigshifts", type=int, nargs="+", default=[1], help="one run per value (default 1)")
    parser.add_argument("--use_tta", action="store_true", help="TTA in the runs with bigshifts > 1")
    args = parser.parse_args()
    input_rate = args.input_rate or args.sample_rate

    with tempfile.TemporaryDirectory(prefix="bsmamba2-bench-", dir=args.workdir) as tmp:
        work = Path(tmp)
        config = work / "tiny.yaml"
        config.write_text(CONFIG.format(rate=args.sample_rate))
        import torch

        from bsmamba2_plugin.checkpoint import load_model

        torch.manual_seed(0)
        torch.save({"model_state_dict": load_model(config).state_dict()}, work / "tiny.ckpt")

        print(f"model rate {args.sample_rate} Hz, file rate {input_rate} Hz, stereo, chunk 16384, overlap 2")
        print(f"{'minutes':>8} {'passes':>14} {'frames':>12} {'audio MiB':>10} {'peak RSS loaded MiB':>20} "
              f"{'peak RSS MiB':>13} {'growth MiB':>11} {'seconds':>8} {'x realtime':>10} {'peak / first':>12}")
        for minutes in args.minutes:
            audio = work / f"input_{minutes:g}min.wav"
            frames = write_input(audio, minutes, input_rate)
            first_peak = None
            for bigshifts in args.bigshifts:
                tta = args.use_tta and bigshifts > 1
                child = subprocess.run(
                    [sys.executable, "-c", CHILD, str(config), str(work / "tiny.ckpt"), str(audio), str(work / "out"),
                     str(bigshifts), "1" if tta else "0"],
                    capture_output=True, text=True,
                )
                if child.returncode != 0:
                    raise SystemExit(f"separation of {minutes} min failed:\n{child.stderr}")
                report = json.loads(child.stdout.strip().splitlines()[-1])
                written = sf.info(report["outputs"]["vocals"])
                if written.frames != frames:
                    raise SystemExit(f"{minutes} min: output has {written.frames} frames, input {frames}")
                before, peak = report["before_kib"] / 1024, report["peak_kib"] / 1024
                first_peak = first_peak or peak
                audio_mib = frames * 2 * 4 / 2**20  # the stereo input as float32, what an in-memory demix holds
                passes = f"{bigshifts} shift(s)" + (" x TTA" if tta else "")
                print(f"{minutes:>8g} {passes:>14} {frames:>12d} {audio_mib:>10.1f} {before:>20.1f} {peak:>13.1f} "
                      f"{peak - before:>11.1f} {report['seconds']:>8.1f} {minutes * 60 / report['seconds']:>10.1f} "
                      f"{peak / first_peak:>12.3f}", flush=True)
            audio.unlink()
            for path in (work / "out").rglob("*.wav"):
                path.unlink()


if __name__ == "__main__":
    main()
