"""Reading BSMamba2 weights from any checkpoint layout the MSST world produces.

Accepted: a plain state dict; MSST's training dict (`model_state_dict`, also `state` and
`state_dict`); our trainer's dict (EMA in `model_state_dict`, raw in `raw_model_state_dict`);
a PyTorch Lightning checkpoint of the official code (`state_dict`, keys prefixed `model.`, its
EMA copy in `optimizer_states[0]["ema"]`); `.safetensors`. Opening a checkpoint never executes
code from it (`load_weights_only`).

Every model this module returns carries `model.loaded_weights` (`LoadedWeights`): which file,
which layout, EMA or raw weights, how many parameters; commands print it at start.
"""
from __future__ import annotations

import os
import pickle
import re
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .model import BSMamba2

# Wrappers that prefix every key: DDP, torch.compile, Lightning (`model.` = official code).
KEY_PREFIXES = ("module.", "_orig_mod.", "model.")
WEIGHT_CHOICES = ("auto", "raw", "ema")
# The paper model in float32: what a complete download of the released weights roughly weighs.
PAPER_MODEL_BYTES = 48_098_188 * 4
SAFETENSORS_WEIGHTS_KEY = "bsmamba2_weights"  # metadata our exporter writes: "ema" / "raw" / "not recorded"


class CheckpointError(ValueError):
    """A checkpoint that cannot be read, or whose weights do not fit the model."""


@dataclass
class LoadedWeights:
    """Which weights a model holds; `str()` is the one line commands print."""

    path: Path | None
    layout: str
    kind: str  # "EMA", "raw", or "not recorded in the file"
    detail: str = ""
    parameter_count: int = 0

    def __str__(self) -> str:
        if self.path is None:
            return f"weights: none loaded (random initialisation), {self.parameter_count:,} parameters"
        kind = self.kind if not self.detail else f"{self.kind}, {self.detail}"
        return f"weights: {self.path} ({self.layout}; {kind}), {self.parameter_count:,} parameters"


@dataclass
class CheckpointWeights:
    """A state dict read from a file, with where it came from."""

    weights: dict[str, torch.Tensor]
    info: LoadedWeights


def read_state_dict(path: str | os.PathLike[str], weights: str = "auto") -> dict[str, torch.Tensor]:
    """The model weights in `path`, whatever the layout, with wrapper prefixes removed."""
    return read_checkpoint(path, weights).weights


def read_checkpoint(path: str | os.PathLike[str], weights: str = "auto") -> CheckpointWeights:
    """The weights in `path` and a description of them.

    `weights`: "auto" takes what the file offers for inference (our trainer's EMA copy, MSST's
    and the official Lightning file's saved weights, which are raw); "raw" or "ema" insist.
    """
    if weights not in WEIGHT_CHOICES:
        raise CheckpointError(f"weights={weights!r}: choose one of {', '.join(WEIGHT_CHOICES)}")
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(
            f"checkpoint {path} is a folder; give the checkpoint file (an official run folder's weights/*.ckpt)"
        )
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        if path.suffix == ".safetensors":
            return _read_safetensors(path, weights)
        raw = load_weights_only(path)
    except CheckpointError:
        raise
    except Exception as error:  # noqa: BLE001 - every failure becomes one clear message
        raise CheckpointError(unreadable_message(path, error)) from error
    return select_weights(raw, weights, path)


def unreadable_message(path: Path, error: BaseException) -> str:
    """Why `path` could not be opened, in words a user who just downloaded it can act on."""
    size = path.stat().st_size
    with open(path, "rb") as handle:
        head = handle.read(512)
    if head.lstrip()[:15].lower().startswith((b"<!doctype html", b"<html")):
        return (f"cannot read checkpoint {path}: it is a web page ({size:,} bytes), not weights; the download "
                f"saved the site's page (e.g. Google Drive's confirmation page) instead of the file: download it again")
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
        if not any(name.endswith("data.pkl") for name in names):
            return (f"cannot read checkpoint {path}: it is a zip archive of {len(names)} file(s) ({', '.join(names[:4])}"
                    f"{', ...' if len(names) > 4 else ''}), not a PyTorch checkpoint; unpack it and pass the "
                    f"checkpoint inside (the official release is a run folder: tb_logs/hparams.yaml + weights/*.ckpt)")
    if head[:2] == b"PK" or "zip" in str(error).lower() or isinstance(error, (EOFError, pickle.UnpicklingError)):
        return (f"cannot read checkpoint {path}: the file is truncated or damaged ({size:,} bytes; {error}). "
                f"Download it again: a complete checkpoint of the paper-size model is about "
                f"{PAPER_MODEL_BYTES / 1e6:.0f} MB (48.1 M float32 weights)")
    return f"cannot read checkpoint {path} ({size:,} bytes): {error}"


