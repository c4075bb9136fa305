"""Separation: MSST-identical chunked demixing, block-wise file processing, API and command."""
from bsmamba2_plugin.separate.chunk_plan import ChunkPlan, InferenceSettings
from bsmamba2_plugin.separate.demix import demix
from bsmamba2_plugin.separate.overlap_add import separate_blocks

__all__ = ["ChunkPlan", "InferenceSettings", "demix", "separate_blocks"]
