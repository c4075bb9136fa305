"""The model types MSST itself builds; no plugin may take one of these names.

Read from MSST's `utils/settings.py::get_model_from_config` (repository
ZFTurbo/Music-Source-Separation-Training, commit ccc011a) and from the PyPI package
`msst` 0.1.0 (`msst/utils/settings.py::build_model_from_config`); both chains hold the
same names. MSST-WebUI's chain (`utils/utils.py`) is a subset.
"""
from __future__ import annotations

MSST_BUILTIN_MODEL_TYPES: frozenset[str] = frozenset({
    "mdx23c",
    "htdemucs",
    "segm_models",
    "torchseg",
    "mel_band_roformer",
    "mel_band_conformer",
    "mel_band_roformer_experimental",
    "bs_roformer",
    "bs_conformer",
    "bs_roformer_experimental",
    "bs_mamba2",
    "swin_upernet",
    "bandit",
    "bandit_v2",
    "scnet_unofficial",
    "scnet",
    "scnet_tran",
    "apollo",
    "experimental_mdx23c_stht",
    "scnet_masked",
    "conformer",
    "moises_light",
})


def unsafe_name_reason(name: str) -> str | None:
    """Why MSST would mistreat a model type of this name, or None when the name is safe.

    MSST's `parse_args_train` replaces the user's losses with `<model_type>_loss` (a loss the
    model computes itself from `model(x, y)`) whenever the name contains "roformer" or is
    "mel_band_conformer"; a plugin model under such a name would silently train wrongly.
    """
    if "roformer" in name:
        return "MSST switches any model type containing 'roformer' to a model-internal loss"
    if not name.isidentifier() or name != name.lower():
        return "a model type must be a lower-case Python identifier (MSST puts it in file names)"
    return None