def _read_safetensors(path: Path, weights: str) -> CheckpointWeights:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            metadata = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    except Exception as error:  # noqa: BLE001
        size = path.stat().st_size
        raise CheckpointError(
            f"cannot read checkpoint {path}: not a complete .safetensors file ({size:,} bytes; {error}); "
            f"download or export it again"
        ) from error
    recorded = metadata.get(SAFETENSORS_WEIGHTS_KEY, "")
    kind = {"ema": "EMA", "raw": "raw"}.get(recorded, "not recorded in the file")
    _insist(weights, kind, path, "this .safetensors file")
    source = metadata.get("source")
    info = LoadedWeights(path, ".safetensors", kind, f"exported from {source}" if source else "")
    return CheckpointWeights(strip_prefixes(tensors, str(path)), info)


def _insist(weights: str, kind: str, path: Path, what: str) -> None:
    wanted = {"raw": "raw", "ema": "EMA"}.get(weights)
    if wanted is not None and kind != wanted:
        raise CheckpointError(
            f"checkpoint {path}: {weights} weights asked for, but {what} holds {kind} weights only"
            + ("" if kind != "not recorded in the file" else " (it does not say which)")
            + "; use weights=auto / --weights auto"
        )


def _tensors(mapping: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in mapping.items() if isinstance(v, torch.Tensor)}


def select_weights(raw: Any, weights: str = "auto", path: Path | str = "checkpoint") -> CheckpointWeights:
    """The chosen weights of a loaded checkpoint object, and which layout it was."""
    path = Path(path)
    origin = str(path)
    if not isinstance(raw, Mapping):
        raise CheckpointError(f"{origin} holds a {type(raw).__name__}, expected a dict of weights")
    if "model_state_dict" in raw and isinstance(raw["model_state_dict"], Mapping):
        if "trainer_format" in raw:  # bsmamba2_plugin.train
            holds = {"ema": "EMA", "raw": "raw"}.get(str(raw.get("model_state_dict_holds", "raw")), "raw")
            layout = "bsmamba2_plugin.train checkpoint"
            if weights == "raw" and holds == "EMA":
                if not isinstance(raw.get("raw_model_state_dict"), Mapping):
                    raise CheckpointError(f"checkpoint {path}: raw weights asked for, but it has no raw_model_state_dict")
                if raw.get("lora_library"):
                    raise CheckpointError(f"checkpoint {path} is a LoRA run's ({raw['lora_library']}): only its EMA "
                                          f"weights are stored merged (model_state_dict); use the EMA weights")
                chosen, kind, detail = raw["raw_model_state_dict"], "raw", "raw_model_state_dict"
            else:
                _insist(weights, holds, path, "this checkpoint")
                chosen, kind, detail = raw["model_state_dict"], holds, "model_state_dict"
        else:
            layout = "MSST training checkpoint"
            _insist(weights, "raw", path, "an MSST training checkpoint (MSST's train.py saves the trained model)")
            chosen, kind, detail = raw["model_state_dict"], "raw", "model_state_dict"
    elif "state_dict" in raw and isinstance(raw["state_dict"], Mapping) and (
            "optimizer_states" in raw or "pytorch-lightning_version" in raw or "hyper_parameters" in raw
            or "global_step" in raw):
        return _select_lightning(raw, weights, path)
    else:
        for key in ("state_dict", "state"):
            if key in raw and isinstance(raw[key], Mapping):
                layout, chosen, detail = f"dict with the weights under {key!r}", raw[key], ""
                break
        else:
            layout, chosen, detail = "plain state dict", raw, ""
        kind = "not recorded in the file"
        _insist(weights, kind, path, "a state dict")
    tensors = _tensors(chosen)
    if not tensors:
        keys = ", ".join(map(str, list(chosen)[:8]))
        raise CheckpointError(f"{origin} contains no tensors (keys: {keys})")
    return CheckpointWeights(strip_prefixes(tensors, origin), LoadedWeights(path, layout, kind, detail))


