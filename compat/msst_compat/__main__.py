"""`python -m msst_compat SCRIPT [ARGS...]`: run an MSST script with plugin model types enabled.

For one run, without relying on the installed .pth (for example where .pth files are not
processed, or with MSST_COMPAT_DISABLE set globally). The script runs as `python SCRIPT ARGS`
would: as __main__, with its folder first on sys.path and sys.argv = [SCRIPT, ARGS...].
Processes the script starts itself (DDP workers, the wx GUI's train.py) get the hook only
through the installed .pth.
"""
from __future__ import annotations

import os
import runpy
import sys

USAGE = "usage: python -m msst_compat SCRIPT.py [ARGS...]   (for example: train.py --model_type bsmamba2 ...)"


def main(argv: list[str]) -> None:
    if not argv or argv[0] in {"-h", "--help"}:
        print(USAGE)
        raise SystemExit(0 if argv else 2)
    script = argv[0]
    if not os.path.isfile(script):
        raise SystemExit(f"msst_compat: script {script!r} not found (run from the MSST checkout, e.g. train.py)\n{USAGE}")
    from msst_compat import install

    install()
    sys.argv = [script, *argv[1:]]
    sys.path[0] = os.path.dirname(os.path.abspath(script))
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main(sys.argv[1:])
