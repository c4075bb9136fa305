"""ONNX export of the PyTorch path, run with the real onnxruntime against the PyTorch model."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install '.[onnx]')")
pytest.importorskip("onnxscript", reason="onnxscript (torch's ONNX exporter) is not installed (pip install '.[onnx]')")
import onnx  # noqa: E402  (installed with the two above)

from bsmamba2_plugin.model import BSMamba2  # noqa: E402
from bsmamba2_plugin.onnx_export import (  # noqa: E402
    INPUT_NAME, OUTPUT_NAME, OnnxChunkModel, OnnxSeparator, export_onnx, frames_for, main, session_options,
)

TINY = dict(dim=32, depth=1, stft_n_fft=256, stft_hop_length=64, stft_win_length=256,
            freqs_per_bands=(32, 32, 65), mask_estimator_depth=1)
# 99 frames: the time scan (chunks of 64 steps) runs two chunks and carries the state between them.
CHUNK = 6300


def relative_error(ours: torch.Tensor, reference: torch.Tensor) -> float:
    return ((ours - reference).abs().max() / reference.abs().max()).item()


def tiny_config(chunk: int = CHUNK, stems=("vocals", "other")):
    from ml_collections import ConfigDict

    return ConfigDict({"audio": {"chunk_size": chunk, "sample_rate": 44100},
                       "inference": {"num_overlap": 2, "batch_size": 2, "precision": "fp32"},
                       "training": {"instruments": list(stems), "target_instrument": None, "use_amp": True}})


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The tiny model exported with small blocks of sequences, as the paper model's are at 8 s: the band
    axis's 99 sequences (per batch item) in blocks of 9, the time axis's 3 in blocks of 1, each
    scanned over its two chunks."""
    from bsmamba2_plugin.model import ssd

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = BSMamba2(**TINY, num_stems=2).eval()
    path = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ssd, "GRAPH_BLOCK_BYTES", 9 * 4 * 2 * 16 * 16)  # nine band sequences: 2 heads, 16 x 16 decays
        assert export_onnx(model, path, chunk_samples=CHUNK, config=tiny_config()) == path
    return model, path


def test_onnxruntime_matches_pytorch_on_the_same_chunk(exported):
    model, path = exported
    separator = OnnxSeparator(path)
    assert separator.chunk_samples == CHUNK and separator.num_stems == 2 and separator.audio_channels == 2
    torch.manual_seed(1)
    for batch in (3, 1):  # the batch axis is dynamic; the export example had 2
        audio = torch.randn(batch, 2, CHUNK)
        with torch.no_grad():
            reference = model(audio)
        ours = separator.separate_chunk(audio)
        assert ours.shape == reference.shape == (batch, 2, 2, CHUNK)
        assert reference.abs().max() > 0.1  # a real output, not a silent one
        assert relative_error(ours, reference) < 1e-4


def test_sessions_take_denormals_as_zero(exported):
    """Strongly decaying heads make denormal floats in the scan, on which x86 CPUs run many times slower
    (README, ONNX): the package's sessions flush them."""
    options = OnnxChunkModel(exported[1]).session.get_session_options()
    assert options.get_session_config_entry("session.set_denormal_as_zero") == "1"


def test_chunk_model_takes_session_options_or_threads_not_both(exported):
    """The benchmarks profile a session made from the package's options; given threads as well, those
    would be ignored, which is an error naming both."""
    options = session_options()
    options.intra_op_num_threads = 1
    session = OnnxChunkModel(exported[1], options=options).session
    assert session.get_session_options().intra_op_num_threads == 1
    with pytest.raises(ValueError, match="pass threads or options, not both"):
        OnnxChunkModel(exported[1], threads=2, options=session_options())


