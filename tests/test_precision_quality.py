"""bf16 inference against fp32 on a trained model: the validation figure barely moves."""
from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_fixtures import make_tracks, run_train, tiny_config  # noqa: E402

from bsmamba2_plugin.evaluate import evaluate_tracks, find_tracks, summarize  # noqa: E402
from bsmamba2_plugin.separate import Separator  # noqa: E402


def test_validation_usdr_in_bf16_is_within_0_05_db_of_fp32(tmp_path):
    config = tiny_config(tmp_path / "c.yaml", num_steps=8, num_epochs=2)
    train, valid = make_tracks(tmp_path / "train", count=3), make_tracks(tmp_path / "valid", count=2, seconds=1.0,
                                                                          with_mixture=True)
    done = run_train(["--config_path", str(config), "--data_path", str(train), "--valid_path", str(valid),
                      "--results_path", str(tmp_path / "r"), "--seed", "0"])
    assert done.returncode == 0, done.stdout + done.stderr
    checkpoint = tmp_path / "r" / "last_bsmamba2.ckpt"
    tracks = find_tracks([valid])
    figures = {}
    for precision in ("fp32", "bf16"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # bf16 where it is not native warns that it is slow
            separator = Separator(config, checkpoint, device="cpu", precision=precision)
        assert separator.precision.name == precision
        evaluation = evaluate_tracks(tracks, separator=separator)
        assert not evaluation.failed
        figures[precision] = float(np.mean([s.usdr_mean for s in summarize(evaluation.scores)]))
    print(f"validation uSDR fp32 {figures['fp32']:.4f} dB, bf16 {figures['bf16']:.4f} dB")
    assert figures["fp32"] > 1.0  # a trained model, so the comparison means something
    assert abs(figures["bf16"] - figures["fp32"]) < 0.05
