"""Evaluation over MUSDB18HQ-style folders: uSDR, cSDR (museval v4) and silent-region leakage."""
from bsmamba2_plugin.evaluate.dataset import Track, find_tracks
from bsmamba2_plugin.evaluate.run import Evaluation, evaluate_tracks
from bsmamba2_plugin.evaluate.scoring import StemScore, StemSummary, summarize

__all__ = ["Evaluation", "StemScore", "StemSummary", "Track", "evaluate_tracks", "find_tracks", "summarize"]
