"""LoRA: the model applies loralib and peft adapters on every path, and the trainer's
--train_lora_loralib / --train_lora_peft (and their checkpoint flags) write checkpoints that load
anywhere. Uses the real loralib and peft packages."""
from __future__ import annotations

import copy
import json
import sys
import warnings

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from bsmamba2_plugin.checkpoint import load_weights
from bsmamba2_plugin.config import load_config
from bsmamba2_plugin.model import BSMamba2
from bsmamba2_plugin.model.linear_weight import effective_bias, effective_weight
from bsmamba2_plugin.train.errors import TrainingConfigError
from train_fixtures import make_tracks, run_train, tiny_config, with_keys

LORA = {"r": 4, "lora_alpha": 8, "lora_dropout": 0.0, "merge_weights": False, "fan_in_fan_out": False,
        "enable_lora": [True]}
PEFT_LORA = {"r": 4, "lora_alpha": 8, "target_modules": "all-linear"}
TINY_MODEL = dict(dim=16, depth=1, stft_n_fft=256, stft_hop_length=64, stft_win_length=256,
                  freqs_per_bands=(32, 32, 65), mask_estimator_depth=2, num_stems=1)


def tiny_model(seed: int = 0) -> BSMamba2:
    torch.manual_seed(seed)
    return BSMamba2(**TINY_MODEL).eval()


def audio(seed: int = 1) -> torch.Tensor:
    return torch.randn(1, 2, 4096, generator=torch.Generator().manual_seed(seed))


def linear_names(model: nn.Module) -> list[str]:
    return [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]


def replace_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, new)


def assert_same_output(a: torch.Tensor, b: torch.Tensor, base: torch.Tensor) -> None:
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    assert (a - base).abs().max() > 1e-3, "the adapters changed nothing: a bypassed adapter would pass too"


# ------------------------------------------------------------------ effective weights, layer by layer
def test_effective_weight_of_a_plain_linear_is_its_parameter():
    layer = nn.Linear(4, 3)
    assert effective_weight(layer) is layer.weight and effective_bias(layer) is layer.bias  # no copy


@pytest.mark.parametrize("fan_in_fan_out", [False, True])
@pytest.mark.parametrize("merge_weights", [False, True])
def test_effective_weight_of_loralib_linear_gives_its_output(fan_in_fan_out, merge_weights):
    loralib = pytest.importorskip("loralib")
    torch.manual_seed(0)
    layer = loralib.Linear(6, 5, r=3, lora_alpha=6, fan_in_fan_out=fan_in_fan_out, merge_weights=merge_weights)
    nn.init.normal_(layer.lora_B)
    x = torch.randn(4, 6)
    for mode in (True, False):  # train, then eval (which merges when merge_weights)
        layer.train(mode)
        with torch.no_grad():
            ours = nn.functional.linear(x, effective_weight(layer), effective_bias(layer))
            torch.testing.assert_close(ours, layer(x), atol=1e-6, rtol=1e-6)
    assert layer.merged == merge_weights


def test_effective_weight_of_peft_layer_follows_its_state():
    peft = pytest.importorskip("peft")
    torch.manual_seed(0)
    model = peft.get_peft_model(nn.Sequential(nn.Linear(6, 5)), peft.LoraConfig(
        r=2, lora_alpha=4, target_modules=["0"], lora_bias=True))
    layer = model.base_model.model[0]
    nn.init.normal_(layer.lora_B["default"].weight)
    nn.init.normal_(layer.lora_B["default"].bias)
    x = torch.randn(4, 6)

    def check():
        with torch.no_grad():
            ours = nn.functional.linear(x, effective_weight(layer), effective_bias(layer))
            torch.testing.assert_close(ours, layer(x), atol=1e-6, rtol=1e-6)

    check()  # active adapter, weight and lora bias
    with torch.no_grad():
        assert not torch.allclose(layer(x), layer.base_layer(x))
    layer.enable_adapters(False)
    check()  # disabled
    layer.enable_adapters(True)
    layer.merge()
    check()  # merged into the base layer: not added twice
    layer.enable_adapters(False)
    check()  # merged and disabled: peft's forward unmerges, the base alone


