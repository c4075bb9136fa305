"""A real checkout of ZFTurbo/Music-Source-Separation-Training, unedited, runs bsmamba2:
train.py and valid.py through the installed .pth hook, inference.py through the explicit
launcher (`python -m msst_compat inference.py ...` with the .pth hook switched off).

The other entry points, on this CPU-only machine:
- train_accelerate.py: really trained, two processes under torchrun (gloo, ACCELERATE_USE_CPU),
  each a fresh interpreter that gets the plugin only from the .pth hook; needs `accelerate`.
- train_ddp.py / valid_ddp.py: NOT run as scripts. They spawn torch.cuda.device_count() workers
  (0 here: they exit at once, doing nothing) and each worker calls torch.cuda.set_device and
  moves the model to cuda:<rank>. What is exercised instead (tests/msst_spawn_probe.py): two
  workers started the same way (torch.multiprocessing.spawn, arguments via sys.argv, gloo),
  each importing the checkout's train_ddp and valid_ddp, checking that the
  get_model_from_config their worker functions call is the wrapped one, building bsmamba2 through
  it from MSST's own parsed arguments and taking one DDP step. Not exercised: NCCL, CUDA, and
  MSST's train loop inside DDP workers.
- scripts/stream.py: the unedited script runs until its checkpoint loading, where MSST's own
  load_start_checkpoint reads args.lora_checkpoint_loralib, which stream.py's parser does not
  define (an MSST bug, any model type). tests/msst_stream_probe.py then imports it as a module
  and calls its parse_args, load_model and demix as its main block does; the sound card part
  (pyaudio streams, keyboard) cannot run here. Needs pyaudio and keyboard importable.

Needs MSST_CHECKOUT=<path of the checkout>; skipped without it. MSST_PYTHON may name the
interpreter to run MSST with (default: this one); it needs MSST's imports (wandb, librosa,
omegaconf, audiomentations, pedalboard, matplotlib, torch_log_wmse, auraloss) and, for
valid.py's metrics, numpy < 2.4. torchaudio is the test-only import stand-in of
tests/torchaudio_stand_in (see there and test_msst_package.py for why).
"""
from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parent))
from msst_tiny_run import INSTRUMENTS, subprocess_env, write_tiny_config, write_type1_dataset  # noqa: E402

CHECKOUT = os.environ.get("MSST_CHECKOUT")
PYTHON = os.environ.get("MSST_PYTHON", sys.executable)

pytestmark = pytest.mark.skipif(not CHECKOUT, reason="set MSST_CHECKOUT to a checkout of MSST to run these")


TESTS_DIR = Path(__file__).resolve().parent


def run_script(args: list[str], log: Path, launcher: bool = False, extra_env: dict[str, str] | None = None,
               expect_success: bool = True) -> str:
    env = subprocess_env(stand_in_torchaudio=True)
    env.update(extra_env or {})
    command = [PYTHON, *args]
    if launcher:
        env["MSST_COMPAT_DISABLE"] = "1"  # only the launcher can make bsmamba2 known
        command = [PYTHON, "-m", "msst_compat", *args]
    result = subprocess.run(command, cwd=CHECKOUT, capture_output=True, text=True, env=env, timeout=600,
                            stdin=subprocess.DEVNULL)
    log.write_text(result.stdout + result.stderr)
    assert result.returncode == 0 or not expect_success, f"{' '.join(command)} failed:\n{(result.stdout + result.stderr)[-4000:]}"
    return result.stdout + result.stderr


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    checkout = Path(CHECKOUT)
    for marker in ("train.py", "inference.py", "valid.py", "utils/settings.py", "models"):
        assert (checkout / marker).exists(), f"MSST_CHECKOUT={checkout} has no {marker}: not an MSST checkout"
    work = tmp_path_factory.mktemp("msst_checkout")
    tiny = write_tiny_config(work / "tiny.yaml", num_steps=3)
    # No training.model_type in this one: --model_type bsmamba2 alone must select the plugin.
    (work / "plain.yaml").write_text(tiny.read_text().replace("  model_type: bsmamba2\n", ""))
    write_type1_dataset(work / "train", tracks=3, seconds=1.0, with_mixture=False, seed=0)
    write_type1_dataset(work / "valid", tracks=1, seconds=0.5, with_mixture=True, seed=1)
    # train_accelerate.py's validation reads training.other_fix when a stem is called 'other'.
    (work / "accelerate.yaml").write_text(
        (work / "plain.yaml").read_text().replace("  use_amp: false\n", "  use_amp: false\n  other_fix: false\n"))
    return work