def _select_lightning(raw: Mapping[str, Any], weights: str, path: Path) -> CheckpointWeights:
    """The official code's Lightning file: `state_dict` holds the trained (raw) weights, which the
    official evaluate.py and inference.py load; its EMA callback keeps the averaged copy as a
    tuple in the optimizer state, in the order of the model's parameters."""
    layout = "Lightning checkpoint of the official code"
    state = _tensors(raw["state_dict"])
    model_keys = [k for k in state if k.startswith("model.")]
    if model_keys and len(model_keys) < len(state):  # also the featurizers' windows: keep the model's
        state = {k: state[k] for k in model_keys}
    if not state:
        raise CheckpointError(f"{path} contains no tensors in its state_dict")
    ema_state = _lightning_ema(raw)
    step = f"step {raw['global_step']}" if "global_step" in raw else ""
    if weights == "ema":
        if ema_state is None:
            raise CheckpointError(f"checkpoint {path}: EMA weights asked for, but its optimizer state holds no EMA "
                                  f"copy (the official EMA callback was off); use --weights raw")
        ema, decay = ema_state
        names = list(state)
        if len(ema) != len(names):
            raise CheckpointError(
                f"checkpoint {path}: its EMA copy has {len(ema)} tensors but the state_dict {len(names)} model "
                f"weights; cannot tell which is which"
            )
        for name, tensor in zip(names, ema):
            if tuple(tensor.shape) != tuple(state[name].shape):
                raise CheckpointError(
                    f"checkpoint {path}: EMA tensor for {name} is {tuple(tensor.shape)}, the weight is "
                    f"{tuple(state[name].shape)}: the EMA copy is not in the model's parameter order"
                )
        chosen = dict(zip(names, ema))
        detail = ", ".join(x for x in (f"decay {decay:g}" if decay is not None else "", step,
                                       "from optimizer_states[0]['ema']") if x)
        info = LoadedWeights(path, layout, "EMA", detail)
    else:
        chosen = state
        extra = "EMA copy also in the file: --weights ema" if ema_state is not None else "no EMA copy in the file"
        info = LoadedWeights(path, layout, "raw", ", ".join(x for x in ("state_dict", step, extra) if x))
    return CheckpointWeights(strip_prefixes(chosen, str(path)), info)


def _lightning_ema(raw: Mapping[str, Any]) -> tuple[list[torch.Tensor], float | None] | None:
    states = raw.get("optimizer_states")
    if not isinstance(states, Sequence) or not states or not isinstance(states[0], Mapping):
        return None
    ema = states[0].get("ema")
    if not isinstance(ema, (list, tuple)) or not ema or not all(isinstance(t, torch.Tensor) for t in ema):
        return None
    decay = states[0].get("decay")
    return list(ema), float(decay) if isinstance(decay, (int, float)) else None


def strip_prefixes(weights: Mapping[str, torch.Tensor], origin: str = "checkpoint") -> dict[str, torch.Tensor]:
    """Remove wrapper prefixes (DDP `module.`, torch.compile `_orig_mod.`, Lightning `model.`)."""
    weights = dict(weights)
    if not weights:
        raise CheckpointError(f"{origin} contains no tensors")
    for prefix in KEY_PREFIXES:
        if all(k.startswith(prefix) for k in weights):
            weights = {k[len(prefix):]: v for k, v in weights.items()}
    return weights


def unwrap_state_dict(raw: Any, origin: str = "checkpoint") -> dict[str, torch.Tensor]:
    """The weights of an already loaded checkpoint object (any layout above)."""
    return select_weights(raw, "auto", Path(origin)).weights