# ---------------------------------------------------------------- whole model, MSST-style layers
def test_msst_style_loralib_layers_act_on_every_batched_path():
    """MSST's bind_lora_to_model swaps every nn.Linear for loralib.Linear: the band split, the fused
    bidirectional in_proj / out_proj and the mask estimator must all apply B @ A."""
    loralib = pytest.importorskip("loralib")
    base = tiny_model()
    adapted, merged = copy.deepcopy(base), copy.deepcopy(base)
    names = linear_names(base)
    assert any(n.endswith(".out_proj") for n in names) and any(n.endswith(".in_proj") for n in names)
    torch.manual_seed(1)
    for name in names:
        plain = base.get_submodule(name)
        layer = loralib.Linear(plain.in_features, plain.out_features, bias=plain.bias is not None, r=2,
                               lora_alpha=4, merge_weights=False)
        layer.load_state_dict({**plain.state_dict(), "lora_A": layer.lora_A.data,
                               "lora_B": torch.randn_like(layer.lora_B) * 0.05})
        replace_module(adapted, name, layer)
        with torch.no_grad():
            merged.get_submodule(name).weight += (layer.lora_B @ layer.lora_A) * layer.scaling
    x = audio()
    with torch.no_grad():
        assert_same_output(adapted.eval()(x), merged(x), base(x))


def test_peft_layers_act_on_every_batched_path_and_train():
    peft = pytest.importorskip("peft")
    base = tiny_model()
    model = peft.get_peft_model(copy.deepcopy(base), peft.LoraConfig(r=2, lora_alpha=4,
                                                                    target_modules=linear_names(base)))
    torch.manual_seed(1)
    for name, parameter in model.named_parameters():
        if "lora_B" in name:
            nn.init.normal_(parameter, std=0.05)
    x = audio()
    with torch.no_grad():
        ours = model.eval()(x)
        reference = copy.deepcopy(model).merge_and_unload()(x)  # peft's own merge, then the plain model
        assert_same_output(ours, reference, base(x))
    # Training: every adapter, out_proj's included, gets a gradient through the batched products.
    model.train()
    model(x).square().mean().backward()
    lora = {n: p for n, p in model.named_parameters() if "lora_" in n}
    assert lora and all(p.requires_grad for p in lora.values())
    without = [n for n, p in lora.items() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not without, without[:5]
    assert any(".out_proj.lora_A" in n for n in lora)
    assert all(p.grad is None for n, p in model.named_parameters() if "lora_" not in n)


@pytest.mark.parametrize("library", ["loralib", "peft"])
def test_compiled_training_applies_and_trains_the_adapters(library):
    """training.compile's layers under torch.compile, over adapted Linears: the eager loss and the same
    gradient for every adapter."""
    from bsmamba2_plugin.train.compiled import compile_for_training

    lib = pytest.importorskip(library)
    base = tiny_model()
    model = copy.deepcopy(base)
    if library == "peft":
        lib.get_peft_model(model, lib.LoraConfig(r=2, lora_alpha=4, target_modules=linear_names(base)))
    else:
        for name in linear_names(base):
            plain = base.get_submodule(name)
            layer = lib.Linear(plain.in_features, plain.out_features, bias=plain.bias is not None, r=2,
                               lora_alpha=4, merge_weights=False)
            layer.load_state_dict({**plain.state_dict(), "lora_A": layer.lora_A.data, "lora_B": layer.lora_B.data})
            replace_module(model, name, layer)
    torch.manual_seed(1)
    for name, parameter in model.named_parameters():
        if "lora_B" in name:
            nn.init.normal_(parameter, std=0.05)
    model.train()
    x = audio()

    def loss_and_grads(forward: nn.Module) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        model.zero_grad(set_to_none=True)
        loss = forward(x).square().mean()
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if "lora_" in n}

    eager_loss, eager_grads = loss_and_grads(model)
    loss, grads = loss_and_grads(compile_for_training(model))
    torch.testing.assert_close(loss, eager_loss, rtol=1e-5, atol=0)
    assert grads.keys() == eager_grads.keys() and any(".out_proj.lora_A" in n for n in grads)
    for name, grad in grads.items():
        torch.testing.assert_close(grad, eager_grads[name], rtol=1e-3, atol=1e-6 * eager_grads[name].abs().max(),
                                   msg=lambda m, name=name: f"{name}: {m}")
    with torch.no_grad():
        assert (eager_loss - base.train()(x).square().mean()).abs() > 0, "the adapters changed nothing"


