"""Evaluation over MUSDB18HQ-style folders: numbers, aggregation, --duration segments, outputs."""
from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

from bsmamba2_plugin.evaluate import evaluate_tracks, find_tracks, summarize
from bsmamba2_plugin.evaluate.cli import main as evaluate_main
from bsmamba2_plugin.metrics import csdr, silent_leakage, usdr
from bsmamba2_plugin.separate import Separator

RATE = 8000


@pytest.fixture(autouse=True)
def one_thread():
    torch.set_num_threads(1)


def make_dataset(root: Path, names=("A - one", "B - two", "C - three")) -> dict[str, dict[str, np.ndarray]]:
    """Tracks whose vocals are silent for the first 2 s, plus estimates with known errors."""
    rng = np.random.default_rng(0)
    data = {}
    for k, name in enumerate(names):
        n = RATE * 4 + 500
        t = np.arange(n) / RATE
        vocals = (0.2 * np.sin(2 * np.pi * (300 + 50 * k) * t))[None].repeat(2, 0).astype(np.float32)
        vocals[:, : 2 * RATE] = 0
        other = (0.1 * rng.standard_normal((2, n))).astype(np.float32)
        folder = root / "test" / name
        folder.mkdir(parents=True)
        for stem, audio in (("vocals", vocals), ("other", other), ("mixture", vocals + other)):
            sf.write(folder / f"{stem}.wav", audio.T, RATE, subtype="FLOAT")
        estimate_vocals = vocals + (0.02 * (k + 1)) * other  # leaks the accompaniment everywhere
        estimate_other = other + 0.01 * rng.standard_normal((2, n)).astype(np.float32)
        estimates = root / "estimates" / name
        estimates.mkdir(parents=True)
        sf.write(estimates / "vocals.wav", estimate_vocals.T, RATE, subtype="FLOAT")
        sf.write(estimates / "other.wav", estimate_other.T, RATE, subtype="FLOAT")
        data[name] = {"vocals": (vocals, estimate_vocals), "other": (other, estimate_other)}
    return data


def test_estimates_folder_scores_match_the_metrics(tmp_path):
    data = make_dataset(tmp_path)
    tracks = find_tracks([tmp_path / "test"])
    assert [t.name for t in tracks] == sorted(data)
    evaluation = evaluate_tracks(tracks, estimates_folder=tmp_path / "estimates", stems=["vocals", "other"])
    assert evaluation.failed == {}
    for score in evaluation.scores:
        reference, estimate = data[score.track][score.stem]
        assert score.usdr_db == pytest.approx(usdr(reference, estimate), abs=1e-9)
        assert score.csdr_db == pytest.approx(csdr(reference, estimate, RATE), abs=1e-9)
        if score.stem == "vocals":
            assert score.leakage_dbfs == pytest.approx(silent_leakage(reference, estimate, RATE), abs=1e-9)
            assert score.silent_fraction == pytest.approx(2 * RATE / (4 * RATE + 500))
        else:
            assert math.isnan(score.leakage_dbfs)
    vocals = next(s for s in summarize(evaluation.scores) if s.stem == "vocals")
    per_track = [s for s in evaluation.scores if s.stem == "vocals"]
    assert vocals.usdr_mean == pytest.approx(np.mean([s.usdr_db for s in per_track]))
    assert vocals.csdr_median == pytest.approx(np.median([s.csdr_db for s in per_track]))
    assert vocals.leakage_mean == pytest.approx(np.mean([s.leakage_dbfs for s in per_track]))
    # more leakage in the estimate, higher level in the silent region
    assert per_track[0].leakage_dbfs < per_track[1].leakage_dbfs < per_track[2].leakage_dbfs


def test_csdr_in_evaluation_equals_museval(tmp_path):
    museval = pytest.importorskip("museval")
    data = make_dataset(tmp_path, names=("only",))
    evaluation = evaluate_tracks(find_tracks([tmp_path / "test"]), estimates_folder=tmp_path / "estimates",
                                 stems=["vocals"])
    reference, estimate = data["only"]["vocals"]
    frames, _, _, _ = museval.evaluate(reference.T[None], estimate.T[None], win=RATE, hop=RATE)
    assert evaluation.scores[0].csdr_db == pytest.approx(float(np.nanmedian(frames[0])), abs=1e-6)


