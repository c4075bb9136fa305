"""Peak memory of one web-app request for 1, 10 and 60 minutes of audio: it must not grow with length.

What the page does for an uploaded file, without the browser: ``bsmamba2_plugin.app.jobs.separate_uploads``
(``Separator.separate_file`` plus the instrumental, the levels where the vocal stem is silent, the
spectrogram picture of the whole track) and the zip of all stems. Each length runs in a fresh child
process on the tiny model of ``separate_memory.py``; the child reports its peak RSS before and after.

    python benchmarks/app_memory.py                 # 1, 10, 60 minutes
    python benchmarks/app_memory.py --minutes 1 10
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from separate_memory import CONFIG, write_input  # noqa: E402  (the same tiny model and generated input)

CHILD = textwrap.dedent("""
    import json, resource, sys, time
    from pathlib import Path
    import torch
    torch.set_num_threads(1)
    from bsmamba2_plugin.app.jobs import separate_uploads, zip_stems
    from bsmamba2_plugin.app.workspace import Workspace
    from bsmamba2_plugin.separate import Separator
    config, checkpoint, audio, work = sys.argv[1:5]
    separator = Separator(config, checkpoint, device="cpu")
    workspace = Workspace(work, keep_seconds=3600)
    folder = workspace.new_request()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.time()
    [result] = separate_uploads(separator, [(Path(audio), "song.wav")], folder, workspace)
    separated = time.time() - start
    archive = zip_stems([result], folder)
    seconds = time.time() - start
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"before_kib": before, "peak_kib": after, "seconds": seconds, "separated": separated,
                      "error": result.error, "stems": {k: str(v) for k, v in result.stems.items()},
                      "zip_bytes": archive.stat().st_size if archive else 0}))
""")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, nargs="+", default=[1, 10, 60])
    parser.add_argument("--sample_rate", type=int, default=8000, help="the tiny model's and the file's rate")
    parser.add_argument("--workdir", default=None, help="folder for the generated audio (default: a temp dir)")
    args = parser.parse_args()
    import soundfile as sf
    import torch

    from bsmamba2_plugin.checkpoint import load_model

    with tempfile.TemporaryDirectory(prefix="bsmamba2-app-bench-", dir=args.workdir) as tmp:
        work = Path(tmp)
        config = work / "tiny.yaml"
        config.write_text(CONFIG.format(rate=args.sample_rate))
        torch.manual_seed(0)
        torch.save({"model_state_dict": load_model(config).state_dict()}, work / "tiny.ckpt")
        print(f"model and file rate {args.sample_rate} Hz, stereo; stems: vocals + instrumental, levels, "
              f"spectrogram, zip")
        print(f"{'minutes':>8} {'audio MiB':>10} {'peak RSS loaded MiB':>20} {'peak RSS MiB':>13} {'growth MiB':>11} "
              f"{'separate s':>11} {'whole request s':>16} {'zip MiB':>8}")
        for minutes in args.minutes:
            audio = work / f"input_{minutes:g}min.wav"
            frames = write_input(audio, minutes, args.sample_rate)
            child = subprocess.run([sys.executable, "-c", CHILD, str(config), str(work / "tiny.ckpt"), str(audio),
                                    str(work / "app")], capture_output=True, text=True)
            if child.returncode != 0:
                raise SystemExit(f"{minutes} min failed:\n{child.stderr}")
            report = json.loads(child.stdout.strip().splitlines()[-1])
            if report["error"]:
                raise SystemExit(f"{minutes} min: {report['error']}")
            for name, path in report["stems"].items():
                if sf.info(path).frames != frames:
                    raise SystemExit(f"{minutes} min: {name} has {sf.info(path).frames} frames, input {frames}")
            before, peak = report["before_kib"] / 1024, report["peak_kib"] / 1024
            print(f"{minutes:>8g} {frames * 2 * 4 / 2**20:>10.1f} {before:>20.1f} {peak:>13.1f} {peak - before:>11.1f} "
                  f"{report['separated']:>11.1f} {report['seconds']:>16.1f} {report['zip_bytes'] / 2**20:>8.1f}",
                  flush=True)
            audio.unlink()
            for path in sorted((work / "app").rglob("*"), reverse=True):
                path.unlink() if path.is_file() else path.rmdir()
            (work / "app").mkdir(exist_ok=True)


if __name__ == "__main__":
    main()
