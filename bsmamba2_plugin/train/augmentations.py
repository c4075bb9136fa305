"""MSST's whole `augmentations` section, with the meaning MSST's `utils/dataset.py` gives it.

Top level: `enable`, `loudness` (`loudness_min`, `loudness_max`), `mixup` (`mixup_probs`; the
mixed-in layers' gains come from `loudness_min`/`loudness_max`, as in MSST's code),
`mp3_compression_on_mixture` (probability, `_bitrate_min`, `_bitrate_max`, `_backend`: MP3 on the
mixture only, after the stems are summed) and `chunk_size_augm` (`chunk_size_min`,
`chunk_size_max`: each batch cropped to a random length, see `ChunkSizeAugmentation`).
In `all` and per-instrument sections (the instrument's keys override `all`'s): channel_shuffle,
random_inverse, random_polarity, the audiomentations family (pitch_shift,
seven_band_parametric_eq, tanh_distortion, mp3_compression, gaussian_noise, time_stretch) and the
pedalboard family (pedalboard_reverb, _chorus, _phazer, _distortion, _pitch_shift, _resample,
_bitcrash, _mp3_compressor), applied in MSST's order, each with its probability.

Randomness: every draw (probabilities and pedalboard parameters) comes from the generator passed
in, which the dataset seeds from (seed, epoch, index). audiomentations draws its parameters from
Python's `random` and NumPy's global generator; those are seeded from the same generator around
each call and restored afterwards, so an example stays a function of (seed, epoch, index) and a
resumed run sees the same data. The effects themselves are deterministic given their parameters.
"""
from __future__ import annotations

import contextlib
import inspect
import random
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bsmamba2_plugin.settings import DEFAULT_SAMPLE_RATE

from .errors import TrainingConfigError

BASIC_PER_STEM = ("channel_shuffle", "random_inverse", "random_polarity")

# key -> (audiomentations class, {constructor argument: config key}, fixed arguments), in MSST's order
AUDIOMENTATIONS: dict[str, tuple[str, dict[str, str], dict[str, Any]]] = {
    "pitch_shift": ("PitchShift", {"min_semitones": "pitch_shift_min_semitones",
                                   "max_semitones": "pitch_shift_max_semitones"}, {}),
    "seven_band_parametric_eq": ("SevenBandParametricEQ", {"min_gain_db": "seven_band_parametric_eq_min_gain_db",
                                                           "max_gain_db": "seven_band_parametric_eq_max_gain_db"}, {}),
    "tanh_distortion": ("TanhDistortion", {"min_distortion": "tanh_distortion_min",
                                           "max_distortion": "tanh_distortion_max"}, {}),
    "mp3_compression": ("Mp3Compression", {"min_bitrate": "mp3_compression_min_bitrate",
                                           "max_bitrate": "mp3_compression_max_bitrate",
                                           "backend": "mp3_compression_backend"}, {}),
    "gaussian_noise": ("AddGaussianNoise", {"min_amplitude": "gaussian_noise_min_amplitude",
                                            "max_amplitude": "gaussian_noise_max_amplitude"}, {}),
    "time_stretch": ("TimeStretch", {"min_rate": "time_stretch_min_rate", "max_rate": "time_stretch_max_rate"},
                     {"leave_length_unchanged": True}),
}

# key -> (pedalboard plugin, {plugin argument: config key prefix, drawn from U(prefix_min, prefix_max)}, fixed)
PEDALBOARD: dict[str, tuple[str, dict[str, str], dict[str, Any]]] = {
    "pedalboard_reverb": ("Reverb", {p: f"pedalboard_reverb_{p}" for p in
                                     ("room_size", "damping", "wet_level", "dry_level", "width")},
                          {"freeze_mode": 0.0}),
    "pedalboard_chorus": ("Chorus", {p: f"pedalboard_chorus_{p}" for p in
                                     ("rate_hz", "depth", "centre_delay_ms", "feedback", "mix")}, {}),
    "pedalboard_phazer": ("Phaser", {p: f"pedalboard_phazer_{p}" for p in
                                     ("rate_hz", "depth", "centre_frequency_hz", "feedback", "mix")}, {}),
    "pedalboard_distortion": ("Distortion", {"drive_db": "pedalboard_distortion_drive_db"}, {}),
    "pedalboard_pitch_shift": ("PitchShift", {"semitones": "pedalboard_pitch_shift_semitones"}, {}),
    "pedalboard_resample": ("Resample", {"target_sample_rate": "pedalboard_resample_target_sample_rate"}, {}),
    "pedalboard_bitcrash": ("Bitcrush", {"bit_depth": "pedalboard_bitcrash_bit_depth"}, {}),
    # MSST's key really repeats the prefix
    "pedalboard_mp3_compressor": ("MP3Compressor",
                                  {"vbr_quality": "pedalboard_mp3_compressor_pedalboard_mp3_compressor"}, {}),
}