def test_loralib_dropout_in_training_warns_where_it_is_not_applied():
    loralib = pytest.importorskip("loralib")
    model = tiny_model()
    name = next(n for n in linear_names(model) if n.endswith(".in_proj"))
    plain = model.get_submodule(name)
    layer = loralib.Linear(plain.in_features, plain.out_features, bias=False, r=2, lora_dropout=0.1)
    replace_module(model, name, layer)
    with pytest.warns(UserWarning, match="lora_dropout=0.1 is not applied"):
        model.train()(audio())


# ---------------------------------------------------------------------------- --train_lora_loralib
def test_weight_space_lora_equals_loralibs_linear():
    loralib = pytest.importorskip("loralib")
    from bsmamba2_plugin.train.lora import attach_lora

    torch.manual_seed(0)
    theirs = loralib.Linear(6, 5, r=3, lora_alpha=6, lora_dropout=0.0, merge_weights=False)
    torch.nn.init.normal_(theirs.lora_B)  # non-zero, so the update shows
    ours = torch.nn.Sequential(torch.nn.Linear(6, 5))
    ours[0].weight.data.copy_(theirs.weight.data)
    ours[0].bias.data.copy_(theirs.bias.data)
    names = attach_lora(ours, r=3, alpha=6)
    adapter = ours[0].parametrizations.weight[0]
    adapter.lora_A.data.copy_(theirs.lora_A.data)
    adapter.lora_B.data.copy_(theirs.lora_B.data)
    x = torch.randn(4, 6)
    assert names == ["0"] and torch.allclose(ours(x), theirs(x), atol=1e-6)
    assert [n for n, p in ours.named_parameters() if p.requires_grad] == [
        "0.parametrizations.weight.0.lora_A", "0.parametrizations.weight.0.lora_B"]  # as mark_only_lora_as_trainable


def test_weight_space_lora_adapts_out_proj_too():
    from bsmamba2_plugin.train.lora import attach_lora, merged_state_dict

    model = tiny_model()
    base = copy.deepcopy(model)
    names = attach_lora(model, r=2, alpha=4)
    assert sorted(names) == sorted(linear_names(base))  # out_proj no longer skipped
    torch.manual_seed(1)
    for name, parameter in model.named_parameters():
        if name.endswith("lora_B"):
            nn.init.normal_(parameter, std=0.05)
    x = audio()
    with torch.no_grad():
        merged = BSMamba2(**TINY_MODEL).eval()
        merged.load_state_dict(merged_state_dict(model.state_dict(), 2.0))
        assert_same_output(model(x), merged(x), base(x))
    model.train()
    model(x).square().mean().backward()
    out_proj = [p for n, p in model.named_parameters() if ".out_proj.parametrizations" in n and "lora_" in n]
    assert out_proj and all(p.grad is not None and p.grad.abs().sum() > 0 for p in out_proj)


