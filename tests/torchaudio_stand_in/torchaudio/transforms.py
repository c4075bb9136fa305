"""TEST-ONLY STAND-IN (see __init__.py): the names MSST and its loss packages import, all unusable."""


class _Unavailable:
    def __init__(self, *args, **kwargs):
        raise RuntimeError(
            f"torchaudio.transforms.{type(self).__name__} was called, but this is the test-only torchaudio "
            "stand-in of bsmamba2-plugin's tests (no real torchaudio loads with torch 2.13); the code path "
            "under test must not need torchaudio"
        )


class AmplitudeToDB(_Unavailable):
    pass


class Resample(_Unavailable):
    pass


class Spectrogram(_Unavailable):
    pass


class MelSpectrogram(_Unavailable):
    pass