MIXTURE_MP3_KEYS = ("mp3_compression_on_mixture_bitrate_min", "mp3_compression_on_mixture_bitrate_max",
                    "mp3_compression_on_mixture_backend")
EXTRA_HINT = 'pip install "bsmamba2-plugin[augment]" (audiomentations, pedalboard, lameenc)'


def per_stem_keys() -> frozenset[str]:
    """Every key an `all` / per-instrument section may hold."""
    keys = set(BASIC_PER_STEM) | set(AUDIOMENTATIONS) | set(PEDALBOARD)
    for _, arguments, _ in AUDIOMENTATIONS.values():
        keys |= set(arguments.values())
    for _, arguments, _ in PEDALBOARD.values():
        keys |= {f"{prefix}_{end}" for prefix in arguments.values() for end in ("min", "max")}
    return frozenset(keys)


TOP_LEVEL_KEYS = frozenset({
    "enable", "loudness", "loudness_min", "loudness_max", "mixup", "mixup_probs", "mixup_loudness_min",
    "mixup_loudness_max", "mp3_compression_on_mixture", *MIXTURE_MP3_KEYS, "chunk_size_augm", "chunk_size_min",
    "chunk_size_max", "all",
})


def _probability(value: Any, path: str) -> float:
    try:
        p = float(value)
    except (TypeError, ValueError):
        raise TrainingConfigError(f"{path}={value!r}: expected a probability between 0 and 1") from None
    if not 0.0 <= p <= 1.0:
        raise TrainingConfigError(f"{path}={value!r}: expected a probability between 0 and 1")
    return p


def _require(section: Mapping[str, Any], key: str, path: str, needed_by: str) -> Any:
    if key not in section:
        raise TrainingConfigError(f"{path}.{key} is missing; {needed_by} needs it (as in MSST)")
    return section[key]


def _import_libraries(wanted: dict[str, str]) -> None:
    """Import each library some key needs. wanted: key path -> library name."""
    for library in sorted(set(wanted.values())):
        try:
            __import__(library)
        except Exception as error:  # noqa: BLE001 - any import failure means the same to the user
            keys = ", ".join(sorted(k for k, lib in wanted.items() if lib == library))
            raise TrainingConfigError(
                f"{keys} need(s) {library}, which is not importable ({error}); {EXTRA_HINT}, or set those "
                f"probabilities to 0"
            ) from error


@contextlib.contextmanager
def seeded_global_generators(rng: np.random.Generator) -> Iterator[None]:
    """Seed Python's and NumPy's global generators from `rng` for one library call, then restore them."""
    python_state, numpy_state = random.getstate(), np.random.get_state()
    seed = int(rng.integers(0, 2**32 - 1))
    random.seed(seed)
    np.random.seed(seed)
    try:
        yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)


def _fit_length(source: np.ndarray, length: int) -> np.ndarray:
    """MSST cuts effects' longer output; a shorter one (never seen, but possible) is zero-padded."""
    if source.shape[-1] > length:
        return source[..., :length]
    if source.shape[-1] < length:
        return np.pad(source, ((0, 0), (0, length - source.shape[-1])))
    return source


@dataclass(frozen=True)
class StemEffect:
    key: str
    probability: float
    library: str                      # "audiomentations" or "pedalboard"
    class_name: str
    fixed: Mapping[str, Any]          # constructor arguments as given
    ranges: Mapping[str, tuple[float, float]] = field(default_factory=dict)  # pedalboard: drawn uniformly