def test_lora_training_writes_merged_weights_that_load_anywhere_and_resumes(tmp_path):
    from bsmamba2_plugin.separate import Separator
    from bsmamba2_plugin.train.lora import attach_lora, load_adapter

    data = make_tracks(tmp_path / "train", count=2)
    config = with_keys(tiny_config(tmp_path / "c.yaml", num_steps=2, num_epochs=1), lora=LORA)
    base = BSMamba2.from_config(load_config(config))
    torch.save({"model_state_dict": base.state_dict()}, tmp_path / "base.ckpt")
    common = ["--config_path", str(config), "--data_path", str(data), "--no_tensorboard", "--train_lora_loralib",
              "--start_check_point", str(tmp_path / "base.ckpt")]
    first = run_train([*common, "--results_path", str(tmp_path / "r")])
    assert first.returncode == 0, first.stderr
    assert "LoRA: r=4, lora_alpha=8 on " in first.stdout
    checkpoint = torch.load(tmp_path / "r" / "last_bsmamba2.ckpt", weights_only=True)
    merged, adapter = checkpoint["model_state_dict"], checkpoint["lora_state_dict"]
    assert set(merged) == set(base.state_dict())  # plain names: MSST and the separator read it as is
    assert adapter and all(k.endswith((".lora_A", ".lora_B")) for k in adapter)
    assert any(".out_proj.lora_" in k for k in adapter)

    # The merged weights give the LoRA model's output: the adapter reaches the fused Mamba2 path too.
    lora_model = BSMamba2.from_config(load_config(config))
    lora_model.load_state_dict(base.state_dict())
    attach_lora(lora_model, 4, 8.0)
    load_adapter(lora_model, adapter, "test")
    plain = BSMamba2.from_config(load_config(config))
    load_weights(plain, merged)
    x = torch.randn(1, 2, 4096)
    with torch.no_grad():
        assert torch.allclose(lora_model.eval()(x), plain.eval()(x), atol=1e-5)
    changed = [k for k in merged if not torch.equal(merged[k], base.state_dict()[k])]
    assert changed and all(k.endswith(".weight") for k in changed)  # only adapted linear weights moved
    assert any(k.endswith(".out_proj.weight") for k in changed)

    separator = Separator(str(config), str(tmp_path / "r" / "last_bsmamba2.ckpt"), device="cpu")
    assert separator.separate(np.zeros((2, 8000), dtype=np.float32), 44100)["vocals"].shape == (2, 8000)

    config2 = with_keys(config, training={"num_epochs": 2})
    resumed = run_train([*common, "--results_path", str(tmp_path / "r")])  # continues epoch 1
    assert resumed.returncode == 0 and "Resuming from" in resumed.stdout, resumed.stderr
    fresh = run_train(["--config_path", str(config2), "--data_path", str(data), "--no_tensorboard",
                       "--train_lora_loralib", "--lora_checkpoint_loralib", str(tmp_path / "r" / "last_bsmamba2.ckpt"),
                       "--results_path", str(tmp_path / "s")])
    assert fresh.returncode == 0, fresh.stderr
    assert f"Loaded {len(adapter)} LoRA tensors" in fresh.stdout


def test_lora_keys_msst_cannot_map_here_are_named(tmp_path):
    from bsmamba2_plugin.train.lora import lora_settings

    with pytest.raises(TrainingConfigError, match="enable_lora"):
        lora_settings({**LORA, "enable_lora": [True, False, True]})
    with pytest.raises(TrainingConfigError, match="lora.target_modules"):
        lora_settings({**LORA, "target_modules": ["x"]})
    with pytest.warns(UserWarning, match="lora.lora_dropout=0.05 is not applied"):
        assert lora_settings({**LORA, "lora_dropout": 0.05}) == (4, 8.0)
    data = make_tracks(tmp_path / "train", count=1)
    config = tiny_config(tmp_path / "c.yaml")
    no_section = run_train(["--config_path", str(config), "--data_path", str(data), "--results_path",
                            str(tmp_path / "r"), "--train_lora_loralib"])
    assert no_section.returncode == 2 and "needs a `lora:` section" in no_section.stderr


