"""training.compile / --compile: the training forward through torch.compile (real inductor, real g++).

Each compile of even the tiny model takes seconds to tens of seconds on two cores, so the suite compiles
a handful of times: in-process against the eager step (here, and with loralib and peft adapters in
test_train_lora.py), in a real training run, in two gloo processes (test_train_loop.py), and once
with a C++ compiler that fails (cut short by its first error)."""
from __future__ import annotations

import pytest
import torch

from bsmamba2_plugin.config import load_config
from bsmamba2_plugin.model import BSMamba2
from bsmamba2_plugin.train.compiled import compile_for_training
from bsmamba2_plugin.train.loss import PaperLoss
from train_fixtures import make_tracks, run_train, tiny_config, with_keys


def _loss_and_grads(model: BSMamba2, forward, mixture: torch.Tensor, target: torch.Tensor):
    model.zero_grad(set_to_none=True)
    loss = PaperLoss(model.loss_settings, 10.0)(forward(mixture), target)
    loss.backward()
    return loss.detach(), {name: p.grad.clone() for name, p in model.named_parameters()}


def test_the_compiled_step_computes_the_eager_loss_and_gradients(tmp_path):
    config = load_config(tiny_config(tmp_path / "tiny.yaml"))
    torch.manual_seed(0)
    model = BSMamba2.from_config(config).train()
    mixture = torch.randn(2, 2, 4096) * 0.1  # 65 frames: two scan chunks, so the carried state is in the graph
    target = torch.randn(2, 1, 2, 4096) * 0.05
    eager_loss, eager_grads = _loss_and_grads(model, model, mixture, target)
    compiled = compile_for_training(model)
    for _ in range(2):  # the second call runs the cached code, not the first call's tracing
        loss, grads = _loss_and_grads(model, compiled, mixture, target)
        torch.testing.assert_close(loss, eager_loss, rtol=1e-5, atol=0)
        for name, grad in grads.items():
            torch.testing.assert_close(grad, eager_grads[name], rtol=1e-3, atol=1e-6 * eager_grads[name].abs().max(),
                                       msg=lambda m, name=name: f"{name}: {m}")
    assert any(g.abs().max() > 0 for g in grads.values())
    # A view: the model's own parameters, and the model itself (validation, checkpoints) stays eager.
    own = {id(p) for p in model.parameters()}
    assert {id(p) for p in compiled.parameters()} == own
    assert sum(type(m).__name__ == "OptimizedModule" for m in compiled.modules()) == 2  # a time and a band layer
    assert not any(type(m).__name__ == "OptimizedModule" for m in model.modules())
    assert list(model.state_dict()) == list(BSMamba2.from_config(config).state_dict())


def test_a_model_without_layers_to_compile_is_refused():
    with pytest.raises(TypeError, match="Linear has no BidirectionalMamba layers for training.compile"):
        compile_for_training(torch.nn.Linear(2, 2))


def test_a_compiled_training_run_trains_validates_and_says_so(tmp_path):
    config = tiny_config(tmp_path / "tiny.yaml", num_steps=2, num_epochs=1)
    data = make_tracks(tmp_path / "train")
    valid = make_tracks(tmp_path / "valid", count=1, with_mixture=True)
    results = tmp_path / "results"
    run = run_train(["--config_path", str(config), "--data_path", str(data), "--valid_path", str(valid),
                     "--results_path", str(results), "--compile"], timeout=900)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "training.compile: the training forward runs through torch.compile" in run.stdout
    assert "(compiled)" in run.stdout
    assert "Training loss:" in run.stdout and "Best sdr:" in run.stdout
    assert (results / "last_bsmamba2.ckpt").is_file()
    assert "Torchinductor does not support code generation for complex" not in run.stderr


