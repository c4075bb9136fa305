"""Resume: N steps in one go == N/2 steps, SIGKILL, the same command again (bit-identical weights)."""
from __future__ import annotations

import signal
import time

import torch

from bsmamba2_plugin.checkpoint import load_model
from train_fixtures import make_tracks, run_train, start_train, tiny_config

CHECKPOINT_KEYS = {"model_state_dict", "optimizer_state_dict", "scheduler_state_dict", "epoch", "best_metric",
                   "all_metrics", "all_losses", "optimizer_name"}


def final_state(results):
    ckpt = torch.load(results / "last_bsmamba2.ckpt", map_location="cpu", weights_only=True)
    return ckpt


def test_kill_and_resume_gives_the_same_weights(tmp_path):
    data = make_tracks(tmp_path / "train", count=3)
    valid = make_tracks(tmp_path / "valid", count=1, with_mixture=True)
    # 2 epochs x 4 batches, accumulation 2: 4 optimizer steps; a checkpoint after every step
    config = tiny_config(tmp_path / "tiny.yaml", gradient_accumulation_steps=2)
    common = ["--config_path", str(config), "--data_path", str(data), "--valid_path", str(valid),
              "--save_every_steps", "1", "--seed", "7", "--no_tensorboard"]

    straight = tmp_path / "straight"
    done = run_train(common + ["--results_path", str(straight)])
    assert done.returncode == 0, done.stdout + done.stderr

    killed = tmp_path / "killed"
    process = start_train(common + ["--results_path", str(killed)])
    last = killed / "last_bsmamba2.ckpt"
    deadline = time.time() + 240
    while time.time() < deadline:  # kill as soon as a checkpoint at step >= 2 exists (N/2)
        if last.is_file():
            try:
                if torch.load(last, map_location="cpu", weights_only=True)["global_step"] >= 2:
                    break
            except Exception:  # noqa: BLE001 - being replaced right now; atomic, so retry
                pass
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    interrupted = torch.load(last, map_location="cpu", weights_only=True)
    assert 2 <= interrupted["global_step"] < 4, "the kill must land before the end of the run"
    resumed = run_train(common + ["--results_path", str(killed)])
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "Resuming from" in resumed.stdout

    a, b = final_state(straight), final_state(killed)
    assert a["global_step"] == b["global_step"] == 4
    for key in ("model_state_dict", "raw_model_state_dict"):
        assert a[key].keys() == b[key].keys()
        for name in a[key]:
            assert torch.equal(a[key][name], b[key][name]), f"{key}.{name} differs after resume"
    assert a["all_losses"] == b["all_losses"]
    assert a["best_metric"] == b["best_metric"]
    # The raw weights really moved (the equality above is not of two untouched models).
    first = load_model(config)
    assert any(not torch.equal(first.state_dict()[k], a["raw_model_state_dict"][k]) for k in a["raw_model_state_dict"])


def test_checkpoint_has_msst_keys_names_and_loads(tmp_path):
    data = make_tracks(tmp_path / "train", count=2)
    valid = make_tracks(tmp_path / "valid", count=1, with_mixture=True)
    config = tiny_config(tmp_path / "tiny.yaml", num_steps=2, num_epochs=1)
    results = tmp_path / "results"
    done = run_train(["--config_path", str(config), "--data_path", str(data), "--valid_path", str(valid),
                      "--results_path", str(results), "--no_tensorboard"])
    assert done.returncode == 0, done.stdout + done.stderr
    best = sorted(results.glob("model_bsmamba2_ep_0_sdr_*.ckpt"))
    assert len(best) == 1, list(results.iterdir())
    value = float(best[0].stem.rsplit("_", 1)[1])
    assert f"Store weights: {best[0]}" in done.stdout
    for path in (best[0], results / "last_bsmamba2.ckpt"):
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        assert CHECKPOINT_KEYS <= set(ckpt), CHECKPOINT_KEYS - set(ckpt)
        assert {"raw_model_state_dict", "scaler_state_dict", "global_step", "rng_state", "ema_updates"} <= set(ckpt)
        assert ckpt["optimizer_name"] == "AdamW" and ckpt["model_state_dict_holds"] == "ema"
        assert round(ckpt["best_metric"], 4) == value
        model = load_model(config, path)  # the package's loader (and so MSST's model_state_dict path)
        for name, tensor in model.state_dict().items():
            assert torch.equal(tensor, ckpt["model_state_dict"][name])
    # The CSV has one row per (epoch, track, stem) with the three metrics.
    rows = (results / "validation_metrics.csv").read_text().splitlines()
    assert rows[0].startswith("epoch,track,stem,seconds,usdr_db,csdr_db,leakage_dbfs")
    assert len(rows) == 2 and rows[1].startswith("0,track_0,vocals,")
    assert "Instr vocals sdr:" in done.stdout and "silent-region leakage" in done.stdout