# ------------------------------------------------------------------------------ --train_lora_peft
def peft_run(tmp_path, *extra, **training):
    """A --train_lora_peft run from a saved base; returns (config, base model, results folder, process)."""
    data = make_tracks(tmp_path / "train", count=2)
    config = with_keys(tiny_config(tmp_path / "c.yaml", **{"num_steps": 2, "num_epochs": 1, **training}),
                       lora=PEFT_LORA)
    torch.manual_seed(0)
    base = BSMamba2.from_config(load_config(config))
    torch.save({"model_state_dict": base.state_dict()}, tmp_path / "base.ckpt")
    results = tmp_path / "r"
    done = run_train(["--config_path", str(config), "--data_path", str(data), "--no_tensorboard", "--train_lora_peft",
                      "--start_check_point", str(tmp_path / "base.ckpt"), "--results_path", str(results), *extra])
    return config, base, results, done


def test_peft_training_moves_only_adapters_and_writes_a_merged_checkpoint_and_a_peft_folder(tmp_path):
    peft = pytest.importorskip("peft")
    from bsmamba2_plugin.separate import Separator

    valid = make_tracks(tmp_path / "valid", count=1, with_mixture=True)
    config, base, results, done = peft_run(tmp_path, "--valid_path", str(valid))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (best,) = results.glob("model_bsmamba2_ep_0_sdr_*.ckpt")  # validated with the (EMA) LoRA model
    assert (results / (best.name + "_lora_") / "adapter_model.safetensors").is_file()
    # 14 linear layers in the tiny model: 3 band split, 4 in_proj, 4 out_proj, 3 mask estimator
    assert "LoRA (peft " in done.stdout and "on 14 linear layers" in done.stdout
    assert "in_proj 4" in done.stdout and "out_proj 4" in done.stdout
    checkpoint = torch.load(results / "last_bsmamba2.ckpt", weights_only=True)
    assert checkpoint["lora_library"] == "peft"
    base_state = base.state_dict()

    # Only the adapters trained: every base tensor (raw and EMA) is the starting one.
    for key in ("raw_model_state_dict", "ema_state_dict"):
        state = checkpoint[key]
        for name, value in state.items():
            if ".lora_" not in name:
                assert torch.equal(value, base_state[name.replace(".base_layer.", ".")]), f"{key}.{name} moved"
    assert any(".lora_B." in n and v.abs().sum() > 0 for n, v in checkpoint["raw_model_state_dict"].items())
    written_base = torch.load(results / "lora_base_bsmamba2.ckpt", weights_only=True)["model_state_dict"]
    assert written_base.keys() == base_state.keys()
    assert all(torch.equal(written_base[k], v) for k, v in base_state.items())

    # The merged model_state_dict == the base + the peft folder, loaded the way MSST's valid.py does.
    merged = checkpoint["model_state_dict"]
    assert merged.keys() == base_state.keys()
    folder = results / "last_bsmamba2.ckpt_lora_"
    assert {"adapter_config.json", "adapter_model.safetensors"} <= {p.name for p in folder.iterdir()}
    assert not list(results.glob(".*partial*"))  # the atomic writer left no temporary behind
    stored = load_file(folder / "adapter_model.safetensors")
    assert len(stored) == 2 * 14
    plain = BSMamba2.from_config(load_config(config)).eval()
    load_weights(plain, merged)
    via_peft = BSMamba2.from_config(load_config(config))
    via_peft.load_state_dict(written_base)
    via_peft = peft.PeftModel.from_pretrained(via_peft, str(folder)).eval()
    x = audio()
    with torch.no_grad():
        assert_same_output(via_peft(x), plain(x), base.eval()(x))
        unloaded = via_peft.merge_and_unload()
    torch.save({"model_state_dict": unloaded.state_dict()}, tmp_path / "peft_merged.ckpt")

    # The raw (un-merged, peft-named) weights are for resuming only; asking for them is a clear error.
    from bsmamba2_plugin.checkpoint import CheckpointError, read_state_dict

    with pytest.raises(CheckpointError, match="LoRA run's"):
        read_state_dict(results / "last_bsmamba2.ckpt", weights="raw")

    # The separator loads the LoRA checkpoint without flags and gives the merged model's output.
    mixture = np.random.default_rng(0).standard_normal((2, 9000)).astype(np.float32) * 0.1
    ours = Separator(str(config), str(results / "last_bsmamba2.ckpt"), device="cpu").separate(mixture, 44100)
    theirs = Separator(str(config), str(tmp_path / "peft_merged.ckpt"), device="cpu").separate(mixture, 44100)
    untouched = Separator(str(config), str(tmp_path / "base.ckpt"), device="cpu").separate(mixture, 44100)
    np.testing.assert_allclose(ours["vocals"], theirs["vocals"], atol=1e-5, rtol=1e-4)
    assert np.abs(ours["vocals"] - untouched["vocals"]).max() > 1e-4


