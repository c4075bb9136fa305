"""The web app's parts without a server: names and folders, removal, model choices, analysis, jobs."""
from __future__ import annotations

import math
import os
import time
import zipfile

import numpy as np
import pytest
import soundfile as sf
import torch

import app_server
from bsmamba2_plugin.app import analysis
from bsmamba2_plugin.app.jobs import OUTPUT_FORMATS, separate_uploads, status_markdown, zip_stems
from bsmamba2_plugin.app.models import (
    HOW_TO_GET_A_CHECKPOINT,
    RANDOM_WEIGHTS,
    SeparatorCache,
    engine_options,
    find_model_choices,
)
from bsmamba2_plugin.app.workspace import MAX_NAME_CHARS, REQUESTS, Workspace, inside, safe_extension, safe_name
from bsmamba2_plugin.metrics import silent_fraction, silent_leakage
from bsmamba2_plugin.separate import Separator

NASTY_NAMES = ["../../x.wav", "/etc/passwd", "", "..", ".hidden.wav", "a/b\\..\\c.WAV", "x" * 300 + ".flac",
               "C:\\Windows\\win.ini", "song.\x00wav", "名前 (live).mp3", "....wav", "  .  "]


@pytest.fixture(autouse=True)
def one_thread():
    torch.set_num_threads(1)


@pytest.mark.parametrize("name", NASTY_NAMES)
def test_uploaded_names_never_make_folders(name, tmp_path):
    stem = safe_name(name)
    assert stem and "/" not in stem and "\\" not in stem and not stem.startswith(".")
    assert len(stem) <= MAX_NAME_CHARS and "\x00" not in stem
    assert (tmp_path / (stem + safe_extension(name))).resolve().parent == tmp_path.resolve()


def test_safe_names_keep_what_is_harmless():
    assert safe_name("../../x.wav") == "x" and safe_extension("../../x.wav") == ".wav"
    assert safe_name("/etc/passwd") == "passwd" and safe_extension("/etc/passwd") == ""
    assert safe_name("") == "audio" and safe_name("..") == "audio"
    assert safe_name("名前 (live).mp3") == "名前 _live" and safe_extension("Song.FLAC") == ".flac"
    assert safe_extension("a.tar.verylongextension") == ""


def test_uploads_with_any_name_stay_in_the_request_folder(tmp_path):
    config, checkpoint = app_server.write_tiny_model(tmp_path)
    separator = Separator(config, checkpoint, device="cpu")
    workspace = Workspace(tmp_path / "work", keep_seconds=60)
    folder = workspace.new_request()
    uploads = []
    for k, name in enumerate(["../../x.wav", "/etc/passwd", "", "y" * 300 + ".wav"]):
        upload = tmp_path / "work" / f"{k:064x}" / "upload.wav"  # where Gradio keeps an upload
        upload.parent.mkdir()
        uploads.append((app_server.write_clip(upload, seconds=0.5, seed=k), name))
    results = separate_uploads(separator, uploads, folder, workspace, stems=["vocals"])
    assert [r.error for r in results] == [None] * 4
    assert [r.name for r in results] == ["x.wav", "passwd", "audio", "y" * MAX_NAME_CHARS + ".wav"]
    for r in results:
        for path in [*r.stems.values(), r.spectrogram]:
            assert inside(path, folder) and path.is_file()
    assert not (tmp_path / "x_vocals.wav").exists() and not list(tmp_path.parent.glob("x_vocals*"))
    assert sorted(p.name for p in (folder / "01").iterdir()) == ["x_spectrogram.png", "x_vocals.wav"]


def test_sweep_removes_old_requests_and_uploads_only(tmp_path):
    workspace = Workspace(tmp_path, keep_seconds=60)
    old, recent, running = workspace.new_request(), workspace.new_request(), workspace.new_request()
    workspace.finish(old)
    workspace.finish(recent)
    upload = tmp_path / ("ab" * 32)
    upload.mkdir()
    gradio_own = tmp_path / "vibe_edit_history"
    gradio_own.mkdir()
    long_ago = time.time() - 3600
    for path in (old, running, upload, gradio_own):
        os.utime(path, (long_ago, long_ago))
    removed = workspace.sweep()
    assert sorted(removed) == sorted([old, upload])
    assert recent.is_dir() and running.is_dir() and gradio_own.is_dir()
    workspace.finish(running)  # done now: its age counts from now
    assert workspace.sweep() == []
    assert sorted(workspace.sweep(now=time.time() + 61)) == sorted([recent, running])
    assert list((tmp_path / REQUESTS).iterdir()) == []
    with pytest.raises(ValueError, match="keep time"):
        Workspace(tmp_path, keep_seconds=0)


def test_the_sweeper_thread_removes_finished_requests_after_the_keep_time(tmp_path):
    workspace = Workspace(tmp_path, keep_seconds=0.3)
    done, running = workspace.new_request(), workspace.new_request()
    workspace.finish(done)
    workspace.start_sweeping(interval=0.05)
    try:
        deadline = time.time() + 10
        while done.exists() and time.time() < deadline:
            time.sleep(0.05)
        assert not done.exists() and running.is_dir()  # a running request is never removed
    finally:
        workspace.stop()


