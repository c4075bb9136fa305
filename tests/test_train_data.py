"""Training data: MSST layout, bad files, silence training, activity check, determinism, demo dataset."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from bsmamba2_plugin.config import load_config
from bsmamba2_plugin.train.activity import ActivityCheck
from bsmamba2_plugin.train.dataset import COUNTER_NAMES, MSSTrainingDataset
from bsmamba2_plugin.train.demo_data import DemoSpec, ensure_demo_dataset
from bsmamba2_plugin.train.errors import TrainingDataError
from bsmamba2_plugin.train.validation import find_validation_tracks
from train_fixtures import RATE, make_tracks, run_train, tiny_config


def dataset(tmp_path, paths, dataset_type=1, **training):
    config = load_config(tiny_config(tmp_path / "tiny.yaml", **training))
    return MSSTrainingDataset(config, [str(p) for p in paths], dataset_type, examples_per_epoch=8, seed=3)


def test_items_are_a_function_of_seed_epoch_index(tmp_path):
    data = make_tracks(tmp_path / "train", count=3)
    a, b = dataset(tmp_path, [data]), dataset(tmp_path, [data])
    stems, mixture, counters = a[5]
    assert stems.shape == (1, 2, 4096) and mixture.shape == (2, 4096) and counters.shape == (len(COUNTER_NAMES),)
    assert all(np.array_equal(x, y) for x, y in zip(a[5], b[5]))
    b.set_epoch(1)
    assert not np.array_equal(a[5][1], b[5][1])


def test_silence_training_zeroes_whole_stems_at_the_configured_rate(tmp_path):
    data = make_tracks(tmp_path / "train", count=3)
    ds = dataset(tmp_path, [data], silent_stem_prob=0.5, target_instrument=None)
    ds.examples_per_epoch = 200
    silent = sum(int((ds[i][0].abs().amax(dim=(1, 2)) == 0).sum()) for i in range(200))
    assert 160 < silent < 240  # 400 stems, p = 0.5
    none = dataset(tmp_path, [data], silent_stem_prob=0.0, target_instrument=None)
    assert all(bool((none[i][0].abs().amax(dim=(1, 2)) > 0).all()) for i in range(20))


def test_activity_check_rejects_mostly_silent_windows():
    check = ActivityCheck()
    busy = np.random.default_rng(0).standard_normal((2, 10000)).astype(np.float32) * 0.1
    mostly_silent = busy.copy()
    mostly_silent[:, 3000:] = 0.0
    assert check.is_active(busy) and not check.is_active(mostly_silent)
    assert not check.is_active(np.zeros((2, 10000), np.float32))


def test_activity_check_redraws_windows_from_sparse_stems(tmp_path):
    data = make_tracks(tmp_path / "train", count=2, seconds=2.0)
    for k in range(2):  # vocals silent in the first 70 %: many windows fail the check
        path = data / f"track_{k}" / "vocals.wav"
        x, _ = sf.read(path, dtype="float32")
        x[: int(0.7 * len(x))] = 0.0
        sf.write(path, x, RATE, subtype="FLOAT")
    ds = dataset(tmp_path, [data], silent_stem_prob=0.0)
    redrawn = sum(int(ds[i][2][0]) for i in range(8))
    assert redrawn > 0
    assert all(ActivityCheck().is_active(ds[i][0][0].numpy()) or int(ds[i][2][1]) == 1 for i in range(8))


def test_mono_is_made_stereo_and_type_4_is_aligned(tmp_path):
    data = make_tracks(tmp_path / "train", count=1, seconds=0.3)
    x, _ = sf.read(data / "track_0" / "other.wav", dtype="float32")
    sf.write(data / "track_0" / "other.wav", x[:, 0], RATE, subtype="FLOAT")  # mono
    ds = dataset(tmp_path, [data], dataset_type=4, target_instrument=None, silent_stem_prob=0.0,
                 activity_check={"enable": False})
    stems, mixture, _ = ds[0]
    assert stems.shape == (2, 2, 4096)
    assert np.allclose(stems.sum(0), mixture, atol=1e-6)


@pytest.mark.parametrize("problem", ["missing", "garbage", "truncated", "rate", "channels"])
def test_one_broken_file_is_skipped_and_counted(tmp_path, problem):
    data = make_tracks(tmp_path / "train", count=3)
    bad = data / "track_1" / "vocals.wav"
    if problem == "missing":
        bad.unlink()
    elif problem == "garbage":
        bad.write_bytes(b"not audio at all" * 100)
    elif problem == "truncated":
        bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
    elif problem == "rate":
        sf.write(bad, np.zeros((4000, 2), np.float32) + 0.1, 22050)
    else:
        sf.write(bad, np.zeros((4000, 3), np.float32) + 0.1, RATE)
    with pytest.warns(UserWarning, match="track_1"):
        ds = dataset(tmp_path, [data])
    assert len(ds.report.skipped) == 1 and "track_1" in ds.report.skipped[0]
    expected = {"missing": "no vocals.wav", "garbage": "cannot be read", "truncated": "truncated",
                "rate": "22050 Hz", "channels": "3 channels"}[problem]
    assert expected in ds.report.skipped[0]
    assert len(ds.by_instrument["vocals"]) == 2 and len(ds.by_instrument["other"]) == 3
    ds[0]  # still trains


def test_no_usable_file_for_an_instrument_is_an_error(tmp_path):
    data = make_tracks(tmp_path / "train", count=2)
    for k in range(2):
        (data / f"track_{k}" / "vocals.wav").unlink()
    with pytest.raises(TrainingDataError, match=r"no usable vocals file(.|\n)*track_1: no vocals.wav"):
        dataset(tmp_path, [data])


def test_empty_or_missing_data_path_is_an_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(TrainingDataError, match="has no track folders"):
        dataset(tmp_path, [tmp_path / "empty"])
    with pytest.raises(TrainingDataError, match="does not exist"):
        dataset(tmp_path, [tmp_path / "nowhere"])


def test_validation_tracks_are_checked_at_start(tmp_path):
    valid = make_tracks(tmp_path / "valid", count=2, with_mixture=True)
    assert len(find_validation_tracks([str(valid)], ["vocals", "other"], RATE)) == 2
    other = valid / "track_1" / "other.wav"
    sf.write(other, sf.read(other, dtype="float32")[0][:100], RATE, subtype="FLOAT")
    with pytest.raises(TrainingDataError, match=rf"validation file {other} has 100 samples, "
                                                rf"{valid / 'track_1' / 'mixture.wav'} {RATE // 2}: a track's stems"):
        find_validation_tracks([str(valid)], ["vocals", "other"], RATE)
    assert len(find_validation_tracks([str(valid)], ["vocals"], RATE)) == 2  # other not validated: not read
    with pytest.raises(TrainingDataError, match=rf"is at {RATE} Hz, the config's audio.sample_rate is 16000 Hz"):
        find_validation_tracks([str(valid)], ["vocals"], 16000)


def test_command_line_reports_data_errors_clearly(tmp_path):
    (tmp_path / "empty").mkdir()
    config = tiny_config(tmp_path / "tiny.yaml")
    result = run_train(["--config_path", str(config), "--data_path", str(tmp_path / "empty"),
                        "--results_path", str(tmp_path / "r")])
    assert result.returncode == 2
    assert "error: --data_path" in result.stderr and "has no track folders" in result.stderr
    assert "Traceback" not in result.stderr


def test_other_dataset_types_use_the_msst_package(tmp_path):
    pytest.importorskip("msst.utils.dataset")
    data = make_tracks(tmp_path / "train", count=2)
    from bsmamba2_plugin.train.dataset import SeededMSSTDataset

    config = load_config(tiny_config(tmp_path / "tiny.yaml"))
    ds = SeededMSSTDataset(config, [str(data)], 4, 4, seed=1, metadata_path=str(tmp_path / "meta.pkl"))
    stems, mixture, _ = ds[0]
    assert stems.shape == (1, 2, 4096) and mixture.shape == (2, 4096)
    assert np.array_equal(ds[1][1], ds[1][1])  # reseeded per index


def test_demo_dataset_is_deterministic_and_cached(tmp_path):
    spec = DemoSpec(train_tracks=2, train_seconds=3.0, valid_tracks=1, valid_seconds=3.0)
    a = ensure_demo_dataset(tmp_path / "a", spec)
    b = ensure_demo_dataset(tmp_path / "b", spec)
    for name in ("train/train_00/vocals.wav", "train/train_01/other.wav", "valid/valid_00/mixture.wav"):
        # Same seeds, same signal; NumPy's SIMD sin/exp may differ in the last bit with array alignment.
        x, y = sf.read(a / name)[0], sf.read(b / name)[0]
        assert x.shape == y.shape and np.allclose(x, y, rtol=0, atol=1e-6)
    stamp = (a / "train/train_00/vocals.wav").stat().st_mtime_ns
    assert ensure_demo_dataset(tmp_path / "a", spec) == a
    assert (a / "train/train_00/vocals.wav").stat().st_mtime_ns == stamp  # reused, not rewritten
    vocals, _ = sf.read(a / "valid/valid_00/vocals.wav")
    silent = np.mean(np.abs(vocals[:, 0]) == 0)
    assert 0.2 < silent < 0.8, "the demo voice must be intermittent"
    mixture, _ = sf.read(a / "valid/valid_00/mixture.wav")
    other, _ = sf.read(a / "valid/valid_00/other.wav")
    assert np.allclose(mixture, vocals + other, atol=1e-6)
