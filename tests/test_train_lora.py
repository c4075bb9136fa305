"""LoRA: the model applies loralib and peft adapters on every path. Uses the real loralib and peft
packages."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from bsmamba2_plugin.model import BSMamba2
from bsmamba2_plugin.model.linear_weight import effective_bias, effective_weight

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


def test_loralib_dropout_in_training_warns_where_it_is_not_applied():
    loralib = pytest.importorskip("loralib")
    model = tiny_model()
    name = next(n for n in linear_names(model) if n.endswith(".in_proj"))
    plain = model.get_submodule(name)
    layer = loralib.Linear(plain.in_features, plain.out_features, bias=False, r=2, lora_dropout=0.1)
    replace_module(model, name, layer)
    with pytest.warns(UserWarning, match="lora_dropout=0.1 is not applied"):
        model.train()(audio())
