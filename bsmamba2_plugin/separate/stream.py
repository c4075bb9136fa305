"""``python -m bsmamba2_plugin.separate.stream``: fixed-latency separation from a file or stdin.

    ffmpeg -i song.mp3 -f f32le -ac 2 -ar 44100 - | \\
        python -m bsmamba2_plugin.separate.stream --config_path C --start_check_point K \\
            --input - --sample_rate 44100 --channels 2 --store_dir out/

Stdin carries raw interleaved PCM (``--raw_format f32le`` or ``s16le``); a file is read with
libsndfile. The stream's rate must be the model's ``audio.sample_rate``. Stems are written as they
are produced; at the end the latency and the real-time factor measured here are printed.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf

RAW_TYPES = {"f32le": np.dtype("<f4"), "s16le": np.dtype("<i2")}


def raw_blocks(stream, channels: int, dtype: np.dtype, frames: int):
    frame_bytes = channels * dtype.itemsize
    leftover = b""
    while True:
        data = stream.read(frames * frame_bytes)
        if not data:
            break
        data = leftover + data
        usable = len(data) - len(data) % frame_bytes
        leftover = data[usable:]
        samples = np.frombuffer(data[:usable], dtype=dtype).reshape(-1, channels).T
        if dtype.kind == "i":
            samples = samples.astype(np.float32) / 32768.0
        yield samples.astype(np.float32)
    if leftover:
        raise ValueError(f"stdin ended inside a frame ({len(leftover)} stray bytes): wrong --channels or --raw_format?")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bsmamba2_plugin.separate.stream", description=__doc__.splitlines()[0])
    parser.add_argument("--config_path", required=True)
    parser.add_argument("--start_check_point", default="")
    parser.add_argument("--input", required=True, help="an audio file, or - for raw PCM on stdin")
    parser.add_argument("--store_dir", required=True)
    parser.add_argument("--name", default=None, help="output name prefix (default: the input's name or 'stream')")
    parser.add_argument("--sample_rate", type=int, help="stdin: sample rate (must be the model's)")
    parser.add_argument("--channels", type=int, help="stdin: channel count (1 or 2)")
    parser.add_argument("--raw_format", choices=sorted(RAW_TYPES), default="f32le")
    parser.add_argument("--block_seconds", type=float, default=0.1, help="how much is read at a time")
    parser.add_argument("--device", default="auto", help="auto (CUDA, else MPS, else CPU), cpu, cuda, cuda:N or mps")
    parser.add_argument("--precision", choices=["auto", "fp32", "bf16"], default=None,
                        help="auto: bf16 where the device multiplies it natively, else fp32 "
                             "(default: inference.precision in the YAML, else auto)")
    args = parser.parse_args(argv)
    if not args.block_seconds > 0:  # (NaN too)
        parser.error(f"--block_seconds must be positive seconds, got {args.block_seconds}")
    for flag, value in (("--sample_rate", args.sample_rate), ("--channels", args.channels)):
        if value is not None and value < 1:
            parser.error(f"{flag} must be 1 or more, got {value}")

    from bsmamba2_plugin.separate.cli import describe_separator
    from bsmamba2_plugin.separate.separator import Separator
    from bsmamba2_plugin.separate.stem_writer import StemFiles

    try:
        separator = Separator(args.config_path, args.start_check_point or None, device=args.device,
                              precision=args.precision)
        rate = separator.sample_rate
        if args.input == "-":
            if args.sample_rate is None or args.channels is None:
                raise ValueError("reading stdin needs --sample_rate and --channels")
            stream_rate, channels = args.sample_rate, args.channels
            blocks = raw_blocks(sys.stdin.buffer, channels, RAW_TYPES[args.raw_format],
                                max(1, int(args.block_seconds * stream_rate)))
            name = args.name or "stream"
        else:
            if not Path(args.input).is_file():
                raise FileNotFoundError(f"--input {args.input} does not exist (a file, or - for raw PCM on stdin)")
            info = sf.info(args.input)
            stream_rate, channels = info.samplerate, info.channels
            blocks = (b.T for b in sf.blocks(args.input, blocksize=max(1, int(args.block_seconds * stream_rate)),
                                              dtype="float32", always_2d=True))
            name = args.name or Path(args.input).stem
        if stream_rate != rate:
            raise ValueError(f"the stream is at {stream_rate} Hz but the model runs at {rate} Hz; "
                             f"convert first (e.g. ffmpeg -ar {rate}) or use python -m bsmamba2_plugin.separate")
        streamer = separator.stream(channels)
        describe_separator(separator)
    except Exception as error:  # noqa: BLE001 - setup errors end the run with one clear line
        print(f"error: {error}", file=sys.stderr)
        return 2

    files = StemFiles({stem: Path(args.store_dir) / f"{name}_{stem}.wav" for stem in separator.instruments},
                      rate, channels, "FLOAT", "WAV")
    compute = 0.0
    try:
        for block in blocks:
            started = time.perf_counter()
            out = streamer.push(block)
            compute += time.perf_counter() - started
            for k, stem in enumerate(separator.instruments):
                files.write(stem, out[k])
        started = time.perf_counter()
        out = streamer.finish()
        compute += time.perf_counter() - started
        for k, stem in enumerate(separator.instruments):
            files.write(stem, out[k])
        written = files.finish()
    except BaseException as error:
        files.abort()
        if isinstance(error, Exception):
            print(f"error: {error}", file=sys.stderr)
            return 1
        raise
    seconds = streamer.received / rate
    print(f"Latency: {streamer.latency_samples} samples = {streamer.latency_samples / rate:.3f} s of audio "
          f"(chunk_size {streamer.chunk}, step {streamer.step}) plus compute per chunk. "
          f"Real-time factor: {compute / seconds:.3f} (compute {compute:.2f} s for {seconds:.2f} s of audio, "
          f"device {separator.device}).", file=sys.stderr)
    for path in written.values():
        print(path)
    return 0


if __name__ == "__main__":
    from bsmamba2_plugin.cpu_allocator import tune_cpu_allocator

    tune_cpu_allocator()  # torch has not allocated yet: this module imports it inside main()
    sys.exit(main())
