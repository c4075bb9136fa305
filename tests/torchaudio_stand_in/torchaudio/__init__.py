"""TEST-ONLY STAND-IN for torchaudio: importable, never usable.

Why: the `msst` package imports `torchaudio.transforms` at import time (msst/utils/losses.py,
and through torch_log_wmse), but PyPI has no torchaudio that loads with the CPU torch 2.13
of this project's test environment. The code paths the tests run (MSST's default
masked_loss and the sdr metric) never call torchaudio, so the tests put this folder on
PYTHONPATH of the MSST subprocesses only. Every class here raises when instantiated, so a
test that reached real torchaudio code would fail loudly instead of passing with a fake.
"""
__version__ = "0.0.0+test-stand-in"
IS_TEST_STAND_IN = True