@pytest.mark.parametrize("case", ["not_a_bool", "chunk_size_augm", "no_cxx"])
def test_what_compile_cannot_do_is_refused_before_training(tmp_path, monkeypatch, case):
    config = tiny_config(tmp_path / "tiny.yaml", compile=True)
    if case == "not_a_bool":
        with_keys(config, training={"compile": "yes"})
        expected = "training.compile='yes': expected true or false"
    elif case == "chunk_size_augm":
        with_keys(config, augmentations={"chunk_size_augm": True, "chunk_size_min": 2048, "chunk_size_max": 4096})
        expected = "training.compile with augmentations.chunk_size_augm"
    else:
        monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))  # inductor looks for $CXX
        expected = "training.compile on a CPU needs a C++ compiler"
    data = make_tracks(tmp_path / "train", count=2)
    run = run_train(["--config_path", str(config), "--data_path", str(data), "--results_path",
                     str(tmp_path / "results")])
    assert run.returncode == 2, run.stdout + run.stderr
    assert expected in run.stderr, run.stderr
    if case == "no_cxx":
        assert "set training.compile: false" in run.stderr
    assert not (tmp_path / "results" / "last_bsmamba2.ckpt").exists()


def test_a_compile_that_fails_on_the_first_step_says_what_to_turn_off(tmp_path, monkeypatch):
    """A C++ compiler that answers --version (so the start-up check passes) but compiles nothing."""
    broken = tmp_path / "broken-cxx"
    broken.write_text('#!/bin/sh\nif [ "$1" = --version ]; then echo "g++ (broken) 12.2.0"; exit 0; fi\n'
                      'echo "broken-cxx: refusing to compile" >&2; exit 1\n')
    broken.chmod(0o755)
    monkeypatch.setenv("CXX", str(broken))
    monkeypatch.setenv("TORCHINDUCTOR_FORCE_DISABLE_CACHES", "1")  # a cached build would need no compiler
    config = tiny_config(tmp_path / "tiny.yaml", num_steps=1, num_epochs=1)
    run = run_train(["--config_path", str(config), "--data_path", str(make_tracks(tmp_path / "train", count=2)),
                     "--results_path", str(tmp_path / "results"), "--compile"], timeout=600)
    assert run.returncode != 0
    assert "this failed while torch.compile compiled the training step" in run.stderr, run.stderr[-3000:]
    assert not (tmp_path / "results" / "last_bsmamba2.ckpt").exists()


def test_on_cuda_compile_gives_way_to_mamba_ssm_unless_the_torch_path_is_asked_for(tmp_path, monkeypatch):
    """No GPU here: the device is only named, and mamba-ssm's presence is a stand-in (its kernels need CUDA)."""
    from bsmamba2_plugin.train import compiled
    from bsmamba2_plugin.train.errors import TrainingConfigError

    model = BSMamba2.from_config(load_config(tiny_config(tmp_path / "tiny.yaml")))
    monkeypatch.setattr(compiled, "mamba_ssm_kernels", lambda: object())
    monkeypatch.delenv("BSMAMBA2_BACKEND", raising=False)
    with pytest.raises(TrainingConfigError, match="mamba-ssm's fused kernels"):
        compiled.check_compilable(model, torch.device("cuda"), chunk_size_augm=False)
    monkeypatch.setenv("BSMAMBA2_BACKEND", "torch")
    compiled.check_compilable(model, torch.device("cuda"), chunk_size_augm=False)
    monkeypatch.setattr(compiled, "mamba_ssm_kernels", lambda: None)
    monkeypatch.delenv("BSMAMBA2_BACKEND")
    compiled.check_compilable(model, torch.device("cuda"), chunk_size_augm=False)  # auto without mamba-ssm: torch


def test_msst_building_the_model_says_that_it_does_not_compile(tmp_path):
    from bsmamba2_plugin.msst_entry import build_model

    config = load_config(tiny_config(tmp_path / "tiny.yaml", compile=True))
    with pytest.warns(UserWarning, match="training.compile is read by `python -m bsmamba2_plugin.train` only"):
        build_model(config)