def test_model_choices_without_arguments(tmp_path):
    choices = find_model_choices(demo_results=tmp_path / "results" / "bsmamba2_demo")
    assert [label.split(" ")[0] for label in choices.configs] == [
        "bsmamba2_vocals_small.yaml", "bsmamba2_vocals_paper.yaml", "bsmamba2_4stems.yaml"]
    assert all(path.is_file() for path in choices.configs.values())
    assert list(choices.checkpoints) == [RANDOM_WEIGHTS] and choices.checkpoints[RANDOM_WEIGHTS] is None
    assert "python -m bsmamba2_plugin.train" in choices.notice
    assert choices.notice == HOW_TO_GET_A_CHECKPOINT.format(folder=tmp_path / "results" / "bsmamba2_demo")


def test_model_choices_offer_the_demo_checkpoints_best_first(tmp_path):
    demo = tmp_path / "bsmamba2_demo"
    demo.mkdir()
    for name in ("last_bsmamba2.ckpt", "model_bsmamba2_ep_0_sdr_1.2740.ckpt", "model_bsmamba2_ep_1_sdr_5.4232.ckpt"):
        (demo / name).write_bytes(b"")
    choices = find_model_choices(demo_results=demo)
    assert [path.name if path else None for path in choices.checkpoints.values()] == [
        "model_bsmamba2_ep_1_sdr_5.4232.ckpt", "model_bsmamba2_ep_0_sdr_1.2740.ckpt", "last_bsmamba2.ckpt", None]
    assert choices.default_checkpoint.startswith("model_bsmamba2_ep_1") and choices.notice == ""
    assert choices.default_config == "bsmamba2_vocals_small.yaml (shipped)"


def test_model_choices_from_the_command_line(tmp_path):
    config, checkpoint = app_server.write_tiny_model(tmp_path)
    choices = find_model_choices(str(config), str(checkpoint), demo_results=tmp_path / "none")
    assert choices.default_config == "tiny.yaml (command line)"
    assert choices.checkpoints[choices.default_checkpoint] == checkpoint.resolve()
    with pytest.raises(FileNotFoundError, match="--start_check_point"):
        find_model_choices(str(config), str(tmp_path / "missing.ckpt"))


def test_engine_options_pass_only_what_differs_from_the_defaults():
    assert engine_options("auto", False, None) == ({}, {})
    assert engine_options("bf16", True, 4) == ({"precision": "bf16"}, {"use_tta": True, "num_overlap": 4})


def test_tta_overlap_and_precision_reach_the_separator(tmp_path):
    config, checkpoint = app_server.write_tiny_model(tmp_path)
    clip = app_server.write_clip(tmp_path / "clip.wav", seconds=1.0)
    constructor, per_call = engine_options("fp32", True, 4)
    separator = SeparatorCache().get(config, checkpoint, "cpu", constructor)
    assert separator.precision.name == "fp32"
    expected = Separator(config, checkpoint, device="cpu", precision="fp32").separate_file(
        clip, tmp_path / "expected", filename_template="{instr}", use_tta=True, num_overlap=4)
    plain = Separator(config, checkpoint, device="cpu").separate_file(clip, tmp_path / "plain",
                                                                      filename_template="{instr}")
    workspace = Workspace(tmp_path / "work", keep_seconds=60)
    [result] = separate_uploads(separator, [(clip, "clip.wav")], workspace.new_request(), workspace,
                                stems=["vocals"], per_call=per_call)
    got = sf.read(result.stems["vocals"], dtype="float32")[0]
    np.testing.assert_array_equal(got, sf.read(expected["vocals"], dtype="float32")[0])
    assert not np.array_equal(got, sf.read(plain["vocals"], dtype="float32")[0])  # the options changed something


def test_levels_block_by_block_equal_the_metrics_on_whole_signals(tmp_path, monkeypatch):
    rate = 1000
    rng = np.random.default_rng(1)
    vocals = 0.3 * rng.standard_normal((2, 7500)).astype(np.float32)
    vocals[:, 2000:4000] = 0  # silent frames 2 and 3
    vocals[:, 6000:] *= 1e-4  # quiet (-90 dBFS): silent by the -60 dBFS rule
    other = 0.1 * rng.standard_normal((2, 7500)).astype(np.float32)
    paths = {}
    for name, data in (("vocals", vocals), ("other", other)):
        paths[name] = tmp_path / f"{name}.wav"
        sf.write(paths[name], data.T, rate, subtype="FLOAT")
    monkeypatch.setattr(analysis, "READ_BLOCK", 2 * rate)  # several blocks, whole 1 s frames in each
    report = analysis.stem_levels(paths, "vocals", tmp_path)
    assert report.reference == "vocals"
    assert report.silent_fraction == pytest.approx(silent_fraction(vocals, rate))
    by_stem = {s.stem: s for s in report.stems}
    for name, data in (("vocals", vocals), ("other", other)):
        assert by_stem[name].level_where_reference_silent_db == pytest.approx(
            silent_leakage(vocals, data, rate), abs=1e-4)
        assert by_stem[name].overall_level_db == pytest.approx(10 * math.log10(np.mean(data.astype(np.float64) ** 2)))
    text = analysis.levels_markdown(report)
    assert "| other |" in text and "dBFS" in text