def importable(*modules: str) -> bool:
    code = "import importlib, sys; [importlib.import_module(m) for m in sys.argv[1:]]"
    return subprocess.run([PYTHON, "-c", code, *modules], capture_output=True).returncode == 0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_unedited_checkout(work):
    assert subprocess.run(["git", "-C", CHECKOUT, "diff", "--quiet"]).returncode == 0, "the checkout must be unedited"


@pytest.mark.slow  # MSST subprocesses: 10-30 s each on 2 cores
def test_train_inference_valid(work):
    import torch

    out = run_script(["train.py", "--model_type", "bsmamba2", "--config_path", str(work / "plain.yaml"),
                      "--results_path", str(work / "results"), "--data_path", str(work / "train"),
                      "--valid_path", str(work / "valid"), "--dataset_type", "1", "--num_workers", "0",
                      "--device_ids", "0"], work / "train.log")
    assert "Model: BSMamba2" in out
    best = sorted((work / "results").glob("model_bsmamba2_ep_0_sdr_*.ckpt"))
    assert len(best) == 1 and (work / "results" / "last_bsmamba2.ckpt").is_file()
    loss = float(re.search(r"Training loss: (\S+)", out).group(1))
    assert np.isfinite(loss) and loss > 0

    from bsmamba2_plugin.checkpoint import load_model

    model = load_model(work / "plain.yaml", best[0])  # strict, through this package's loader
    saved = torch.load(best[0], map_location="cpu", weights_only=True)["model_state_dict"]
    assert all(torch.equal(saved[k], v) for k, v in model.state_dict().items())

    (work / "mixes").mkdir()
    track = work / "valid" / "track_0"
    mixture, rate = sf.read(track / "mixture.wav", dtype="float32")
    sf.write(work / "mixes" / "song.wav", mixture, rate, subtype="FLOAT")
    # The YAML with training.model_type: bsmamba2, and a CLI type that is not a plugin: the YAML wins.
    run_script(["inference.py", "--model_type", "mdx23c", "--config_path", str(work / "tiny.yaml"),
                "--start_check_point", str(best[0]), "--input_folder", str(work / "mixes"),
                "--store_dir", str(work / "separated"), "--force_cpu"], work / "inference.log", launcher=True)

    out = run_script(["valid.py", "--model_type", "bsmamba2", "--config_path", str(work / "plain.yaml"),
                      "--start_check_point", str(best[0]), "--valid_path", str(work / "valid"),
                      "--store_dir", str(work / "valid_out"), "--device_ids", "0"], work / "valid.log")
    file_sdr = float(re.search(r"sdr_(-?\d+\.\d+)\.ckpt", best[0].name).group(1))
    assert abs(float(re.search(r"Metric avg sdr\s*: (-?\d+\.\d+)", out).group(1)) - file_sdr) < 1e-3
    for stem in INSTRUMENTS:
        estimate, out_rate = sf.read(work / "separated" / "song" / f"{stem}.wav", dtype="float32")
        reference, _ = sf.read(track / f"{stem}.wav", dtype="float32")
        assert out_rate == rate and estimate.shape == reference.shape
        reported = float(re.search(rf"Instr {stem} sdr: (-?\d+\.\d+)", out).group(1))
        measured = 10 * np.log10((np.sum(reference ** 2) + 1e-8) / (np.sum((reference - estimate) ** 2) + 1e-8))
        assert abs(measured - reported) < 0.01, stem


@pytest.mark.slow  # MSST subprocesses: 10-30 s each on 2 cores
def test_train_accelerate_two_cpu_processes(work):
    if not importable("accelerate"):
        pytest.skip(f"{PYTHON} has no accelerate (pip install accelerate, torch pinned)")
    import torch

    results = work / "accelerate_results"
    out = run_script(["-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
                      "train_accelerate.py", "--model_type", "bsmamba2", "--config_path", str(work / "accelerate.yaml"),
                      "--results_path", str(results), "--data_path", str(work / "train"),
                      "--valid_path", str(work / "valid"), "--dataset_type", "1", "--num_workers", "0"],
                     work / "accelerate.log", extra_env={"ACCELERATE_USE_CPU": "true"})
    assert "Processes GPU: 2" in out  # one Accelerator over two processes, not two lone runs
    assert re.search(r"Instr SDR vocals: -?\d+\.\d+ Debug: 2", out)  # gathered from both ranks
    loss = float(re.search(r"Training loss: (\S+)", out).group(1))
    assert np.isfinite(loss) and loss > 0
    best = sorted(results.glob("model_bsmamba2_ep_0_sdr_*.ckpt"))
    assert len(best) == 1 and (results / "last_bsmamba2.ckpt").is_file()

    from bsmamba2_plugin.checkpoint import load_model

    model = load_model(work / "accelerate.yaml", best[0])  # accelerate saves a plain state dict
    saved = torch.load(best[0], map_location="cpu", weights_only=True)
    assert saved.keys() == model.state_dict().keys()
    assert all(torch.equal(saved[k], v) for k, v in model.state_dict().items())


