"""`msst-models`: print every model type MSST can build here and where each comes from."""
from __future__ import annotations

import argparse
import sys
from typing import TextIO

from .builtin_types import MSST_BUILTIN_MODEL_TYPES
from .discovery import DISABLE_ENV_VAR, ENTRY_POINT_GROUP, discover_entries, plugins_disabled
from .errors import RegistryError
from .loading import load_builder


def print_listing(out: TextIO, check: bool = False, builtins: bool = True) -> int:
    """Write the listing; with `check`, import each usable plugin and report failures. Returns an exit code."""
    status = 0
    entries = discover_entries()
    if plugins_disabled():
        out.write(f"plugin loading is disabled ({DISABLE_ENV_VAR} is set); "
                  f"{len(entries)} registered plugin type(s) ignored\n")
    else:
        out.write(f"plugin model types (entry-point group {ENTRY_POINT_GROUP!r}):\n")
        if not entries:
            out.write("  (none installed)\n")
        for entry in entries:
            line = f"  {entry.name:<24} {entry.distribution} {entry.version}  ->  {entry.target}"
            if not entry.usable:
                line += f"\n  {'':<24} NOT USED: {entry.problem}"
                status = 1
            elif check:
                try:
                    load_builder(entry.name)
                    line += "  [imports ok]"
                except RegistryError as error:
                    line += f"\n  {'':<24} BROKEN: {error}"
                    status = 1
            out.write(line + "\n")
    if builtins:
        out.write("MSST built-in model types (utils/settings.py get_model_from_config):\n")
        out.write("  " + ", ".join(sorted(MSST_BUILTIN_MODEL_TYPES)) + "\n")
    return status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="msst-models",
        description="List the model types MSST can build: plugins registered in the 'msst.models' "
                    "entry-point group and MSST's built-ins. Imports no plugin unless --check is given.",
    )
    parser.add_argument("--check", action="store_true",
                        help="import every plugin and report those that fail (name, distribution, version, error)")
    parser.add_argument("--plugins-only", action="store_true", help="leave out MSST's built-in names")
    args = parser.parse_args(argv)
    return print_listing(sys.stdout, check=args.check, builtins=not args.plugins_only)