class InertObject:
    """Stands in for a class a checkpoint names but that must not run (e.g. OmegaConf's
    DictConfig in a Lightning checkpoint's `hyper_parameters`): it only keeps what it is given."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args, self.kwargs, self.items = args, kwargs, {}

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __call__(self, *args: Any, **kwargs: Any) -> InertObject:
        """A pickled call through a stand-in (e.g. getattr(cls, name)(...)) gives another stand-in."""
        return InertObject(*args, **kwargs)

    def __setitem__(self, key: Any, value: Any) -> None:
        self.items[key] = value

    def append(self, value: Any) -> None:
        self.items[len(self.items)] = value

    def extend(self, values: Any) -> None:
        for value in values:
            self.append(value)


def load_weights_only(path: Path) -> Any:
    """The checkpoint object in `path`, without ever running code from it.

    First torch.load(weights_only=True). Files that name other classes (the official Lightning
    checkpoints pickle OmegaConf hyper-parameters; MSST's train.py pickles its scheduler, which
    under recent torch holds the optimizer object) are then read by a restricted unpickler:
    names on torch's weights-only allow-list resolve as usual, every other name becomes an inert
    stand-in (`InertObject`) that only keeps what it is given, so nothing from the file runs.
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as first:
        names: list[str] = []
        if zipfile.is_zipfile(path):
            try:
                names = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
            except Exception:  # noqa: BLE001 - a damaged archive: the first error says it
                names = []
            if not names:
                raise
        try:
            return torch.load(path, map_location="cpu", weights_only=False, pickle_module=INERT_PICKLE)
        except Exception as error:  # noqa: BLE001
            if not names:  # not a zip checkpoint that names code: damaged or not a checkpoint at all
                raise first from error
            raise CheckpointError(
                f"checkpoint {path} names code ({', '.join(names)}) and cannot be read with inert stand-ins for it "
                f"({error}); refused. Re-save its weights as a plain state dict or .safetensors"
            ) from error


def _allowed_globals() -> dict[str, Any]:
    """torch's own list of what a weights-only load may resolve (tensor rebuilding, dtypes, ...)."""
    try:
        from torch._weights_only_unpickler import _get_allowed_globals

        allowed = dict(_get_allowed_globals())
    except (ImportError, AttributeError):  # older torch: the minimum that tensors need
        import collections

        allowed = {"collections.OrderedDict": collections.OrderedDict,
                   "torch._utils._rebuild_tensor_v2": torch._utils._rebuild_tensor_v2,
                   "torch._utils._rebuild_parameter": torch._utils._rebuild_parameter}
    for safe in torch.serialization.get_safe_globals():
        if isinstance(safe, tuple):
            safe, name = safe
        else:
            name = f"{safe.__module__}.{safe.__qualname__}"
        allowed[name] = safe
    return allowed


_STAND_INS: dict[str, type] = {}


def _stand_in(full_name: str) -> type:
    if full_name not in _STAND_INS:
        module, _, name = full_name.rpartition(".")
        _STAND_INS[full_name] = type(name or full_name, (InertObject,), {"__module__": module or "unknown"})
    return _STAND_INS[full_name]


class InertUnpickler(pickle.Unpickler):
    """Resolves only allow-listed names; everything else is an inert stand-in class."""

    def find_class(self, module: str, name: str) -> Any:
        full = f"{module}.{name}"
        allowed = _allowed_globals()
        return allowed[full] if full in allowed else _stand_in(full)


def _inert_load(file: Any, **kwargs: Any) -> Any:
    return InertUnpickler(file, **kwargs).load()


# torch.load's `pickle_module`: it subclasses `Unpickler` (adding storage loading) and calls `load`.
INERT_PICKLE = type(pickle)("bsmamba2_inert_pickle")
INERT_PICKLE.Unpickler = InertUnpickler
INERT_PICKLE.load = _inert_load
INERT_PICKLE.__dict__.update({name: getattr(pickle, name) for name in ("UnpicklingError", "HIGHEST_PROTOCOL")})


# --- whether the weights are BSMamba2 at all, and which BSMamba2 ----------------------------

