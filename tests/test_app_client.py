"""The web app through its API, as a script would use it: gradio_client and plain HTTP on 127.0.0.1.

The real app runs as a subprocess (`python -m bsmamba2_plugin.app`) on a tiny two-stem model.
"""
from __future__ import annotations

import json
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import app_server

pytest.importorskip("gradio")
gradio_client = pytest.importorskip("gradio_client")
httpx = pytest.importorskip("httpx")

TINY = "tiny.yaml (command line)"
TINY_CKPT = "tiny.ckpt (command line)"
ALL_STEMS = ["vocals", "other", "instrumental"]
pytestmark = pytest.mark.slow  # one app process for the module: about 30 s on 2 cores


def arguments(config=TINY, checkpoint=TINY_CKPT, stems=ALL_STEMS, output_format="WAV, 32-bit float", tta=False,
              overlap=0, precision="auto"):
    # files, config, checkpoint, stems, TTA, overlap (0: config), precision, device, output format, downmix
    return [config, checkpoint, stems, tta, overlap, precision, "cpu", output_format, False]


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    folder = tmp_path_factory.mktemp("app")
    config, checkpoint = app_server.write_tiny_model(folder)
    process = app_server.AppProcess(folder / "work", "--config_path", str(config), "--start_check_point",
                                    str(checkpoint), "--keep_minutes", "30")
    process.config, process.checkpoint, process.folder = config, checkpoint, folder
    yield process
    process.stop()


@pytest.fixture(autouse=True)
def client_scratch_in_tmp_path(tmp_path, monkeypatch):
    """gradio_client downloads each file through a new folder under tempfile.gettempdir() and leaves the
    folder behind, empty: keep those in the test's own folder rather than in /tmp."""
    scratch = tmp_path / "gradio_client_scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))


def client(app, tmp_path: Path, name: str):
    return gradio_client.Client(app.url, download_files=str(tmp_path / name), verbose=False)


def test_round_trip_gives_the_separators_stems_and_a_zip(app, tmp_path):
    clip = app_server.write_clip(tmp_path / "song.wav", seconds=2.0)
    expected = app_server.expected_stems(app.config, app.checkpoint, clip, tmp_path / "expected")
    first = client(app, tmp_path, "first")
    status, archive, every = first.predict([gradio_client.handle_file(str(clip))], *arguments(),
                                           api_name="/separate")
    assert "**song.wav**: separated into vocals, other, instrumental" in status
    assert "Separated 1 of 1 file(s)." in status
    by_name = {Path(path).name: Path(path) for path in every}
    assert sorted(by_name) == sorted(["song_vocals.wav", "song_other.wav", "song_instrumental.wav",
                                      "bsmamba2_stems.zip"])
    for stem in ALL_STEMS:
        got, rate = sf.read(by_name[f"song_{stem}.wav"], dtype="float32", always_2d=True)
        assert rate == 11025
        np.testing.assert_array_equal(got, expected[stem])
    with zipfile.ZipFile(archive) as z:
        assert sorted(z.namelist()) == sorted(f"01_song/song_{stem}.wav" for stem in ALL_STEMS)
        assert z.read("01_song/song_vocals.wav") == by_name["song_vocals.wav"].read_bytes()

    # a second user (another client, another session) gets its own folder and sees none of the first's
    other_clip = app_server.write_clip(tmp_path / "other.wav", seconds=1.0, seed=3)
    second = client(app, tmp_path, "second")
    status2, _, every2 = second.predict([gradio_client.handle_file(str(other_clip))], *arguments(stems=["vocals"]),
                                        api_name="/separate")
    assert "song" not in status2 and [Path(p).name for p in every2] == ["other_vocals.wav", "bsmamba2_stems.zip"]
    requests = sorted((app.work_dir / "requests").iterdir())
    assert len(requests) >= 2
    owners = {request: {p.name for p in request.rglob("*.wav")} for request in requests}
    assert not any("song_vocals.wav" in names and "other_vocals.wav" in names for names in owners.values())


def test_tta_overlap_and_precision_from_the_api(app, tmp_path):
    from bsmamba2_plugin.separate import Separator

    clip = app_server.write_clip(tmp_path / "tta.wav", seconds=1.5)
    expected = Separator(app.config, app.checkpoint, device="cpu", precision="fp32").separate_file(
        clip, tmp_path / "expected", filename_template="{instr}", use_tta=True, num_overlap=4)
    status, _, every = client(app, tmp_path, "tta").predict(
        [gradio_client.handle_file(str(clip))], *arguments(stems=["vocals"], tta=True, overlap=4, precision="fp32"),
        api_name="/separate")
    assert "precision fp32, TTA, overlap 4." in status
    np.testing.assert_array_equal(sf.read(every[0], dtype="float32")[0],
                                  sf.read(expected["vocals"], dtype="float32")[0])

