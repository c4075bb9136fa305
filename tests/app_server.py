"""The web app's test set-up: a tiny model, generated clips, and the real app started as a subprocess.

The app runs as `python -m bsmamba2_plugin.app` on a free port of 127.0.0.1, with one torch thread
(the test computes the expected stems with one thread too, so they are bit-identical).
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import yaml

RATE = 8000
INSTRUMENTS = ["vocals", "other"]


def write_tiny_model(folder: Path) -> tuple[Path, Path]:
    """A two-stem model of a few thousand parameters (seconds per clip on one core) and its checkpoint."""
    from bsmamba2_plugin.checkpoint import load_model

    config = folder / "tiny.yaml"
    config.write_text(yaml.safe_dump({
        "audio": {"chunk_size": 2048, "sample_rate": RATE},
        "training": {"instruments": INSTRUMENTS, "target_instrument": None, "use_amp": True},
        "inference": {"num_overlap": 2, "batch_size": 2, "normalize": False},
        "model": {"dim": 16, "depth": 1, "num_stems": 2, "stft_n_fft": 256, "stft_hop_length": 64,
                  "stft_win_length": 256, "freqs_per_bands": [32, 32, 65], "mask_estimator_depth": 1},
    }))
    torch.manual_seed(0)
    model = load_model(config)
    checkpoint = folder / "tiny.ckpt"
    torch.save({"model_state_dict": model.state_dict()}, checkpoint)
    return config, checkpoint


def write_clip(path: Path, seconds: float = 3.0, rate: int = 11025, seed: int = 0) -> Path:
    """A stereo 'song' at another rate than the model's: a tone with pauses over a noise bed."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    voice = 0.3 * np.sin(2 * np.pi * 330 * t) * (np.sin(2 * np.pi * 0.5 * t) > 0)
    bed = 0.05 * rng.standard_normal(t.shape)
    sf.write(path, np.stack([voice + bed, 0.8 * voice + bed]).T.astype(np.float32), rate, subtype="FLOAT")
    return path


def write_broken(path: Path) -> Path:
    path.write_bytes(b"RIFF\x10\x00\x00\x00WAVEthis is not audio" * 20)
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class AppProcess:
    """`python -m bsmamba2_plugin.app ...` until ``stop()``; ``url`` once it listens."""

    def __init__(self, work_dir: Path, *args: str, timeout: float = 120.0):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.work_dir = work_dir
        self.log_path = work_dir.parent / f"app-{self.port}.log"
        env = dict(os.environ, OMP_NUM_THREADS="1", GRADIO_ANALYTICS_ENABLED="False")
        self._log = open(self.log_path, "w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bsmamba2_plugin.app", "--port", str(self.port), "--work_dir", str(work_dir),
             *args], stdout=self._log, stderr=subprocess.STDOUT, env=env, cwd=work_dir.parent)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the app exited with {self.process.returncode}:\n{self.log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    break
            except OSError:
                time.sleep(0.3)
        else:
            self.stop()
            raise RuntimeError(f"the app did not listen within {timeout} s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


def expected_stems(config: Path, checkpoint: Path, clip: Path, folder: Path) -> dict[str, np.ndarray]:
    """What the separator itself writes for ``clip`` (all stems and the instrumental), as arrays."""
    from bsmamba2_plugin.separate import Separator

    torch.set_num_threads(1)
    written = Separator(config, checkpoint, device="cpu").separate_file(
        clip, folder, filename_template="{instr}", extract_instrumental=True)
    return {name: sf.read(path, dtype="float32", always_2d=True)[0] for name, path in written.items()}