# Key patterns of other architectures' state dicts (MSST's and the official code's classes).
OTHER_ARCHITECTURES = (
    (re.compile(r"(^|\.)to_qkv\.weight$"), "final_norm.gamma",
     "a BS-RoFormer (attention layers, e.g. MSST's bs_roformer or the official code's bsroformer baseline)",
     "a Mel-Band RoFormer (attention layers without a final norm, MSST's mel_band_roformer)"),
    (re.compile(r"(^|\.)mixer\.x_proj\.weight$"), None,
     "a Mamba-1 band-split model (the official code's module_type 'mamba')", None),
    (re.compile(r"^(first_conv\.weight|encoder_blocks\.\d+\.tfc_tdf\.)"), None,
     "an MDX23C / TFC-TDF net (MSST's mdx23c)", None),
    (re.compile(r"^(crosstransformer\.|encoder\.\d+\.conv\.weight|tencoder\.)"), None,
     "a (HT)Demucs model (MSST's htdemucs)", None),
    (re.compile(r"^encoder\.\d+\.SDlayer\."), None, "an SCNet (MSST's scnet)", None),
)
BSMAMBA2_SIGNATURE = re.compile(r"^layers\.\d+\.\d+\.forward_blocks\.0\.mixer\.in_proj\.weight$")


def identify_architecture(weights: Mapping[str, torch.Tensor]) -> str | None:
    """None for BSMamba2 weights; else what the weights are, in words (None also when unknown)."""
    keys = list(weights)
    if any(BSMAMBA2_SIGNATURE.match(k) for k in keys):
        return None
    for pattern, marker, name, name_without_marker in OTHER_ARCHITECTURES:
        if any(pattern.search(k) for k in keys):
            if marker is not None and marker not in weights and name_without_marker:
                return name_without_marker
            return name
    return None


