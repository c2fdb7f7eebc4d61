"""TFDS builders for svilm data; importing this package registers them with TFDS.

shapesworld    ShapesWorld generated in place (configs `default`, `tiny`)
svilm_shards   any directory of svilm shards, passed as manual_dir
"""

from __future__ import annotations

from data_pipelines.tfds.builders import Shapesworld
from data_pipelines.tfds.builders import ShapesworldConfig
from data_pipelines.tfds.builders import SvilmShards

__all__ = ["Shapesworld", "ShapesworldConfig", "SvilmShards"]