def test_spectrogram_finds_the_tone_and_does_not_depend_on_the_block_size(tmp_path, monkeypatch):
    rate = 8000
    t = np.arange(rate * 4) / rate
    tone = (0.5 * np.sin(2 * np.pi * 1000 * t) * (t >= 2)).astype(np.float32)  # tone in the second half only
    path = tmp_path / "tone.wav"
    sf.write(path, np.stack([tone, tone]).T, rate, subtype="FLOAT")
    power, seconds, got_rate = analysis.spectrogram_columns(path, tmp_path, columns=8)
    assert seconds == 4.0 and got_rate == rate and power.shape == (1025, 8)
    peak_bin = round(1000 / (rate / 2048))
    assert np.all(np.argmax(power[:, 5:], axis=0) == peak_bin)
    assert np.all(power[peak_bin, :3] <= analysis.FLOOR_DB + 1) and np.all(power[peak_bin, 5:] > 40)
    monkeypatch.setattr(analysis, "READ_BLOCK", 3000)
    again, _, _ = analysis.spectrogram_columns(path, tmp_path, columns=8)
    np.testing.assert_allclose(again, power, atol=1e-6)
    png = analysis.spectrogram_png([("mixture", path), ("tone", path)], tmp_path / "s.png", tmp_path)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_request_output_equals_the_separator_and_a_broken_file_is_reported(tmp_path):
    config, checkpoint = app_server.write_tiny_model(tmp_path)
    clip = app_server.write_clip(tmp_path / "clip.wav")
    broken = app_server.write_broken(tmp_path / "broken.wav")
    expected = app_server.expected_stems(config, checkpoint, clip, tmp_path / "expected")
    separator = Separator(config, checkpoint, device="cpu")
    workspace = Workspace(tmp_path / "work", keep_seconds=60)
    folder = workspace.new_request()
    seen = []
    results = separate_uploads(
        separator, [(broken, "broken.wav"), (clip, "clip.wav")], folder, workspace,
        stems=["vocals", "instrumental"], output_format=OUTPUT_FORMATS["WAV, 32-bit float"],
        progress_for=lambda index, name: lambda done, total: seen.append((index, done, total)))
    assert "broken.wav" in results[0].error and "cannot decode audio" in results[0].error
    assert str(tmp_path) not in results[0].error  # the server's folders are not shown
    assert results[1].error is None and list(results[1].stems) == ["vocals", "instrumental"]
    for name, path in results[1].stems.items():
        np.testing.assert_array_equal(sf.read(path, dtype="float32", always_2d=True)[0], expected[name])
    assert not list(folder.rglob("*other*")) and not list(folder.rglob("input-*"))
    assert clip.is_file()  # the upload itself is left to the sweeper
    totals = {total for index, _, total in seen if index == 1}
    assert len(totals) == 1 and seen[-1][1] == seen[-1][2]  # moves to the end of the file
    archive = zip_stems(results, folder)
    with zipfile.ZipFile(archive) as z:
        assert sorted(z.namelist()) == ["02_clip/clip_instrumental.wav", "02_clip/clip_vocals.wav"]
        assert z.read("02_clip/clip_vocals.wav") == results[1].stems["vocals"].read_bytes()
    status = status_markdown(results)
    assert "Separated 1 of 2 file(s)." in status and "**broken.wav**: failed" in status
    with pytest.raises(ValueError, match="not offered"):
        separate_uploads(separator, [(clip, "clip.wav")], folder, workspace, stems=["drums"])


def test_too_many_channels_and_empty_files_get_a_message(tmp_path):
    config, checkpoint = app_server.write_tiny_model(tmp_path)
    separator = Separator(config, checkpoint, device="cpu")
    workspace = Workspace(tmp_path / "work", keep_seconds=60)
    six = tmp_path / "six.wav"
    sf.write(six, np.zeros((4000, 6), dtype=np.float32) + 0.1, 8000)
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros((0, 2), dtype=np.float32), 8000)
    results = separate_uploads(separator, [(six, "six.wav"), (empty, "empty.wav")], workspace.new_request(),
                               workspace)
    assert "6 channels" in results[0].error and "Downmix to mono" in results[0].error
    assert "holds no audio samples" in results[1].error
    downmixed = separate_uploads(separator, [(six, "six.wav")], workspace.new_request(), workspace, downmix=True)
    assert downmixed[0].error is None and sf.info(downmixed[0].stems["vocals"]).channels == 1


def test_command_without_gradio_names_the_extra(monkeypatch, capsys, tmp_path):
    import sys

    from bsmamba2_plugin.app import cli

    monkeypatch.setitem(sys.modules, "gradio", None)  # import gradio -> ImportError
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path))  # restored after the test
    assert cli.main(["--work_dir", str(tmp_path / "work")]) == 2
    assert "pip install 'bsmamba2-plugin[app]'" in capsys.readouterr().err
