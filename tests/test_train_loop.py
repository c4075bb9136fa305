"""The training loop: paper loss, non-finite handling, DDP sync, TensorBoard, command-line flags."""
from __future__ import annotations

import os
import socket

import numpy as np
import pytest
import soundfile as sf
import torch
import torch.multiprocessing as mp

from bsmamba2_plugin.train.cli import main as train_main
from bsmamba2_plugin.train.cli import parse_args
from bsmamba2_plugin.train.loss import PaperLoss
from bsmamba2_plugin.train.trainer import EpochBatches
from train_fixtures import RATE, make_tracks, run_train, tiny_config, with_keys


def test_paper_loss_matches_its_definition():
    settings = dict(resolution_weight=1.0, window_sizes=(512, 256), hop_size=128, normalized=False, n_fft=256)
    loss = PaperLoss(settings, waveform_weight=10.0)
    g = torch.Generator().manual_seed(0)
    est, ref = torch.randn(2, 1, 2, 3000, generator=g), torch.randn(2, 1, 2, 3000, generator=g)
    expected = 10 * (est - ref).abs().mean()
    for w in (512, 256):  # n_fft = max(window, 256), complex modulus of the difference
        spec = lambda x: torch.stft(x.reshape(-1, 3000), n_fft=max(w, 256), hop_length=128, win_length=w,  # noqa: E731
                                    window=torch.hann_window(w), center=True, return_complex=True)
        expected = expected + (spec(est) - spec(ref)).abs().mean()
    assert torch.allclose(loss(est, ref), expected, rtol=1e-6)
    assert loss(ref, ref).item() == 0.0


def test_epoch_batches_split_the_examples_between_processes_and_resume_mid_epoch():
    rank0 = list(EpochBatches(4, 2, 0, 2, 0))
    rank1 = list(EpochBatches(4, 2, 1, 2, 0))
    assert sorted(rank0 + rank1) == list(range(16)) and not set(rank0) & set(rank1)
    assert list(EpochBatches(4, 2, 0, 1, 3)) == [6, 7]


def nan_tracks(root, count, value=np.nan):
    root = make_tracks(root, count=count)
    for k in range(count):
        x, _ = sf.read(root / f"track_{k}" / "vocals.wav", dtype="float32")
        x[::1000] = value  # in every window
        sf.write(root / f"track_{k}" / "vocals.wav", x, RATE, subtype="FLOAT")
    return root


def test_non_finite_losses_are_skipped_and_a_streak_stops_keeping_the_last_checkpoint(tmp_path):
    good = make_tracks(tmp_path / "good", count=2)
    config = tiny_config(tmp_path / "tiny.yaml", num_steps=2, num_epochs=1)
    results = tmp_path / "results"
    first = run_train(["--config_path", str(config), "--data_path", str(good), "--results_path", str(results),
                       "--no_tensorboard"])
    assert first.returncode == 0, first.stdout + first.stderr
    last = results / "last_bsmamba2.ckpt"
    before = last.read_bytes()

    # Continue for another epoch on data that is all NaN: every loss is non-finite.
    config = tiny_config(tmp_path / "tiny.yaml", num_steps=20, num_epochs=2)
    bad = nan_tracks(tmp_path / "bad", count=2)
    second = run_train(["--config_path", str(config), "--data_path", str(bad), "--results_path", str(results),
                        "--no_tensorboard", "--max_nonfinite_in_row", "3"])
    assert second.returncode == 2
    assert "3 non-finite losses/gradients in a row" in second.stderr
    assert f"the last good checkpoint is {last}" in second.stderr
    assert "non-finite loss at epoch 0 batch 4: skipped (3 in a row" in second.stdout  # resumed at batch 2
    assert last.read_bytes() == before  # untouched, and still a good checkpoint
    ckpt = torch.load(last, map_location="cpu", weights_only=True)
    assert all(torch.isfinite(v).all() for v in ckpt["model_state_dict"].values())


def test_an_occasional_non_finite_batch_is_skipped_and_counted(tmp_path):
    data = make_tracks(tmp_path / "train", count=3)
    nan_tracks(tmp_path / "nan", count=1, value=np.inf)  # NaN windows would fail mean|x| >= min_mean_abs
    os.replace(tmp_path / "nan" / "track_0", data / "track_nan")
    config = tiny_config(tmp_path / "tiny.yaml", num_steps=6, num_epochs=1, silent_stem_prob=0.0,
                         activity_check={"enable": False})  # the check would redraw NaN windows away
    result = run_train(["--config_path", str(config), "--data_path", str(data), "--results_path",
                        str(tmp_path / "r"), "--no_tensorboard"])
    assert result.returncode == 0, result.stdout + result.stderr
    skipped = int(result.stdout.split(" non-finite batches skipped")[0].rsplit(", ", 1)[1])
    assert 0 < skipped < 6