def run_spawn_probe(work: Path, name: str, disable_hook: bool) -> tuple[Path, str]:
    report = work / f"{name}.json"
    extra = {"MSST_COMPAT_DISABLE": "1"} if disable_hook else {}
    out = run_script([str(TESTS_DIR / "msst_spawn_probe.py"), str(report), "--model_type", "bsmamba2",
                      "--config_path", str(work / "plain.yaml"), "--results_path", str(work / name),
                      "--data_path", str(work / "train")], work / f"{name}.log", extra_env=extra,
                     expect_success=not disable_hook)
    return report, out


@pytest.mark.slow  # MSST subprocesses: 10-30 s each on 2 cores
def test_ddp_spawned_workers_build_bsmamba2_through_the_hook(work):
    report, _ = run_spawn_probe(work, "spawn_probe", disable_hook=False)
    findings = json.loads(report.read_text())
    workers = findings["workers"]
    assert [w["rank"] for w in workers] == [0, 1]
    assert len({w["pid"] for w in workers} | {findings["parent_pid"]}) == 3
    for w in workers:
        assert w["parent_pid"] == findings["parent_pid"]  # spawned children, not the parent itself
        assert w["hook_on_meta_path"] and w["train_ddp_worker_factory_patched"] and w["valid_ddp_factory_patched"]
        assert (w["model_class"], w["model_module"]) == ("BSMamba2", "bsmamba2_plugin.model.bsmamba2")
        assert w["instruments"] == list(INSTRUMENTS)
    # Different data per rank, one all-reduced gradient: DDP synchronised the plugin model.
    assert workers[0]["grad_norm"] > 0 and workers[0]["grad_norm"] == pytest.approx(workers[1]["grad_norm"], rel=1e-6)


@pytest.mark.slow  # MSST subprocesses: 10-30 s each on 2 cores
def test_ddp_spawned_workers_without_the_hook_do_not_know_bsmamba2(work):
    """The control: the same probe with the .pth hook switched off (inherited by the workers) fails."""
    report, out = run_spawn_probe(work, "spawn_probe_off", disable_hook=True)
    assert not report.exists()
    assert "ProcessRaisedException" in out and "Unknown model type: bsmamba2" in out


@pytest.mark.slow  # MSST subprocesses: 10-30 s each on 2 cores
def test_stream_script_builds_and_runs_bsmamba2(work):
    if not importable("pyaudio", "keyboard"):
        pytest.skip(f"{PYTHON} lacks pyaudio or keyboard, which scripts/stream.py imports")
    import torch

    from bsmamba2_plugin.checkpoint import load_model

    checkpoint = work / "stream_weights.ckpt"
    torch.manual_seed(3)
    torch.save({"model_state_dict": load_model(work / "plain.yaml").state_dict()}, checkpoint)

    # The unedited script as a program: it builds the model through the hook and starts loading
    # the weights (the line printed by MSST's load_start_checkpoint); then MSST's lora bug or,
    # were that fixed, the missing sound card stops it.
    out = run_script(["scripts/stream.py", "--type", "1", "--model_type", "bsmamba2",
                      "--config_path", str(work / "plain.yaml"), "--start_check_point", str(checkpoint),
                      "--force_cpu", "--out_dir", str(work / "stream_out")], work / "stream.log",
                     expect_success=False)
    assert f"Start from checkpoint: {checkpoint}" in out
    assert "Error(s) in loading state_dict" not in out and "Unknown model" not in out

    report = work / "stream_probe.json"
    run_script([str(TESTS_DIR / "msst_stream_probe.py"), str(report), str(work / "plain.yaml"), str(checkpoint),
                str(work / "valid" / "track_0" / "mixture.wav")], work / "stream_probe.log")
    findings = json.loads(report.read_text())
    assert findings["stream_factory_patched"]
    assert (findings["model_class"], findings["model_module"]) == ("BSMamba2", "bsmamba2_plugin.model.bsmamba2")
    assert findings["stems"] == sorted(INSTRUMENTS)
    assert findings["vocals_shape"] == findings["input_shape"] == [2, 8192] and findings["vocals_finite"]