def test_a_folder_written_atomically_replaces_the_old_one(tmp_path):
    from bsmamba2_plugin.atomic_file import atomic_path

    target = tmp_path / "adapter"
    for version in ("old", "new"):
        with atomic_path(target) as temporary:
            temporary.mkdir()
            (temporary / "weights").write_text(version)
            assert not (target / "weights").is_file() or (target / "weights").read_text() == "old"
    assert (target / "weights").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter"]  # no temporary or old copy left
    with pytest.raises(RuntimeError):
        with atomic_path(target) as temporary:
            temporary.mkdir()
            raise RuntimeError("a failed write")
    assert (target / "weights").read_text() == "new" and len(list(tmp_path.iterdir())) == 1


def test_peft_training_resumes_bit_identically(tmp_path):
    pytest.importorskip("peft")
    straight_config, _, straight, done = peft_run(tmp_path / "a", num_epochs=2)
    assert done.returncode == 0, done.stderr[-3000:]
    config, _, split, first = peft_run(tmp_path / "b")
    assert first.returncode == 0, first.stderr[-3000:]
    with_keys(config, training={"num_epochs": 2})
    resumed = run_train(["--config_path", str(config), "--data_path", str(tmp_path / "b" / "train"),
                         "--no_tensorboard", "--train_lora_peft", "--start_check_point",
                         str(tmp_path / "b" / "base.ckpt"), "--results_path", str(split)])
    assert resumed.returncode == 0 and "Resuming from" in resumed.stdout, resumed.stderr[-3000:]
    a = torch.load(straight / "last_bsmamba2.ckpt", weights_only=True)
    b = torch.load(split / "last_bsmamba2.ckpt", weights_only=True)
    assert a["global_step"] == b["global_step"] == 4
    for key in ("model_state_dict", "raw_model_state_dict", "ema_state_dict"):
        assert a[key].keys() == b[key].keys()
        for name in a[key]:
            assert torch.equal(a[key][name], b[key][name]), f"{key}.{name} differs after resume"
    folder_a = load_file(straight / "last_bsmamba2.ckpt_lora_" / "adapter_model.safetensors")
    folder_b = load_file(split / "last_bsmamba2.ckpt_lora_" / "adapter_model.safetensors")
    assert folder_a.keys() == folder_b.keys() and all(torch.equal(folder_a[k], folder_b[k]) for k in folder_a)


def trainer_args(tmp_path, *extra):
    from bsmamba2_plugin.train.cli import parse_args

    data = make_tracks(tmp_path / "train", count=1)
    config = with_keys(tiny_config(tmp_path / "c.yaml", num_steps=1, num_epochs=1), lora=PEFT_LORA)
    return parse_args(["--config_path", str(config), "--data_path", str(data), "--results_path",
                       str(tmp_path / "r"), "--no_tensorboard", "--no_progress", *extra])