@dataclass(frozen=True)
class WeightsShape:
    """The model size a BSMamba2 state dict was trained with, read from its tensors."""

    dim: int
    depth: int
    num_stems: int
    band_inputs: tuple[int, ...]  # per band: bins x channels x 2

    def freqs_per_bands(self, channels: int) -> tuple[int, ...] | None:
        if any(width % (2 * channels) for width in self.band_inputs):
            return None
        return tuple(width // (2 * channels) for width in self.band_inputs)

    def describe(self, channels: int) -> str:
        bands = self.freqs_per_bands(channels)
        parts = [f"dim {self.dim}", f"depth {self.depth}", f"{self.num_stems} stem(s)", f"{len(self.band_inputs)} bands"]
        if bands is not None:
            parts.append(f"freqs_per_bands {compact_bands(bands)} (sum {sum(bands)}, "
                         f"stft_n_fft {2 * (sum(bands) - 1)}) for {'stereo' if channels == 2 else 'mono'}")
        else:
            parts.append(f"band input widths {compact_bands(self.band_inputs)}")
        return ", ".join(parts)


def compact_bands(bands: Sequence[int]) -> str:
    """(2, 2, 2, 4) -> "2 x 3, 4": runs of equal widths."""
    runs: list[list[int]] = []
    for value in bands:
        if runs and runs[-1][0] == value:
            runs[-1][1] += 1
        else:
            runs.append([value, 1])
    return "(" + ", ".join(f"{v} x {n}" if n > 1 else str(v) for v, n in runs) + ")"


def weights_shape(weights: Mapping[str, torch.Tensor]) -> WeightsShape | None:
    """Read dim, depth, stems and bands from BSMamba2-named tensors (None when they are absent)."""
    band_keys = {}
    for key, value in weights.items():
        match = re.fullmatch(r"band_split\.to_features\.(\d+)\.1\.weight", key)
        if match and value.dim() == 2:
            band_keys[int(match.group(1))] = value
    if not band_keys or sorted(band_keys) != list(range(len(band_keys))):
        return None
    layers = {int(m.group(1)) for k in weights if (m := re.match(r"layers\.(\d+)\.", k))}
    stems = {int(m.group(1)) for k in weights if (m := re.match(r"mask_estimators\.(\d+)\.", k))}
    return WeightsShape(dim=int(band_keys[0].shape[0]), depth=len(layers), num_stems=len(stems),
                        band_inputs=tuple(int(band_keys[i].shape[1]) for i in range(len(band_keys))))


def load_weights(model: nn.Module, weights: Mapping[str, torch.Tensor], origin: str = "checkpoint") -> None:
    """Copy `weights` into `model`, naming every missing, unexpected or misshapen key.

    Weights of another architecture, or of a BSMamba2 of another size or band split, are named
    as such, with the settings the weights need.
    """
    other = identify_architecture(weights)
    if other is not None:
        raise CheckpointError(
            f"{origin} holds {other}, not BSMamba2 (whose layers are named "
            f"layers.<i>.<j>.forward_blocks.0.mixer.in_proj.weight); use it with its own model type and config"
        )
    expected = model.state_dict()
    missing = [k for k in expected if k not in weights]
    unexpected = [k for k in weights if k not in expected]
    misshapen = [
        f"{k}: checkpoint {tuple(weights[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items() if k in weights and weights[k].shape != v.shape
    ]
    if missing or unexpected or misshapen:
        lines = [f"{origin} does not fit the model built from the config:"]
        found, built = weights_shape(weights), weights_shape(expected)
        if found is not None and built is not None and found != built:
            channels = getattr(model, "audio_channels", 2)
            lines.append(f"  the weights are a BSMamba2 of {found.describe(channels)}")
            lines.append(f"  the config builds {built.describe(channels)}")
            if found.band_inputs != built.band_inputs:
                bands = found.freqs_per_bands(channels)
                hint = f"model.freqs_per_bands: {list(bands)}" if bands else "model.stereo and model.freqs_per_bands"
                lines.append(f"  the bands do not match: set {hint} (or use the config released with the weights)")
        for title, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", misshapen)):
            if keys:
                shown = keys[:10] + ([f"... and {len(keys) - 10} more"] if len(keys) > 10 else [])
                lines.append(f"  {title} ({len(keys)}): " + "; ".join(shown))
        raise CheckpointError("\n".join(lines))
    model.load_state_dict(dict(weights), strict=True)


# --- building a model with its weights -------------------------------------------------------

def find_run_checkpoint(folder: str | os.PathLike[str]) -> Path:
    """The one `weights/*.ckpt` of an official run folder; several are an error listing them."""
    folder = Path(folder)
    found = sorted((folder / "weights").glob("*.ckpt")) or sorted(folder.glob("*.ckpt"))
    if not found:
        raise CheckpointError(f"run folder {folder} has no weights/*.ckpt; give the checkpoint file")
    if len(found) > 1:
        raise CheckpointError(
            f"run folder {folder} holds {len(found)} checkpoints ({', '.join(p.name for p in found)}); "
            f"pass the one to use (checkpoint= / --start_check_point)"
        )
    return found[0]


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def load_model(
    config: Mapping[str, Any] | Any | str | os.PathLike[str],
    checkpoint: str | os.PathLike[str] | None = None,
    device: str | torch.device = "cpu",
    weights: str = "auto",
) -> BSMamba2:
    """Build BSMamba2 from a config and load `checkpoint` into it.

    `config`: an MSST YAML path, an official `hparams.yaml`, an official run folder (then the
    checkpoint defaults to its only `weights/*.ckpt`), or a loaded ConfigDict / dict.
    `weights`: "auto", "raw" or "ema" (see `read_checkpoint`). The model's `loaded_weights`
    says what was loaded.
    """
    from .config import load_config, resolve_model_type

    if isinstance(config, (str, os.PathLike)):
        if Path(config).is_dir() and checkpoint is None:
            checkpoint = find_run_checkpoint(config)
        origin = str(config)
        config = load_config(config)
    else:
        origin = "the config"
    resolve_model_type(config, origin=origin)
    model = BSMamba2.from_config(config)
    if checkpoint is not None:
        read = read_checkpoint(checkpoint, weights)
        load_weights(model, read.weights, origin=f"checkpoint {checkpoint}")
        info = read.info
    else:
        if weights != "auto":
            raise CheckpointError(f"weights={weights!r} needs a checkpoint")
        info = LoadedWeights(None, "", "")
    info.parameter_count = parameter_count(model)
    model.loaded_weights = info
    return model.to(device).eval()