def test_onnxruntime_profile_counts_the_products_flops(tmp_path: Path, benchmark_module, capsys):
    """benchmarks/onnx_profile.py reads onnxruntime's own profile: products (with FLOPs), convs, the rest.
    Here a real profile of known products: one with a constant weight (onnxruntime prepacks it and leaves
    it out of the profile's shapes) and one whose first operand is transposed (onnxruntime fuses the
    Transpose into the product); only the last run counts."""
    import numpy as np
    import onnxruntime
    from onnx import TensorProto, helper, numpy_helper

    profiles = benchmark_module("runtime_profiles")
    inputs = {"a": np.random.rand(3, 8, 16), "t": np.random.rand(4, 16, 6), "b": np.random.rand(4, 16, 7),
              "c": np.random.rand(2, 4, 50)}
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "w"], ["p"]),
         helper.make_node("Transpose", ["t"], ["t_rows"], perm=[0, 2, 1]),
         helper.make_node("MatMul", ["t_rows", "b"], ["q"]),
         helper.make_node("Conv", ["c", "k"], ["r"], group=4, pads=[3, 0])],
        "products", [helper.make_tensor_value_info(name, TensorProto.FLOAT, value.shape)
                     for name, value in inputs.items()],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in "pqr"],
        [numpy_helper.from_array(np.random.rand(16, 5).astype(np.float32), "w"),
         numpy_helper.from_array(np.random.rand(4, 1, 4).astype(np.float32), "k")])
    options = session_options()
    options.enable_profiling = True
    options.profile_file_prefix = str(tmp_path / "profile")
    session = onnxruntime.InferenceSession(helper.make_model(graph).SerializeToString(), options,
                                           providers=["CPUExecutionProvider"])
    feeds = {name: value.astype(np.float32) for name, value in inputs.items()}
    for _ in range(2):
        session.run(None, feeds)
    profile = profiles.onnxruntime_profile(session.end_profiling())
    assert profile.flops == 2 * (3 * 8 * 16 * 5 + 4 * 6 * 16 * 7)
    assert sum(calls for calls, _, _ in profile.shapes.values()) == 2
    assert profile.seconds["matrix products"] > 0 and profile.seconds["depthwise convs"] > 0
    assert sum(profile.seconds.values()) == pytest.approx(profile.wall)
    for text, problem in (("[]", "has no model_run event"), ('[{"cat":', "is not JSON")):  # cut short, or no run
        (tmp_path / "bad.json").write_text(text)
        with pytest.raises(ValueError, match=f"bad.json {problem}"):
            profiles.onnxruntime_profile(tmp_path / "bad.json")

    # The report on two made-up profiles: the same 300 GFLOP at 100 and at 150 GFLOP/s.
    slow, fast = profiles.Profile(wall=5.0), profiles.Profile(wall=4.0)
    slow.add("matrix products", 3.0, "A", 300e9)
    fast.add("matrix products", 2.0, "B", 300e9)
    timings = benchmark_module("timing").Timings({"slow": [5.0, 5.5], "fast": [4.0, 4.1]})
    profiles.report({"slow": slow.finish(), "fast": fast.finish()}, timings, top=2)
    printed = capsys.readouterr().out
    assert "median ratio 1.296, gap +1.20 s" in printed
    assert "would take 2.00 s instead of 3.00 s: +1.00 s of that gap is the GEMM kernels' speed" in printed


def test_torch_profile_counts_the_products_flops(benchmark_module):
    """The same for torch's profiler: mm, addmm, bmm, baddbmm and its in-place form, and the projections
    through oneDNN's linear (model/projection.py), each run twice."""
    import time

    import torch.nn.functional as F

    from bsmamba2_plugin.model.projection import project, using_cpu_gemm

    profiles = benchmark_module("runtime_profiles")
    a, b, x, y = torch.randn(8, 16), torch.randn(16, 5), torch.randn(3, 8, 16), torch.randn(3, 16, 5)
    into = torch.zeros(3, 8, 5)
    with (torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], record_shapes=True) as prof,
          using_cpu_gemm("onednn"), torch.inference_mode()):
        start = time.perf_counter()
        for _ in range(2):
            a @ b
            torch.addmm(torch.zeros(5), a, b)
            torch.bmm(x, y)
            torch.baddbmm(into, x, y)
            into.baddbmm_(x, y)
            project(x, b.t())  # (24 x 16) @ (16 x 5)
            F.conv1d(torch.randn(2, 4, 50), torch.randn(4, 1, 4), groups=4)
        wall = time.perf_counter() - start
    profile = profiles.torch_profile(prof.key_averages(group_by_input_shape=True), wall)
    assert profile.flops == 2 * 2 * (2 * 8 * 16 * 5 + 3 * 3 * 8 * 16 * 5 + 24 * 16 * 5)
    assert sum(calls for calls, _, _ in profile.shapes.values()) == 12
    assert profile.seconds["depthwise convs"] > 0