def test_lora_checkpoint_peft_round_trips(tmp_path):
    peft = pytest.importorskip("peft")
    from bsmamba2_plugin.train.trainer import Trainer

    config, _, results, done = peft_run(tmp_path / "first")
    assert done.returncode == 0, done.stderr[-3000:]
    folder = results / "last_bsmamba2.ckpt_lora_"
    stored = load_file(folder / "adapter_model.safetensors")
    args = trainer_args(tmp_path, "--train_lora_peft", "--lora_checkpoint_peft", str(folder),
                        "--start_check_point", str(results / "lora_base_bsmamba2.ckpt"))
    trainer = Trainer(args)
    assert isinstance(trainer.lora.peft_model, peft.PeftModel)
    loaded = {n: p for n, p in trainer.model.named_parameters() if ".lora_" in n}
    assert len(loaded) == len(stored)
    for name, value in stored.items():  # peft's file names: base_model.model.<layer>.lora_A.weight
        ours = loaded[name.removeprefix("base_model.model.").replace(".weight", ".default.weight")]
        assert torch.equal(ours.detach(), value) and ours.requires_grad
    assert not any(p.requires_grad for n, p in trainer.model.named_parameters() if ".lora_" not in n)
    # The checkpoint file instead of its folder: the error names the folder.
    with pytest.raises(TrainingConfigError, match="last_bsmamba2.ckpt_lora_"):
        Trainer(trainer_args(tmp_path / "again", "--train_lora_peft", "--lora_checkpoint_peft",
                             str(results / "last_bsmamba2.ckpt")))
    with pytest.raises(TrainingConfigError, match="needs --train_lora_peft"):
        Trainer(trainer_args(tmp_path / "again", "--lora_checkpoint_peft", str(folder)))


def test_peft_lora_keys_are_named(monkeypatch):
    peft = pytest.importorskip("peft")
    from bsmamba2_plugin.train.peft_lora import attach_peft, lora_config

    model = tiny_model()
    good = {"r": 4, "lora_alpha": 8, "target_modules": ["in_proj", "out_proj"]}
    cases = {"lora.merge_weights": {**good, "merge_weights": False},  # a loralib key
             "lora.no_such_key": {**good, "no_such_key": 1},
             "lora.use_dora": {**good, "use_dora": True},
             "lora.lora_bias": {**good, "lora_bias": True},
             "lora.modules_to_save": {**good, "modules_to_save": ["final_norm"]},
             "lora.bias": {**good, "bias": "all"},
             "lora.init_lora_weights": {**good, "init_lora_weights": "pissa"},
             "lora.r": {**good, "r": 0},
             "lora.target_modules is required": {"r": 4}}
    for message, section in cases.items():
        with pytest.raises(TrainingConfigError, match=message):
            lora_config(peft, section, model)
    with pytest.raises(TrainingConfigError, match="not nn.Linear: .*conv1d"):
        attach_peft(copy.deepcopy(model), {**good, "target_modules": ["conv1d"]}, "")
    with pytest.raises(TrainingConfigError, match="needs a `lora:` section"):
        attach_peft(copy.deepcopy(model), None, "")

    adapted = copy.deepcopy(model)
    with pytest.warns(UserWarning, match=r"lora\.lora_dropout=0\.1 is not applied"):
        attached, summary = attach_peft(adapted, {**good, "lora_dropout": 0.1}, "")
    assert "on 8 linear layers (in_proj 4, out_proj 4)" in summary
    assert all(isinstance(d, nn.Identity) for layer in attached.layers.values() for d in layer.lora_dropout.values())
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no dropout left: the model itself does not warn in training
        adapted.train()(audio())

    monkeypatch.setitem(sys.modules, "peft", None)  # peft not installed
    with pytest.raises(TrainingConfigError, match=r"bsmamba2-plugin\[lora\]"):
        attach_peft(copy.deepcopy(model), good, "")


def test_peft_folder_config_is_checked(tmp_path):
    pytest.importorskip("peft")
    from bsmamba2_plugin.train.peft_lora import attach_peft

    folder = tmp_path / "dora"
    folder.mkdir()
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "use_dora": True}))
    with pytest.raises(TrainingConfigError, match="adapter_config.json.use_dora"):
        attach_peft(tiny_model(), None, str(folder))
