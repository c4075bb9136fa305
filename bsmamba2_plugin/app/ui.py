"""The Gradio page: upload, options, per-file progress, players, downloads, spectrograms, levels.

Gradio serves files only from its upload/cache folder (``GRADIO_TEMP_DIR``, set to the app's working
folder by ``cli.py``) and from ``allowed_paths``, which this app leaves empty: the page can reach
its own request folders (by their random names) and nothing else on the machine.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import gradio as gr

from bsmamba2_plugin.app.jobs import (
    OUTPUT_FORMATS,
    separate_uploads,
    status_markdown,
    stem_choices,
    zip_stems,
)
from bsmamba2_plugin.app.models import (
    ModelChoices,
    SeparatorCache,
    device_choices,
    engine_options,
)
from bsmamba2_plugin.app.workspace import Workspace
from bsmamba2_plugin.settings import PRECISIONS

PROGRESS_INTERVAL = 0.25  # seconds between progress messages to the page


def config_stems(config_path: Path) -> list[str]:
    from bsmamba2_plugin.config import load_config
    from bsmamba2_plugin.separate import InferenceSettings

    return stem_choices(list(InferenceSettings.from_config(load_config(config_path)).instruments))


def build_app(choices: ModelChoices, workspace: Workspace, default_device: str = "auto") -> gr.Blocks:
    cache = SeparatorCache()
    devices = device_choices()
    if default_device not in devices:
        devices.append(default_device)

    def stems_and_info(config_label: str) -> tuple[list[str], str | None]:
        try:
            return config_stems(choices.configs[config_label]), None
        except Exception as error:  # noqa: BLE001 - a bad config is reported when separating
            return [], f"cannot read this config: {error}"

    def stems_for(config_label: str) -> Any:
        names, info = stems_and_info(config_label)
        return gr.update(choices=names, value=names, info=info)

    def separate(files: list[str] | None, config_label: str, checkpoint_label: str, stems: list[str],
                 use_tta: bool, overlap: float, precision: str, device: str, output_format: str,
                 downmix: bool, progress: gr.Progress = gr.Progress()) -> tuple[str, str | None, list[str], list]:
        """Separate the uploaded files; returns (status text, zip of all stems, every stem file, page state)."""
        uploads = [Path(f) for f in (files or [])]
        if not uploads:
            return "Upload one or more audio files first.", None, [], []
        if config_label not in choices.configs or checkpoint_label not in choices.checkpoints:
            return "Choose a config and a checkpoint from the lists.", None, [], []
        if output_format not in OUTPUT_FORMATS:
            return f"Unknown output format {output_format!r}; choose one of {', '.join(OUTPUT_FORMATS)}.", None, [], []
        checkpoint = choices.checkpoints[checkpoint_label]
        notice = "" if checkpoint is not None else (
            "**Random weights**: no checkpoint chosen, so the stems are not a separation. " + choices.notice)
        folder = workspace.new_request()
        try:
            constructor, per_call = engine_options(precision, bool(use_tta), int(overlap) or None)
            progress(0.0, desc="loading the model")
            try:
                separator = cache.get(choices.configs[config_label], checkpoint, device, constructor)
                separator.settings.with_options(**per_call)  # e.g. an overlap the chunk size cannot take
            except Exception as error:  # noqa: BLE001 - shown in the page; the app keeps serving
                return f"**Model error**: {error}", None, [], []
            last = [0.0]

            def progress_for(index: int, name: str):
                def report(done: int, total: int) -> None:
                    now = time.monotonic()
                    if now - last[0] >= PROGRESS_INTERVAL or done >= total:
                        last[0] = now
                        progress((done, total), desc=f"file {index + 1} of {len(uploads)}: {name}",
                                 unit="samples")
                return report

            def on_stage(index: int, name: str, stage: str) -> None:
                progress(1.0, desc=f"file {index + 1} of {len(uploads)}: {name}: {stage}")

            try:
                results = separate_uploads(
                    separator, [(path, path.name) for path in uploads], folder, workspace,
                    stems=list(stems or []), output_format=OUTPUT_FORMATS[output_format], downmix=bool(downmix),
                    per_call=per_call, progress_for=progress_for, on_stage=on_stage,
                )
            except ValueError as error:  # stems the model does not offer
                return f"**Error**: {error}", None, [], []
            used = (f"Model: {config_label}, {checkpoint_label}; device {separator.device}, precision "
                    f"{separator.precision.name}" + (", TTA" if use_tta else "")
                    + (f", overlap {int(overlap)}" if int(overlap) else ", the config's overlap") + ".")
            notice = f"{notice}\n\n{used}" if notice else used
            archive = zip_stems(results, folder)
            every = [str(p) for r in results for p in r.stems.values()]
            return (status_markdown(results, notice), str(archive) if archive else None,
                    every + ([str(archive)] if archive else []), [r.as_state() for r in results])
        finally:
            workspace.finish(folder)

    with gr.Blocks(title="BSMamba2 separation") as app:
        gr.Markdown("# BSMamba2 music source separation\nUpload songs (any format and sample rate); "
                    "the stems are written to a private folder on the server and removed after "
                    f"{workspace.keep_seconds / 60:.0f} minutes.")
        with gr.Row():
            with gr.Column(scale=3):
                files = gr.File(label="Audio files", file_count="multiple", type="filepath", elem_id="inputs")
            with gr.Column(scale=2):
                config = gr.Dropdown(list(choices.configs), value=choices.default_config, label="Config",
                                     elem_id="config")
                checkpoint = gr.Dropdown(list(choices.checkpoints), value=choices.default_checkpoint,
                                         label="Checkpoint", elem_id="checkpoint")
                if choices.notice:
                    gr.Markdown(choices.notice, elem_id="model-notice")
                names, info = stems_and_info(choices.default_config)
                stems = gr.CheckboxGroup(names, value=names, label="Stems", info=info, elem_id="stems")
        with gr.Accordion("Options", open=False):
            with gr.Row():
                use_tta = gr.Checkbox(False, label="TTA (also channels swapped and polarity inverted; 3x time)",
                                      elem_id="tta")
                overlap = gr.Slider(0, 8, value=0, step=1, label="Overlap (num_overlap; 0 = the config's value)",
                                    elem_id="overlap")
                precision = gr.Dropdown(list(PRECISIONS), value="auto", label="Precision",
                                        elem_id="precision")
            with gr.Row():
                device = gr.Dropdown(devices, value=default_device, label="Device", elem_id="device")
                output_format = gr.Dropdown(list(OUTPUT_FORMATS), value="WAV, 32-bit float",
                                            label="Output format", elem_id="format")
                downmix = gr.Checkbox(False, label="Downmix to mono (files with more than two channels)",
                                      elem_id="downmix")
        run = gr.Button("Separate", variant="primary", elem_id="separate")
        status = gr.Markdown(elem_id="status")
        with gr.Row():
            archive = gr.File(label="All stems (zip)", elem_id="zip")
            every = gr.File(label="Every stem", file_count="multiple", elem_id="all-stems")
        state = gr.State([])

        config.change(stems_for, config, stems, api_name=False, queue=False)
        run.click(separate, [files, config, checkpoint, stems, use_tta, overlap, precision, device, output_format,
                             downmix], [status, archive, every, state], api_name="separate")

        @gr.render(inputs=state)
        def show(results: list[dict]) -> None:
            for r in results:
                number = r["index"]
                gr.Markdown(f"## {number + 1}. {r['name']}")
                if r["error"]:
                    gr.Markdown(f"Failed: {r['error']}", elem_id=f"error-{number}")
                    continue
                for stem, path in r["stems"].items():
                    with gr.Row(equal_height=True):
                        gr.Audio(path, label=f"{stem} ({r['name']})", type="filepath", interactive=False,
                                 elem_id=f"player-{number}-{stem}", scale=3)
                        gr.File(path, label=f"{stem} download", elem_id=f"download-{number}-{stem}", scale=1)
                with gr.Row():
                    gr.Image(r["spectrogram"], label="spectrograms", show_label=False, type="filepath",
                             interactive=False, elem_id=f"spectrogram-{number}", scale=3)
                    with gr.Column(scale=2):
                        gr.Markdown(r["levels"], elem_id=f"levels-{number}")

    return app


def launch(app: gr.Blocks, host: str, port: int, share: bool, concurrency: int, max_file_size: str | None) -> None:
    """Serve until interrupted; requests beyond ``concurrency`` wait in Gradio's queue."""
    app.queue(default_concurrency_limit=concurrency)
    # No traffic dashboard (it spans every user), no run history kept in browsers, nothing served
    # beyond the working folder.
    app.launch(server_name=host, server_port=port, share=share, max_file_size=max_file_size,
               allowed_paths=[], ssr_mode=False, footer_links=["api"], enable_monitoring=False,
               run_history=False)