@pytest.mark.slow  # MSST subprocesses: 10-30 s each on 2 cores
def test_peft_lora_checkpoint_in_msst_valid_and_inference(work):
    """A --train_lora_peft run of this package's trainer, then MSST's own scripts: valid.py on the
    run's base + peft folder (--lora_checkpoint_peft: PeftModel.from_pretrained, merge_and_unload)
    and on the merged checkpoint (no flag), inference.py on the merged checkpoint; all three and
    this package's Separator give the same separation."""
    if not importable("peft"):
        pytest.skip(f"{PYTHON} has no peft (pip install peft, torch pinned)")
    from bsmamba2_plugin.separate import Separator

    config = work / "lora.yaml"
    # A high learning rate and no EMA, so that the adapter changes the separation far beyond the
    # tolerances below.
    config.write_text((work / "tiny.yaml").read_text().replace("  lr: 1.0e-3\n", "  lr: 3.0e-2\n")
                      .replace("  ema_momentum: 0.999\n", "  ema_momentum: 0.0\n")
                      + "\nlora:\n  r: 4\n  lora_alpha: 8\n  target_modules: all-linear\n")
    results = work / "lora_results"
    env = subprocess_env(stand_in_torchaudio=False)
    trained = subprocess.run([sys.executable, "-m", "bsmamba2_plugin.train", "--config_path", str(config),
                              "--data_path", str(work / "train"), "--results_path", str(results),
                              "--train_lora_peft", "--no_tensorboard", "--no_progress", "--seed", "3"],
                             capture_output=True, text=True, env=env, timeout=600, stdin=subprocess.DEVNULL)
    (work / "lora_train.log").write_text(trained.stdout + trained.stderr)
    assert trained.returncode == 0, (trained.stdout + trained.stderr)[-4000:]
    merged, base = results / "last_bsmamba2.ckpt", results / "lora_base_bsmamba2.ckpt"
    folder = results / "last_bsmamba2.ckpt_lora_"
    assert (folder / "adapter_config.json").is_file() and base.is_file()

    common = ["valid.py", "--model_type", "bsmamba2", "--config_path", str(config), "--valid_path",
              str(work / "valid"), "--device_ids", "0"]
    with_peft = run_script([*common, "--start_check_point", str(base), "--lora_checkpoint_peft", str(folder),
                            "--store_dir", str(work / "valid_peft")], work / "valid_peft.log")
    plain = run_script([*common, "--start_check_point", str(merged), "--store_dir", str(work / "valid_merged")],
                       work / "valid_merged.log")
    only_base = run_script([*common, "--start_check_point", str(base), "--store_dir", str(work / "valid_base")],
                           work / "valid_base.log")
    sdr = {name: float(re.search(r"Metric avg sdr\s*: (-?\d+\.\d+)", out).group(1))
           for name, out in (("peft", with_peft), ("merged", plain), ("base", only_base))}
    assert abs(sdr["peft"] - sdr["merged"]) < 1e-3, sdr
    assert abs(sdr["peft"] - sdr["base"]) > 0.01, sdr  # the adapter did something, and valid.py applied it

    (work / "lora_mixes").mkdir()
    mixture, rate = sf.read(work / "valid" / "track_0" / "mixture.wav", dtype="float32")
    sf.write(work / "lora_mixes" / "song.wav", mixture, rate, subtype="FLOAT")
    run_script(["inference.py", "--model_type", "bsmamba2", "--config_path", str(config),
                "--start_check_point", str(merged), "--input_folder", str(work / "lora_mixes"),
                "--store_dir", str(work / "lora_separated"), "--force_cpu"], work / "lora_inference.log")
    ours = Separator(str(config), str(merged), device="cpu").separate(mixture.T, rate)
    for stem in INSTRUMENTS:
        from_inference, _ = sf.read(work / "lora_separated" / "song" / f"{stem}.wav", dtype="float32")
        # valid.py stores 16-bit FLAC when the peak is <= 1 (a step of 3e-5), FLOAT WAV otherwise
        (peft_file,), (merged_file,), (base_file,) = (sorted((work / name).glob(f"track_0_{stem}.*"))
                                                      for name in ("valid_peft", "valid_merged", "valid_base"))
        from_valid_peft, _ = sf.read(peft_file, dtype="float32")
        from_valid_merged, _ = sf.read(merged_file, dtype="float32")
        from_valid_base, _ = sf.read(base_file, dtype="float32")
        np.testing.assert_allclose(from_valid_peft, from_valid_merged, atol=1e-4)
        assert np.abs(from_valid_base - from_valid_merged).max() > 1e-2  # so the tolerances above do tell
        np.testing.assert_allclose(from_inference, from_valid_merged, atol=1e-4)
        np.testing.assert_allclose(ours[stem].T, from_inference, atol=1e-5)