def test_cli_writes_csv_table_and_png_and_reports_broken_tracks(tmp_path, capsys):
    make_dataset(tmp_path)
    (tmp_path / "estimates" / "C - three" / "other.wav").unlink()
    code = evaluate_main(["--valid_path", str(tmp_path / "test"), "--estimates_folder", str(tmp_path / "estimates"),
                          "--instruments", "vocals", "other", "--store_dir", str(tmp_path / "report")])
    captured = capsys.readouterr()
    assert code == 1
    assert "C - three" in captured.err and "no estimate for C - three/other" in captured.err
    assert "Instr vocals sdr:" in captured.out and "Metric avg sdr" in captured.out
    with open(tmp_path / "report" / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert {(r["track"], r["stem"]) for r in rows} == {(t, s) for t in ("A - one", "B - two") for s in ("vocals", "other")}
    assert (tmp_path / "report" / "metrics.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| vocals | 2 |" in (tmp_path / "report" / "summary.txt").read_text()


def test_stems_of_another_length_than_the_mixture_or_estimate(tmp_path):
    make_dataset(tmp_path, names=("A - one", "B - two"))
    vocals = tmp_path / "test" / "B - two" / "vocals.wav"
    sf.write(vocals, sf.read(vocals, dtype="float32")[0][:RATE], RATE, subtype="FLOAT")  # 1 s of 4 s
    with pytest.warns(UserWarning, match=rf"B - two.vocals.wav has {4 * RATE + 500} samples, the reference "
                                         rf".*B - two.vocals.wav {RATE}: scored over the first {RATE}"):
        evaluation = evaluate_tracks(find_tracks([tmp_path / "test"]), estimates_folder=tmp_path / "estimates",
                                     stems=["vocals"])
    assert [s.track for s in evaluation.scores] == ["A - one", "B - two"] and evaluation.failed == {}
    torch.manual_seed(0)
    separator = Separator(_tiny_config(tmp_path / "c.yaml"), device="cpu")
    evaluation = evaluate_tracks(find_tracks([tmp_path / "test"]), separator=separator, stems=["vocals"])
    assert [s.track for s in evaluation.scores] == ["A - one"]
    assert evaluation.failed["B - two"] == (f"ValueError: {vocals} has {RATE} samples, {vocals.parent / 'mixture.wav'} "
                                            f"{4 * RATE + 500}: a track's stems must be as long as its mixture")


def test_missing_folder_is_a_clear_error(tmp_path, capsys):
    code = evaluate_main(["--valid_path", str(tmp_path / "nowhere"), "--estimates_folder", str(tmp_path),
                          "--instruments", "vocals", "--store_dir", str(tmp_path / "r")])
    assert code == 2 and "does not exist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert evaluate_main(["--valid_path", str(tmp_path / "empty"), "--estimates_folder", str(tmp_path),
                          "--instruments", "vocals", "--store_dir", str(tmp_path / "r")]) == 2
    assert "mixture.wav" in capsys.readouterr().err


def _tiny_config(path: Path) -> Path:
    path.write_text(yaml.safe_dump({
        "audio": {"chunk_size": 2048, "sample_rate": RATE},
        "training": {"instruments": ["vocals", "other"], "target_instrument": None, "use_amp": True},
        "inference": {"precision": "fp32", "num_overlap": 2, "batch_size": 2},
        "model": {"dim": 16, "depth": 1, "num_stems": 2, "stft_n_fft": 256, "stft_hop_length": 64,
                  "stft_win_length": 256, "freqs_per_bands": [32, 32, 65], "mask_estimator_depth": 1},
    }))
    return path


def test_segments_are_separated_independently(tmp_path):
    torch.manual_seed(0)
    separator = Separator(_tiny_config(tmp_path / "c.yaml"), device="cpu")
    mixture = (np.random.default_rng(1).standard_normal((2, 3 * RATE + 500)) * 0.1).astype(np.float32)
    stems = separator.separate(mixture, RATE, segment_seconds=1)
    assert [stems[name].shape for name in ("vocals", "other")] == [(2, 3 * RATE)] * 2  # whole segments only
    with torch.inference_mode():
        for k in range(3):
            direct = separator.model(torch.from_numpy(mixture[None, :, k * RATE:(k + 1) * RATE])).numpy()[0]
            for s, name in enumerate(("vocals", "other")):  # one model input per segment, unit window
                np.testing.assert_array_equal(stems[name][:, k * RATE:(k + 1) * RATE], direct[s])


def test_model_evaluation_with_duration(tmp_path, capsys):
    make_dataset(tmp_path, names=("A - one", "B - two"))
    torch.manual_seed(0)
    config = _tiny_config(tmp_path / "c.yaml")
    code = evaluate_main(["--valid_path", str(tmp_path / "test"), "--config_path", str(config),
                          "--store_dir", str(tmp_path / "r1"), "--device", "cpu", "--duration", "1",
                          "--no_figure"])
    assert code == 0, capsys.readouterr().err
    with open(tmp_path / "r1" / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 4
    assert all(float(r["seconds"]) == 4.0 for r in rows)  # whole 1 s segments only; the 500-sample tail is out
    code = evaluate_main(["--valid_path", str(tmp_path / "test"), "--config_path", str(config),
                          "--store_dir", str(tmp_path / "r2"), "--device", "cpu", "--no_figure"])
    assert code == 0
    with open(tmp_path / "r2" / "metrics.csv") as handle:
        assert all(float(r["seconds"]) == pytest.approx(4.0625) for r in csv.DictReader(handle))