def graph_constant(name: str, graphs: list) -> float | None:
    """The value of a scalar the graph computes from constants alone (through Cast/CastLike), looked up
    from the innermost graph out; None where it is not one."""
    from onnx import numpy_helper

    for graph in reversed(graphs):
        for initializer in graph.initializer:
            if initializer.name == name:
                return float(numpy_helper.to_array(initializer).reshape(-1)[0])
        for node in graph.node:
            if name in node.output:
                if node.op_type == "Constant":
                    return float(numpy_helper.to_array(node.attribute[0].t).reshape(-1)[0])
                if node.op_type in ("Cast", "CastLike", "Identity"):
                    return graph_constant(node.input[0], graphs)
                return None
    return None


def test_every_decay_in_the_graph_is_floored(exported):
    """Every Exp of a computed value (the decays; exp(A_log) of the weights is not one) reads a Clip whose
    lower bound is LOG_DECAY_FLOOR: strongly decaying heads make no denormal floats in the graph, so a
    session without denormals-as-zero runs as fast (README, ONNX)."""
    from bsmamba2_plugin.model.ssd import LOG_DECAY_FLOOR

    found = []

    def walk(graphs: list) -> None:
        graph = graphs[-1]
        weights = {initializer.name for g in graphs for initializer in g.initializer}
        producers = {output: node for node in graph.node for output in node.output}
        for node in graph.node:
            if node.op_type == "Exp" and node.input[0] not in weights:
                clip = producers.get(node.input[0])
                assert clip is not None and clip.op_type == "Clip", f"{node.name} reads {clip and clip.op_type}"
                assert len(clip.input) > 1 and graph_constant(clip.input[1], graphs) == LOG_DECAY_FLOOR, clip.name
                found.append(node.name)
            for attribute in node.attribute:
                if attribute.g.node:
                    walk([*graphs, attribute.g])

    walk([onnx.load(str(exported[1])).graph])
    # One layer, two directions: the band axis's scores (one chunk), the time axis's scores and its decays
    # to a chunk's end and from its start (two chunks).
    assert len(found) == 2 * (1 + 3), found


def test_graph_has_fixed_frames_dynamic_batch_and_metadata(exported):
    model, path = exported
    graph = onnx.load(str(path))
    onnx.checker.check_model(graph)
    dims = lambda value: [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]  # noqa: E731
    (graph_input,), (graph_output,) = graph.graph.input, graph.graph.output
    frames = frames_for(model.stft_kwargs, CHUNK)
    assert graph_input.name == INPUT_NAME and graph_output.name == OUTPUT_NAME
    assert isinstance(dims(graph_input)[0], str) and dims(graph_input)[1:] == [2, 129, frames, 2]
    assert isinstance(dims(graph_output)[0], str) and dims(graph_output)[1:] == [2, 2, 129, frames, 2]
    meta = {prop.key: prop.value for prop in graph.metadata_props}
    assert meta["bsmamba2.chunk_samples"] == str(CHUNK) and meta["bsmamba2.stft_hop_length"] == "64"
    # Atomic write: only the .onnx itself is left in the folder.
    assert os.listdir(path.parent) == [path.name]


