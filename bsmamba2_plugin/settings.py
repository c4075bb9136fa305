"""The inference facts of an MSST config, parsed once: every separating caller holds one of these.

`Separator`, the trainer's validation, `evaluate`, the streaming command and the `msst.models`
entry read the config only through `InferenceSettings.from_config`, so a default (44100 Hz, the
stem list, the overlap) is decided in one place. MSST's inference options that live on its
command line rather than in the YAML (TTA, bigshifts) are fields too, set per call.

The checks of one value (`true_or_false`, `whole_number`, `positive_int`, `number_in`) live here as
well: the trainer and the model refuse a bad setting with the same wording, naming its key.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any

DEFAULT_SAMPLE_RATE = 44100  # MSST: getattr(config.audio, "sample_rate", 44100)
PRECISIONS = ("auto", "fp32", "bf16")


def config_section(config: Any, name: str, required: bool = True) -> Any:
    """``config[name]`` for a ConfigDict, dict or OmegaConf object; a clear error when missing."""
    try:
        return config[name]
    except (KeyError, AttributeError, TypeError):
        if required:
            raise ValueError(f"config has no '{name}' section (needed for separation)") from None
        return {}


def config_value(section: Any, key: str, default: Any = None) -> Any:
    try:
        return section[key] if key in section else default
    except TypeError:
        return getattr(section, key, default)


def true_or_false(value: Any, name: str) -> bool:
    """A yes/no setting: only true or false (bool() would read the string "false" as true)."""
    if not isinstance(value, bool):
        raise ValueError(f"{name}={value!r}: expected true or false")
    return value


def use_amp_setting(training: Any) -> bool:
    """training.use_amp, true when absent, as MSST's train.py and utils/model_utils.py read it:
    the one reading for separation and training."""
    return true_or_false(config_value(training, "use_amp", True), "training.use_amp")


def whole_number(value: Any, name: str, minimum: int = 0) -> int:
    """An integer setting of at least `minimum`; true/false, text and fractions are refused."""
    if isinstance(value, bool) or not isinstance(value, Integral) or value < minimum:
        what = "a positive integer" if minimum == 1 else f"a whole number, {minimum} or more"
        raise ValueError(f"{name} must be {what}, got {value!r}")
    return int(value)


def positive_int(value: Any, name: str) -> int:
    return whole_number(value, name, 1)


def number_in(value: Any, name: str, low: float, high: float = math.inf, *, low_open: bool = False,
              high_open: bool = False) -> float:
    """A real-number setting from `low` to `high`, an end excluded where it is open; true/false, NaN
    and text other than a number are refused. (PyYAML reads `1e-4`, without a dot, as text: taken.)"""
    number = value
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            pass
    fits = isinstance(number, Real) and not isinstance(number, bool) and not math.isnan(number)
    if fits:
        fits = (number > low if low_open else number >= low) and (number < high if high_open else number <= high)
    if not fits:
        if high == math.inf:
            what = f"a number above {low:g}" if low_open else f"a number, {low:g} or more"
        else:
            what = f"a number in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        raise ValueError(f"{name} must be {what}, got {value!r}")
    return float(number)


def stem_names(config: Any) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(stems the model's output is reduced to, every stem it was trained on): MSST's
    ``prefer_target_instrument``: ``training.target_instrument`` alone when set."""
    training = config_section(config, "training")
    instruments = config_value(training, "instruments")
    if instruments is None:
        raise ValueError("training.instruments: missing (the list of stems, e.g. [vocals, other])")
    if not instruments or isinstance(instruments, str):
        raise ValueError("training.instruments: expected a non-empty list of stem names, e.g. [vocals, other]")
    everything = tuple(str(name) for name in instruments)
    target = config_value(training, "target_instrument")
    if target:
        if target not in everything:
            raise ValueError(f"training.target_instrument={target!r} is not in training.instruments {list(everything)}")
        return (str(target),), everything
    return everything, everything


def sample_rate(config: Any) -> int:
    """``audio.sample_rate`` as MSST reads it (44100 when absent)."""
    rate = config_value(config_section(config, "audio", required=False), "sample_rate", DEFAULT_SAMPLE_RATE)
    if isinstance(rate, bool) or not isinstance(rate, Integral) or rate <= 0:
        raise ValueError(f"audio.sample_rate must be a positive integer, got {rate!r}")
    return int(rate)


@dataclass(frozen=True)
class InferenceSettings:
    """What separation needs from the config, validated, plus the per-run options."""

    sample_rate: int
    chunk_size: int
    num_overlap: int
    batch_size: int
    instruments: tuple[str, ...]  # what comes out (the target alone when training.target_instrument is set)
    all_instruments: tuple[str, ...]  # what the model was trained to return
    normalize: bool
    use_amp: bool
    precision: str = "auto"
    use_tta: bool = False
    bigshifts: int = 1

    @classmethod
    def from_config(cls, config: Any, **options: Any) -> InferenceSettings:
        """Parse ``config``; ``options`` (num_overlap, batch_size, precision, use_tta, bigshifts,
        chunk_size) override it, None meaning "as the config says"."""
        inference = config_section(config, "inference")
        training = config_section(config, "training")
        chunk = config_value(inference, "chunk_size")
        chunk_name = "inference.chunk_size"
        if chunk is None:
            chunk = config_value(config_section(config, "audio"), "chunk_size")
            chunk_name = "audio.chunk_size"
        if chunk is None:
            raise ValueError("config needs audio.chunk_size (or inference.chunk_size)")
        instruments, everything = stem_names(config)
        settings = cls(
            sample_rate=sample_rate(config),
            chunk_size=positive_int(chunk, chunk_name),
            num_overlap=positive_int(config_value(inference, "num_overlap"), "inference.num_overlap"),
            batch_size=positive_int(config_value(inference, "batch_size"), "inference.batch_size"),
            instruments=instruments,
            all_instruments=everything,
            normalize=true_or_false(config_value(inference, "normalize", False) or False, "inference.normalize"),
            use_amp=use_amp_setting(training),
            precision=str(config_value(inference, "precision", "auto")),
        )
        return settings.with_options(**options)

    def with_options(self, **options: Any) -> InferenceSettings:
        unknown = set(options) - {"num_overlap", "batch_size", "precision", "use_tta", "bigshifts", "chunk_size"}
        if unknown:
            raise TypeError(f"unknown separation option(s): {', '.join(sorted(unknown))}")
        changed = dataclasses.replace(self, **{k: v for k, v in options.items() if v is not None})
        changed.validate()
        return changed

    def validate(self) -> None:
        positive_int(self.chunk_size, "chunk_size")
        positive_int(self.num_overlap, "num_overlap")
        positive_int(self.batch_size, "batch_size")
        positive_int(self.bigshifts, "bigshifts")
        if self.num_overlap > self.chunk_size:
            raise ValueError(f"inference.num_overlap={self.num_overlap} exceeds chunk_size={self.chunk_size}; "
                             f"the step would be zero")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}; got {self.precision!r}")
        true_or_false(self.use_tta, "use_tta")

    @property
    def target_index(self) -> int | None:
        """Index of the target in the model's output when the model returns every trained stem."""
        if len(self.instruments) == 1 and len(self.all_instruments) > 1:
            return self.all_instruments.index(self.instruments[0])
        return None

    @property
    def passes(self) -> int:
        """Model passes over the whole signal: bigshifts, times three with TTA."""
        return self.bigshifts * (3 if self.use_tta else 1)