@dataclass(frozen=True)
class Augmentations:
    enable: bool = False
    loudness: tuple[float, float] | None = None
    mixup_probs: tuple[float, ...] = ()
    mixup_loudness: tuple[float, float] = (0.5, 1.5)
    per_stem: Mapping[str, Mapping[str, float]] = field(default_factory=dict)  # instrument -> basic key -> p
    effects: Mapping[str, tuple[StemEffect, ...]] = field(default_factory=dict)  # instrument -> effects
    mixture_mp3: StemEffect | None = None
    sample_rate: int = DEFAULT_SAMPLE_RATE

    @classmethod
    def from_config(cls, section: Mapping[str, Any] | None, instruments: list[str],
                    sample_rate: int = DEFAULT_SAMPLE_RATE) -> Augmentations:
        if not section or not section.get("enable", False):
            return cls()
        section = dict(section)
        loudness = None
        if section.get("loudness", False):
            loudness = (float(_require(section, "loudness_min", "augmentations", "augmentations.loudness")),
                        float(_require(section, "loudness_max", "augmentations", "augmentations.loudness")))
        mixup_probs: tuple[float, ...] = ()
        mixup_loudness = (float(section.get("loudness_min", 0.5)), float(section.get("loudness_max", 1.5)))
        if section.get("mixup", False):
            mixup_probs = tuple(_probability(p, "augmentations.mixup_probs") for p in section.get("mixup_probs", ()))
            for key in ("mixup_loudness_min", "mixup_loudness_max"):
                if key in section and float(section[key]) != mixup_loudness[key.endswith("max")]:
                    warnings.warn(
                        f"augmentations.{key}={section[key]} is not read (MSST's dataset code never reads it): "
                        f"mixup layer gains come from augmentations.loudness_min/loudness_max "
                        f"{mixup_loudness}, as in MSST", stacklevel=2)
        common = dict(section.get("all", {}) or {})
        per_stem: dict[str, dict[str, float]] = {}
        effects: dict[str, tuple[StemEffect, ...]] = {}
        wanted: dict[str, str] = {}
        for instrument in instruments:
            own = dict(section.get(instrument, {}) or {})
            merged = {**common, **own}

            def path(key: str) -> str:
                return f"augmentations.{instrument if key in own else 'all'}.{key}"

            def need(name: str, by: str) -> Any:
                if name not in merged:
                    raise TrainingConfigError(
                        f"{path(by)} needs {name} (in augmentations.all or augmentations.{instrument}), as in MSST; "
                        f"it is missing")
                return merged[name]

            per_stem[instrument] = {k: _probability(merged[k], path(k)) for k in BASIC_PER_STEM if k in merged}
            chosen = []
            for key, (class_name, arguments, fixed) in AUDIOMENTATIONS.items():
                p = _probability(merged[key], path(key)) if key in merged else 0.0
                if p > 0:
                    values = {arg: need(name, key) for arg, name in arguments.items()}
                    chosen.append(StemEffect(key, p, "audiomentations", class_name, {**values, **fixed}))
                    wanted[path(key)] = "audiomentations"
                    if values.get("backend") in ("lameenc", "pydub"):
                        wanted[path(key) + "_backend"] = str(values["backend"])
            for key, (class_name, arguments, fixed) in PEDALBOARD.items():
                p = _probability(merged[key], path(key)) if key in merged else 0.0
                if p > 0:
                    ranges = {arg: (float(need(f"{prefix}_min", key)), float(need(f"{prefix}_max", key)))
                              for arg, prefix in arguments.items()}
                    chosen.append(StemEffect(key, p, "pedalboard", class_name, dict(fixed), ranges))
                    wanted[path(key)] = "pedalboard"
            effects[instrument] = tuple(chosen)
        mixture_mp3 = None
        p = _probability(section.get("mp3_compression_on_mixture", 0.0) or 0.0,
                         "augmentations.mp3_compression_on_mixture")
        if p > 0:
            needed_by = "augmentations.mp3_compression_on_mixture"
            mixture_mp3 = StemEffect("mp3_compression_on_mixture", p, "audiomentations", "Mp3Compression", {
                "min_bitrate": int(_require(section, MIXTURE_MP3_KEYS[0], "augmentations", needed_by)),
                "max_bitrate": int(_require(section, MIXTURE_MP3_KEYS[1], "augmentations", needed_by)),
                "backend": str(_require(section, MIXTURE_MP3_KEYS[2], "augmentations", needed_by)),
            })
            wanted[needed_by] = "audiomentations"
            if mixture_mp3.fixed["backend"] in ("lameenc", "pydub"):
                wanted[f"augmentations.{MIXTURE_MP3_KEYS[2]}"] = mixture_mp3.fixed["backend"]
        _import_libraries(wanted)  # fail now, with the keys named, rather than in a data worker
        return cls(True, loudness, mixup_probs, mixup_loudness, per_stem, effects, mixture_mp3, int(sample_rate))

    def stem(self, source: np.ndarray, instrument: str, rng: np.random.Generator) -> np.ndarray:
        """MSST's `augm_data` on one source (channels, samples)."""
        if not self.enable:
            return source
        probabilities = self.per_stem.get(instrument, {})
        if probabilities.get("channel_shuffle", 0.0) > 0 and rng.random() < probabilities["channel_shuffle"]:
            source = source[::-1]
        if probabilities.get("random_inverse", 0.0) > 0 and rng.random() < probabilities["random_inverse"]:
            source = source[:, ::-1]
        if probabilities.get("random_polarity", 0.0) > 0 and rng.random() < probabilities["random_polarity"]:
            source = -source
        source = np.ascontiguousarray(source, dtype=np.float32)
        length = source.shape[-1]
        for effect in self.effects.get(instrument, ()):
            if rng.random() < effect.probability:
                source = _fit_length(self._apply(effect, source, rng), length)
        return np.ascontiguousarray(source, dtype=np.float32)

    def mixture(self, mixture: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """`mp3_compression_on_mixture`: the mixture only, so it no longer equals the sum of the stems."""
        if not self.enable or self.mixture_mp3 is None:
            return mixture
        if rng.random() >= self.mixture_mp3.probability:
            return mixture
        out = self._apply(self.mixture_mp3, np.ascontiguousarray(mixture, dtype=np.float32), rng)
        return np.ascontiguousarray(_fit_length(out, mixture.shape[-1]), dtype=np.float32)

    def _apply(self, effect: StemEffect, source: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if effect.library == "audiomentations":
            import audiomentations

            kind = getattr(audiomentations, effect.class_name)
            options = dict(effect.fixed)
            if options.get("backend") == "lameenc" and "preserve_delay" in inspect.signature(kind).parameters:
                options["preserve_delay"] = True  # audiomentations >= 0.43 refuses lameenc without it
            with warnings.catch_warnings():  # its repr bookkeeping warns about every constructor argument
                warnings.filterwarnings("ignore", message="Warning: attribute .* is not found in the transform")
                transform = kind(**options, p=1.0)
            with seeded_global_generators(rng), warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="Warning: attribute .* is not found in the transform")
                return np.asarray(transform(samples=source, sample_rate=self.sample_rate), dtype=np.float32)
        import pedalboard

        values = {name: float(rng.uniform(low, high)) for name, (low, high) in effect.ranges.items()}
        board = pedalboard.Pedalboard([getattr(pedalboard, effect.class_name)(**values, **effect.fixed)])
        return np.asarray(board(source, self.sample_rate), dtype=np.float32)

    def gains(self, count: int, rng: np.random.Generator) -> np.ndarray | None:
        if not self.enable or self.loudness is None:
            return None
        return rng.uniform(self.loudness[0], self.loudness[1], size=count).astype(np.float32)


@dataclass(frozen=True)
class ChunkSizeAugmentation:
    """`augmentations.chunk_size_augm`: MSST's `music_collate_fn`.

    Each batch is cut to its first L samples, L drawn uniformly from
    [chunk_size_min, min(audio.chunk_size, chunk_size_max)] once per batch. Here L comes from a
    generator seeded with (seed, epoch, batch index), so a resumed run cuts the same lengths.
    """

    minimum: int
    maximum: int

    @classmethod
    def from_config(cls, config: Any) -> ChunkSizeAugmentation | None:
        section = config.get("augmentations", None) or {}
        if not section.get("enable", False) or not section.get("chunk_size_augm", False):
            return None
        chunk = int(config.audio.chunk_size)
        needed = "augmentations.chunk_size_augm"
        low = int(_require(section, "chunk_size_min", "augmentations", needed))
        high = int(_require(section, "chunk_size_max", "augmentations", needed))
        if not 0 < low <= high:
            raise TrainingConfigError(
                f"augmentations.chunk_size_min={low} and chunk_size_max={high}: need 0 < min <= max")
        if high > chunk:
            warnings.warn(f"augmentations.chunk_size_max={high} exceeds audio.chunk_size={chunk}: batches are at most "
                          f"{chunk} samples long; raise audio.chunk_size to {high} (as MSST advises)", stacklevel=2)
        if low > chunk:
            raise TrainingConfigError(
                f"augmentations.chunk_size_min={low} exceeds audio.chunk_size={chunk}: no batch can be that long")
        return cls(low, min(high, chunk))

    def length(self, seed: int, epoch: int, batch: int) -> int:
        rng = np.random.default_rng([seed, epoch, batch, 0x6368756E])  # own stream, apart from the items'
        return int(rng.integers(self.minimum, self.maximum + 1))