def test_onnx_separator_is_the_engine_s_overlap_add(exported, tmp_path):
    """OnnxSeparator gives the PyTorch Separator's output (MSST's overlap-add, TTA), from the file alone."""
    from bsmamba2_plugin.separate import Separator

    model, path = exported
    separator = OnnxSeparator(path)  # stems, rate and settings from the file's metadata
    assert separator.instruments == ["vocals", "other"] and separator.sample_rate == 44100
    assert separator.settings.num_overlap == 2 and separator.settings.chunk_size == CHUNK
    mixture = torch.randn(2, 2 * CHUNK + 777, generator=torch.Generator().manual_seed(2)).numpy()
    reference = Separator(tiny_config(), model=model, device="cpu").separate(mixture, 44100, use_tta=True)
    ours = separator.separate(mixture, 44100, use_tta=True)
    for stem in reference:
        assert relative_error(torch.from_numpy(ours[stem]), torch.from_numpy(reference[stem])) < 1e-4
    # a config given: its stems and settings, the graph's chunk size (with a word when it differs)
    with pytest.warns(UserWarning, match="replaced by it"):
        other = OnnxSeparator(path, config=tiny_config(chunk=4096), num_overlap=4)
    assert other.settings.chunk_size == CHUNK and other.settings.num_overlap == 4
    import soundfile as sf

    sf.write(tmp_path / "song.wav", mixture.T, 44100, subtype="FLOAT")
    written = separator.separate_file(tmp_path / "song.wav", tmp_path / "out")
    stem, _ = sf.read(written["vocals"], dtype="float32", always_2d=True)
    assert relative_error(torch.from_numpy(stem.T), torch.from_numpy(separator.separate(mixture, 44100)["vocals"])) < 1e-6


def test_bad_inputs_are_named(exported, tmp_path):
    model, path = exported
    separator = OnnxSeparator(path)
    with pytest.raises(ValueError, match=r"tiny.onnx takes chunks of shape \(batch, 2, 6300\), got \(1, 2, 100\)"):
        separator.separate_chunk(torch.zeros(1, 2, 100))
    with pytest.raises(ValueError, match="3 channels"):
        separator.separate(torch.zeros(3, 100).numpy(), 44100)
    with pytest.raises(FileNotFoundError, match="missing.onnx"):
        OnnxSeparator(tmp_path / "missing.onnx")
    (tmp_path / "song.onnx").write_bytes(b"RIFF not a graph")
    with pytest.raises(ValueError, match="song.onnx is not an ONNX model onnxruntime can load"):
        OnnxSeparator(tmp_path / "song.onnx")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        export_onnx(model, tmp_path / "no_such_folder" / "x.onnx", chunk_samples=CHUNK)
    with pytest.raises(ValueError, match="chunk_samples"):
        export_onnx(model, tmp_path / "x.onnx", chunk_samples=0)
    # An ONNX file from elsewhere has none of the metadata the separator needs.
    foreign = onnx.load(str(path))
    del foreign.metadata_props[:]
    onnx.save(foreign, str(tmp_path / "foreign.onnx"))
    with pytest.raises(ValueError, match="bsmamba2.chunk_samples"):
        OnnxSeparator(tmp_path / "foreign.onnx")
    bare = tmp_path / "bare.onnx"  # exported without a config: no stems or rate recorded
    graph = onnx.load(str(path))
    keep = [p for p in graph.metadata_props if p.key in ("bsmamba2.chunk_samples", "bsmamba2.num_stems",
            "bsmamba2.audio_channels") or p.key.startswith("bsmamba2.stft_")]
    del graph.metadata_props[:]
    graph.metadata_props.extend(keep)
    onnx.save(graph, str(bare))
    with pytest.raises(ValueError, match="pass the model's MSST YAML as config="):
        OnnxSeparator(bare)
    assert OnnxSeparator(bare, config=tiny_config()).instruments == ["vocals", "other"]


