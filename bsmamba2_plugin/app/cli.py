"""``python -m bsmamba2_plugin.app``: the web page for separating files (Gradio, extra ``[app]``)."""
from __future__ import annotations

import argparse
import atexit
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path

MISSING_EXTRA = "the web app needs the [app] extra: pip install 'bsmamba2-plugin[app]' (gradio, gradio_client)"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bsmamba2_plugin.app",
        description="Web page for separating audio files with BSMamba2. With no arguments it offers the "
                    "shipped configs and the checkpoints of `python -m bsmamba2_plugin.train` "
                    "(results/bsmamba2_demo/).",
    )
    p.add_argument("--config_path", help="an MSST YAML config to offer first")
    p.add_argument("--start_check_point", help="a checkpoint to offer first (any MSST, plain or Lightning layout)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0 opens it to the network)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    p.add_argument("--share", action="store_true", help="also open a public gradio.live link (Gradio's tunnel)")
    p.add_argument("--device", default="auto", help="device selected in the page at start (auto, cpu, cuda:N)")
    p.add_argument("--work_dir", help="working folder for uploads and outputs (default: a new temporary folder, "
                                      "removed at exit)")
    p.add_argument("--keep_minutes", type=float, default=60.0,
                   help="remove each request's uploads and outputs this long after it finished (default 60)")
    p.add_argument("--concurrency", type=int, default=1,
                   help="requests separated at the same time; others wait in the queue (default 1)")
    p.add_argument("--max_file_size", default="4gb", help="largest upload, e.g. 500mb or 4gb (default 4gb)")
    p.add_argument("--demo_results", default=None,
                   help="where to look for the main command's checkpoints (default results/bsmamba2_demo)")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.keep_minutes <= 0:
        parser.error(f"--keep_minutes must be positive, got {args.keep_minutes}")
    if args.concurrency < 1:
        parser.error(f"--concurrency must be at least 1, got {args.concurrency}")
    if args.work_dir:
        work_dir = Path(args.work_dir).resolve()
        work_dir.mkdir(parents=True, exist_ok=True)
    else:
        work_dir = Path(tempfile.mkdtemp(prefix="bsmamba2-app-")).resolve()
        atexit.register(shutil.rmtree, work_dir, True)
        # SIGTERM (service managers, `kill`) ends the process through sys.exit, so the folder goes too
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    # Before Gradio starts: its uploads and served files live in the app's working folder.
    os.environ["GRADIO_TEMP_DIR"] = str(work_dir)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    os.environ.pop("GRADIO_VIBE_MODE", None)  # a page that edits the app's code has no place on a shared tool
    try:
        import gradio  # noqa: F401
    except ImportError:
        print(f"error: {MISSING_EXTRA}", file=sys.stderr)
        return 2

    from bsmamba2_plugin.app.models import DEMO_RESULTS, find_model_choices
    from bsmamba2_plugin.app.ui import build_app, launch
    from bsmamba2_plugin.app.workspace import Workspace

    try:
        choices = find_model_choices(args.config_path, args.start_check_point,
                                     Path(args.demo_results) if args.demo_results else DEMO_RESULTS)
    except FileNotFoundError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    workspace = Workspace(work_dir, keep_seconds=args.keep_minutes * 60)
    workspace.sweep()  # a reused --work_dir: drop what expired while the app was not running
    workspace.start_sweeping()
    if choices.notice:
        print(choices.notice, file=sys.stderr)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: listening on {args.host}: other machines can reach this page", file=sys.stderr)
    print(f"Working folder: {work_dir} (requests removed {args.keep_minutes:g} min after they finish)",
          file=sys.stderr)
    launch(build_app(choices, workspace, default_device=args.device), args.host, args.port, args.share,
           args.concurrency, args.max_file_size)
    return 0