def test_two_users_at_once_queue_and_both_get_their_own_result(app, tmp_path):
    wav = app_server.write_clip(tmp_path / "first.wav", seconds=4.0, seed=5)
    flac = tmp_path / "second.flac"
    data, rate = sf.read(app_server.write_clip(tmp_path / "second.wav", seconds=3.0, rate=22050, seed=6))
    sf.write(flac, data, rate, subtype="PCM_24")
    jobs = [client(app, tmp_path, "one").submit([gradio_client.handle_file(str(wav))], *arguments(stems=["vocals"]),
                                                api_name="/separate"),
            client(app, tmp_path, "two").submit([gradio_client.handle_file(str(flac))],
                                                *arguments(stems=["vocals"], output_format="FLAC, 16-bit"),
                                                api_name="/separate")]
    (status1, _, every1), (status2, _, every2) = [job.result(timeout=120) for job in jobs]
    assert "**first.wav**: separated" in status1 and "**second.flac**: separated" in status2
    assert Path(every1[0]).name == "first_vocals.wav" and Path(every2[0]).name == "second_vocals.flac"
    info = sf.info(every2[0])
    assert (info.format, info.subtype, info.samplerate, info.frames) == ("FLAC", "PCM_16", 22050, len(data))


def test_progress_moves_with_the_work(app, tmp_path):
    clip = app_server.write_clip(tmp_path / "long.wav", seconds=12.0)
    job = client(app, tmp_path, "progress").submit([gradio_client.handle_file(str(clip))], *arguments(),
                                                    api_name="/separate")
    fractions = []
    while not job.done():
        status = job.status()
        for unit in status.progress_data or []:
            if unit.unit == "samples" and unit.index is not None and unit.length:
                fractions.append(unit.index / unit.length)
        time.sleep(0.05)
    assert "Separated 1 of 1 file(s)." in job.result()[0]
    distinct = sorted(set(fractions))
    assert len([f for f in distinct if f < 1]) >= 2, f"progress seen: {distinct}"  # a bar, not a spinner


def test_bad_model_and_broken_files_are_messages_and_the_app_keeps_serving(app, tmp_path):
    c = client(app, tmp_path, "bad")
    clip = gradio_client.handle_file(str(app_server.write_clip(tmp_path / "ok.wav", seconds=1.0)))
    status, archive, every = c.predict([clip], *arguments(config="bsmamba2_vocals_small.yaml (shipped)"),
                                       api_name="/separate")
    assert status.startswith("**Model error**") and "tiny.ckpt" in status and archive is None and every == []
    broken = gradio_client.handle_file(str(app_server.write_broken(tmp_path / "broken.wav")))
    status, _, every = c.predict([broken, clip], *arguments(stems=["vocals"]), api_name="/separate")
    assert "**broken.wav**: failed:" in status and "cannot decode audio" in status
    assert "Separated 1 of 2 file(s)." in status and [Path(p).name for p in every][0] == "ok_vocals.wav"
    assert str(app.work_dir) not in status


def test_only_its_own_outputs_are_served(app, tmp_path):
    clip = app_server.write_clip(tmp_path / "served.wav", seconds=1.0)
    client(app, tmp_path, "served").predict([gradio_client.handle_file(str(clip))], *arguments(stems=["vocals"]),
                                            api_name="/separate")
    output = next(app.work_dir.rglob("served_vocals.wav"))
    base = f"{app.url}gradio_api/file="
    with httpx.Client(timeout=30) as http:
        assert http.get(base + str(output)).content == output.read_bytes()
        for path in ["/etc/passwd", str(app.checkpoint), str(app.config), str(app.work_dir / "requests"),
                     str(output.parent / ".." / ".." / ".." / ".." / app.checkpoint.name), str(app.log_path),
                     "tiny.ckpt", "../tiny.ckpt", str(Path(app_server.__file__).resolve())]:
            assert http.get(base + path).status_code in (403, 404), path
        assert http.get(f"{app.url}monitoring").status_code in (403, 404)  # no dashboard of all traffic


def test_uploaded_names_do_not_decide_paths(app, tmp_path):
    audio = (tmp_path / "x.wav")
    app_server.write_clip(audio, seconds=0.5)
    with httpx.Client(base_url=app.url, timeout=60) as http:
        for name in ["", "n" * 300 + ".wav", "../../x.wav", "/tmp/abs.wav", "n" * 240 + ".wav"]:
            try:
                response = http.post("gradio_api/upload", files=[("files", (name, audio.read_bytes(), "audio/wav"))])
            except httpx.TransportError:
                response = None
            if name == "" or len(name) > 255:
                # Gradio's upload refuses both before the app sees them: a part without a file name is a
                # form field to multipart, and no file system stores a 300-byte name (it drops the
                # connection). The app's own handling of such names is in test_app.py.
                assert response is None or response.status_code >= 400
                continue
            assert response.status_code == 200, response.text
            [uploaded] = response.json()
            assert Path(uploaded).resolve().is_relative_to(app.work_dir.resolve())
            file_data = {"path": uploaded, "meta": {"_type": "gradio.FileData"}, "orig_name": name}
            call = http.post("gradio_api/call/separate", json={"data": [[file_data], *arguments(stems=["vocals"])]})
            event_id = call.json()["event_id"]
            stream = http.get(f"gradio_api/call/separate/{event_id}").text
            payload = json.loads(stream.split("event: complete\ndata: ", 1)[1].splitlines()[0])
            status, _, every = payload[:3]  # (the page state follows)
            assert "Separated 1 of 1 file(s)." in status, status
            for item in every:
                path = Path(item["path"]).resolve()
                assert path.is_relative_to((app.work_dir / "requests").resolve()) and len(path.name) < 120
    assert not (app.work_dir.parent / "x_vocals.wav").exists() and not Path("/tmp/abs_vocals.wav").exists()