def test_chunk_model_has_a_model_s_contract_and_gives_msst_demix_the_same_output(exported):
    """The chunk function (what an overlap-add calls) through the real MSST demix equals the PyTorch model."""
    msst_model_utils = pytest.importorskip("msst.utils.model_utils")
    from ml_collections import ConfigDict

    model, path = exported
    chunk_model = OnnxChunkModel(path)
    assert isinstance(chunk_model, torch.nn.Module) and chunk_model.num_stems == 2
    out = chunk_model(torch.randn(2, 2, CHUNK))
    assert out.shape == (2, 2, 2, CHUNK) and out.dtype == torch.float32
    cfg = ConfigDict({"audio": {"chunk_size": CHUNK, "sample_rate": 44100},
                      "inference": {"num_overlap": 2, "batch_size": 2},
                      "training": {"instruments": ["vocals", "other"], "target_instrument": None, "use_amp": True}})
    mixture = torch.randn(2, 3 * CHUNK + 123, generator=torch.Generator().manual_seed(4)).numpy()
    expected = msst_model_utils.demix(cfg, model, mixture, "cpu", "bsmamba2")
    ours = msst_model_utils.demix(cfg, chunk_model, mixture, "cpu", "bsmamba2")
    assert expected.keys() == ours.keys() == {"vocals", "other"}
    for stem in expected:
        assert relative_error(torch.from_numpy(ours[stem]), torch.from_numpy(expected[stem])) < 1e-4


@pytest.mark.slow
def test_graph_does_not_grow_with_chunks(exported, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A chunk of five scan chunks exports to the same operations as one of two (two more exports: ~40 s).
    Each scan in one block of sequences: the blocks follow the frame count's divisors (99 = 9 x 11, 313 prime)."""
    from bsmamba2_plugin.model import ssd

    model, _ = exported
    monkeypatch.setattr(ssd, "GRAPH_BLOCK_BYTES", 1 << 50)
    path = export_onnx(model, tmp_path / "shorter.onnx", chunk_samples=CHUNK)
    longer = 20000  # 313 frames: five chunks of 64 steps
    other = export_onnx(model, tmp_path / "longer.onnx", chunk_samples=longer)
    def operations(graph_path: Path) -> list[str]:  # the computing nodes; Constant nodes hold shapes
        return sorted(node.op_type for node in onnx.load(str(graph_path)).graph.node if node.op_type != "Constant")

    assert operations(other) == operations(path)
    audio = torch.randn(1, 2, longer)
    with torch.no_grad():
        reference = model(audio)
    assert relative_error(OnnxChunkModel(other)(audio), reference) < 1e-4


def test_cli_setup_errors_are_one_line(tmp_path: Path, capsys):
    config = tmp_path / "tiny.yaml"
    config.write_text("audio:\n  chunk_size: 3000\nmodel:\n"
                      + "".join(f"  {key}: {list(value) if isinstance(value, tuple) else value}\n"
                                for key, value in TINY.items()))
    base = ["--config_path", str(config), "--output", str(tmp_path / "out.onnx")]
    with pytest.raises(SystemExit):
        main(base + ["--chunk_size", "0"])
    assert "--chunk_size: expected a positive whole number of samples, got '0'" in capsys.readouterr().err
    cases = {("--output", str(tmp_path / "nowhere" / "x.onnx")): "error: the folder of the ONNX output",
             ("--start_check_point", str(tmp_path / "missing.ckpt")): "missing.ckpt does not exist",
             ("--config_path", str(tmp_path / "none.yaml")): "none.yaml does not exist"}
    for (flag, value), expected in cases.items():
        assert main(base + [flag, value]) == 2
        err = capsys.readouterr().err
        assert expected in err and "Traceback" not in err, err
    assert not (tmp_path / "out.onnx").exists()


@pytest.mark.slow
def test_cli_exports_a_config_and_checkpoint(tmp_path: Path, capsys):
    """The command line on a mono one-stem config and a saved checkpoint (a second export: ~30 s)."""
    torch.set_num_threads(1)
    torch.manual_seed(3)
    model = BSMamba2(**TINY, stereo=False).eval()
    checkpoint = tmp_path / "tiny.ckpt"
    torch.save(model.state_dict(), checkpoint)
    bands = ", ".join(str(f) for f in TINY["freqs_per_bands"])
    config = tmp_path / "tiny.yaml"
    config.write_text(
        "audio:\n  chunk_size: 3000\n  sample_rate: 8000\n"
        "training:\n  instruments: [vocals]\n  use_amp: false\ninference:\n  num_overlap: 2\n  batch_size: 1\nmodel:\n"
        + "".join(f"  {key}: {value}\n" for key, value in TINY.items() if key != "freqs_per_bands")
        + f"  freqs_per_bands: !!python/tuple [{bands}]\n  stereo: false\n  num_stems: 1\n"
    )
    output = tmp_path / "cli.onnx"
    assert main(["--config_path", str(config), "--start_check_point", str(checkpoint), "--output", str(output)]) == 0
    assert "3000 samples per chunk" in capsys.readouterr().out
    separator = OnnxSeparator(output)
    assert separator.sample_rate == 8000 and separator.instruments == ["vocals"]
    audio = torch.randn(2, 1, 3000)  # mono chunks, as the model takes them
    with torch.no_grad():
        reference = model(audio)
    assert relative_error(separator.separate_chunk(audio), reference) < 1e-4
    mono = torch.randn(1, 7000).numpy()
    assert separator.separate(mono, 8000)["vocals"].shape == (1, 7000)


@pytest.mark.parametrize("block", [None, 3])  # 3: two blocks of sequences, each scanned over its two chunks
def test_a_mamba2_layer_alone_exports_in_its_graph_form(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        block: int | None):
    """Mamba2's own forward traced (two groups, a partial last chunk) runs in onnxruntime as in PyTorch."""
    import onnxruntime

    from bsmamba2_plugin.model import Mamba2, ssd

    if block is not None:
        monkeypatch.setattr(ssd, "sequences_per_block", lambda b, bytes_per_sequence: block)
    torch.manual_seed(1)
    layer = Mamba2(16, d_state=8, headdim=8, ngroups=2, backend="torch").eval()
    with torch.no_grad():
        layer.D.normal_()
        layer.norm.weight.normal_()
    u = torch.randn(6, 100, 16)  # two chunks of 64 steps, the second one partial
    path = tmp_path / "mamba2.onnx"
    with torch.no_grad():
        expected = layer(u)
        torch.onnx.export(layer, (u,), str(path), dynamo=True, optimize=False, verbose=False)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {session.get_inputs()[0].name: u.numpy()})
    assert relative_error(torch.from_numpy(got), expected) < 1e-5


