"""The built-in sample scene: a textured synthetic town rendered, with exact ground truth, as a Google Earth Studio
export and as a MegaDepth scene. It is the default input of run_pipeline.py and the fixture of the tests."""

from aerialmd.sample_scene.generate import SAMPLE_ROOTS, SAMPLE_SIZES, SampleConfig, generate_sample, sample_paths

__all__ = ["SAMPLE_ROOTS", "SAMPLE_SIZES", "SampleConfig", "generate_sample", "sample_paths"]