def test_tensorboard_gets_losses_learning_rate_and_metrics(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    data = make_tracks(tmp_path / "train", count=2)
    valid = make_tracks(tmp_path / "valid", count=1, seconds=2.5, with_mixture=True)  # 1 s silent: leakage
    config = tiny_config(tmp_path / "tiny.yaml", num_steps=2, num_epochs=1)
    result = run_train(["--config_path", str(config), "--data_path", str(data), "--valid_path", str(valid),
                        "--results_path", str(tmp_path / "r")])
    assert result.returncode == 0, result.stdout + result.stderr
    events = EventAccumulator(str(tmp_path / "r" / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/lr", "train/grad_norm", "valid/vocals/sdr", "valid/vocals/csdr",
            "valid/vocals/leakage", "valid/avg_sdr"} <= tags
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2]


def test_msst_command_lines_parse_and_msst_only_flags_are_named(tmp_path, capsys):
    args = parse_args(["--model_type", "bsmamba2", "--config_path", "c.yaml", "--results_path", "r",
                       "--data_path", "a", "b", "--dataset_type", "4", "--valid_path", "v", "--num_workers", "2",
                       "--device_ids", "0", "--seed", "5", "--start_check_point", "x.ckpt", "--metrics", "sdr",
                       "--load_optimizer", "--pre_valid"])
    assert args.data_path == ["a", "b"] and args.dataset_type == 4 and args.seed == 5 and args.load_optimizer
    with pytest.raises(SystemExit):
        parse_args(["--config_path", "c.yaml", "--data_path", "a", "--results_path", "r", "--safe_mode"])
    assert "--safe_mode is an MSST train.py option" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_args(["--config_path", "c.yaml"])
    assert "--data_path and --results_path required" in capsys.readouterr().err


def _ddp_worker(rank: int, world: int, port: int, argv: list[str], out: str) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), BSMAMBA2_FORCE_GLOO="1")
    torch.set_num_threads(1)
    from bsmamba2_plugin.train.trainer import Trainer

    trainer = Trainer(parse_args(argv))
    try:
        state = trainer.run()
        compiled_layers = sum(type(m).__name__ == "OptimizedModule" for m in trainer.train_model.modules())
        torch.save({"weights": trainer.model.state_dict(), "losses": state.all_losses, "steps": state.global_step,
                    "compiled_layers": compiled_layers}, os.path.join(out, f"rank{rank}.pt"))
    finally:
        trainer.close()


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_two_gloo_processes_keep_their_weights_in_sync(tmp_path, compiled):
    """Compiled: DDP around the view whose layers torch.compile runs (the gradient hooks stay eager)."""
    data = make_tracks(tmp_path / "train", count=3)
    valid = make_tracks(tmp_path / "valid", count=1, with_mixture=True)
    config = tiny_config(tmp_path / "tiny.yaml", num_steps=3, num_epochs=1, gradient_accumulation_steps=2)
    argv = ["--config_path", str(config), "--data_path", str(data), "--valid_path", str(valid), "--results_path",
            str(tmp_path / "r"), "--force_cpu", "--no_progress", "--no_tensorboard"] + ["--compile"] * compiled
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_ddp_worker, args=(2, port, argv, str(tmp_path)), nprocs=2, join=True)
    a = torch.load(tmp_path / "rank0.pt", weights_only=True)
    b = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert a["steps"] == b["steps"] == 2  # 3 batches, accumulation 2: steps after batch 2 and the last
    assert a["compiled_layers"] == b["compiled_layers"] == (2 if compiled else 0)  # depth 1: a time and a band layer
    for name in a["weights"]:
        assert torch.equal(a["weights"][name], b["weights"][name]), f"{name} differs between processes"
    initial = torch.load(tmp_path / "r" / "last_bsmamba2.ckpt", weights_only=True)
    assert initial["global_step"] == 2 and (tmp_path / "r" / "validation_metrics.csv").is_file()