@pytest.mark.slow
def test_an_export_under_autocast_is_still_float32(tmp_path: Path):
    """A caller's bf16 autocast does not reach the exported graph (a second export: ~15 s)."""
    torch.manual_seed(0)
    model = BSMamba2(**TINY, num_stems=2).eval()
    audio = torch.randn(1, 2, CHUNK)
    with torch.no_grad():
        expected = model(audio)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        path = export_onnx(model, tmp_path / "autocast.onnx", chunk_samples=CHUNK)
    assert relative_error(OnnxChunkModel(path)(audio), expected) < 1e-4


@pytest.mark.slow
def test_a_model_with_lora_adapters_exports_with_them(tmp_path: Path):
    """The trainer's LoRA adapters (weight parametrisations) are in the exported graph (a second export: ~15 s)."""
    import copy

    from bsmamba2_plugin.train.lora import attach_lora

    torch.manual_seed(0)
    base = BSMamba2(**TINY, num_stems=2).eval()
    model = copy.deepcopy(base)
    attach_lora(model, r=4, alpha=8.0)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("lora_B"):  # zero at initialisation: give the adapters an effect
                parameter.normal_(0, 0.05)
    audio = torch.randn(1, 2, CHUNK)
    with torch.no_grad():
        expected = model(audio)
        assert relative_error(base(audio), expected) > 1e-3  # the adapters matter for this check
    path = export_onnx(model, tmp_path / "lora.onnx", chunk_samples=CHUNK)
    assert relative_error(OnnxChunkModel(path)(audio), expected) < 1e-4