@pytest.mark.slow  # MSST subprocesses: 10-30 s each on 2 cores
@pytest.mark.parametrize("library", ["peft", "loralib"])
def test_msst_train_lora_trains_bsmamba2_adapters_that_this_trainer_loads(work, library):
    """MSST's own train.py --train_lora_peft / --train_lora_loralib on bsmamba2: its output-side LoRA
    layers must not be bypassed by the model's batched products (without linear_weight.py the loss
    had no gradient at all). Its adapters, out_proj's included, move, and this package's trainer
    starts from them (--lora_checkpoint_peft on MSST's <ckpt>_lora_ folder, --lora_checkpoint_loralib
    on MSST's checkpoint)."""
    if not importable(library):
        pytest.skip(f"{PYTHON} has no {library}")
    import torch

    from bsmamba2_plugin.train.cli import parse_args
    from bsmamba2_plugin.train.trainer import Trainer

    section = ("\nlora:\n  r: 4\n  lora_alpha: 8\n  target_modules: [in_proj, out_proj]\n" if library == "peft" else
               "\nlora:\n  r: 4\n  lora_alpha: 8\n  lora_dropout: 0.0\n  merge_weights: false\n"
               "  fan_in_fan_out: false\n")  # MSST passes lora: to loralib.Linear, which takes no enable_lora
    config = work / f"msst_{library}.yaml"
    config.write_text((work / "tiny.yaml").read_text().replace("  lr: 1.0e-3\n", "  lr: 3.0e-2\n") + section)
    results = work / f"msst_{library}_results"
    out = run_script(["train.py", "--model_type", "bsmamba2", "--config_path", str(config), "--results_path",
                      str(results), "--data_path", str(work / "train"), "--valid_path", str(work / "valid"),
                      "--dataset_type", "1", "--num_workers", "0", "--device_ids", "0", f"--train_lora_{library}"],
                     work / f"msst_{library}.log")
    assert np.isfinite(float(re.search(r"Training loss: (\S+)", out).group(1)))
    if library == "peft":
        from safetensors.torch import load_file

        folder = results / "last_bsmamba2.ckpt_lora_"  # MSST's save_pretrained(store_path + '_lora_')
        adapter = {k.removeprefix("base_model.model."): v
                   for k, v in load_file(folder / "adapter_model.safetensors").items()}
        flags = ["--train_lora_peft", "--lora_checkpoint_peft", str(folder)]
        ours_name = {k: k.replace(".weight", ".default.weight") for k in adapter}
    else:
        from bsmamba2_plugin.checkpoint import load_weights_only

        # MSST's loralib checkpoint: model_state_dict holds the adapter alone (loralib.lora_state_dict)
        adapter = load_weights_only(results / "last_bsmamba2.ckpt")["model_state_dict"]
        flags = ["--train_lora_loralib", "--lora_checkpoint_loralib", str(results / "last_bsmamba2.ckpt")]
        ours_name = {k: k.replace(".lora_", ".parametrizations.weight.0.lora_") for k in adapter}
    moved = [k for k, v in adapter.items() if "lora_B" in k and v.abs().sum() > 0]  # B starts at zero
    assert any(".out_proj." in k for k in moved) and any(".in_proj." in k for k in moved), sorted(adapter)[:6]

    args = parse_args(["--config_path", str(config), "--data_path", str(work / "train"), "--results_path",
                       str(work / f"ours_from_msst_{library}"), "--no_tensorboard", "--no_progress", *flags])
    state = Trainer(args).model.state_dict()
    assert all(torch.equal(state[ours_name[k]], v) for k, v in adapter.items())