@pytest.mark.parametrize("variable, expected", [
    ("BSMAMBA2_CPU_GEMM", "BSMAMBA2_CPU_GEMM='blas' is not a CPU GEMM choice; expected one of auto, mkl, onednn"),
    ("BSMAMBA2_BACKEND", "BSMAMBA2_BACKEND='blas' is not a Mamba2 backend; expected one of auto, torch, mamba_ssm")])
def test_a_wrong_model_setting_in_the_environment_stops_training_before_it_starts(tmp_path, monkeypatch,
                                                                                 variable, expected):
    monkeypatch.setenv(variable, "blas")
    data = make_tracks(tmp_path / "train", count=2)
    run = run_train(["--config_path", str(tiny_config(tmp_path / "tiny.yaml")), "--data_path", str(data),
                     "--results_path", str(tmp_path / "results")])
    assert run.returncode == 2, run.stdout + run.stderr
    assert f"error: {expected}" in run.stderr, run.stderr
    assert "epoch" not in run.stdout + run.stderr


@pytest.mark.parametrize("model_keys, expected", [
    ({"dimm": 32}, "unknown key(s) in the model section: model.dimm; BSMamba2 takes"),
    ({"depth": 0}, "model.depth must be a positive integer, got 0"),
    ({"stereo": "yes"}, "the model section: Method bsmamba2_plugin.model.bsmamba2.BSMamba2.__init__() "
                        "parameter stereo='yes'")])
def test_a_wrong_model_value_stops_training_with_one_line(tmp_path, model_keys, expected):
    data = make_tracks(tmp_path / "train", count=2)
    config = with_keys(tiny_config(tmp_path / "tiny.yaml"), model=model_keys)
    run = run_train(["--config_path", str(config), "--data_path", str(data), "--results_path", str(tmp_path / "r")])
    assert run.returncode == 2, run.stdout + run.stderr
    assert f"error: {config}: {expected}" in run.stderr, run.stderr
    assert "Traceback" not in run.stderr and "is ignored" not in run.stderr, run.stderr


@pytest.mark.parametrize("section, key, value, expected", [
    ("training", "batch_size", 0, "training.batch_size must be a positive integer, got 0"),
    ("training", "num_steps", 0, "training.num_steps must be a positive integer, got 0"),
    ("training", "num_epochs", -1, "training.num_epochs must be a positive integer, got -1"),
    ("training", "gradient_accumulation_steps", 0, "training.gradient_accumulation_steps must be a positive integer"),
    ("training", "lr", -1.0, "training.lr must be a number above 0, got -1.0"),
    ("training", "lr", "fast", "training.lr must be a number above 0, got 'fast'"),
    ("training", "grad_clip", -1, "training.grad_clip must be a number, 0 or more, got -1"),
    ("training", "ema_momentum", 1.0, "training.ema_momentum must be a number in [0, 1), got 1.0"),
    ("training", "waveform_loss_weight", -1, "training.waveform_loss_weight must be a number, 0 or more"),
    ("training", "reduce_factor", 1.5, "training.reduce_factor must be a number in (0, 1), got 1.5"),
    ("training", "patience", -1, "training.patience must be a whole number, 0 or more, got -1"),
    ("training", "normalize", "no", "training.normalize='no': expected true or false"),
    ("audio", "sample_rate", 0, "audio.sample_rate must be a positive integer, got 0"),
])
def test_a_training_value_out_of_range_stops_at_setup(tmp_path, capsys, section, key, value, expected):
    data = make_tracks(tmp_path / "train", count=2)
    config = with_keys(tiny_config(tmp_path / "tiny.yaml"), **{section: {key: value}})
    code = train_main(["--config_path", str(config), "--data_path", str(data), "--results_path", str(tmp_path / "r"),
                       "--no_progress", "--no_tensorboard"])
    err = capsys.readouterr().err
    assert code == 2 and f"error: {expected}" in err, err


def test_yaml_exponents_without_a_dot_are_numbers(tmp_path):
    """PyYAML reads `lr: 1e-4` as the text '1e-4'; MSST's float() takes it, and so does the trainer."""
    from bsmamba2_plugin.settings import number_in

    assert number_in("1e-4", "training.lr", 0, low_open=True) == 1e-4
    with pytest.raises(ValueError, match="training.lr must be a number above 0, got True"):
        number_in(True, "training.lr", 0, low_open=True)
    with pytest.raises(ValueError, match=r"training.q must be a number in \[0, 1\], got nan"):
        number_in(float("nan"), "training.q", 0, 1)
