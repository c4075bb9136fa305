"""Separation: MSST-identical chunked demixing, block-wise file processing, API and command."""
from bsmamba2_plugin.separate.chunk_plan import ChunkPlan, InferenceSettings
from bsmamba2_plugin.separate.demix import demix
from bsmamba2_plugin.separate.output_naming import OutputFormat
from bsmamba2_plugin.separate.overlap_add import separate_blocks
from bsmamba2_plugin.separate.track import FolderReport, Separator, separate_track

__all__ = [
    "ChunkPlan", "FolderReport", "InferenceSettings", "OutputFormat", "Separator", "demix",
    "separate_blocks", "separate_track",
]
