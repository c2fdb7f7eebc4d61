"""TFDS builders: `tfds.load` on ShapesWorld (generated in place) and on any svilm shard dir.

  import data_pipelines.tfds  # registers both builders
  ds = tfds.load("shapesworld/tiny", split="train", data_dir=DATA_DIR)
  ds = tfds.load("svilm_shards", split="train", data_dir=DATA_DIR,
                 download_and_prepare_kwargs={"download_config":
                     tfds.download.DownloadConfig(manual_dir=SHARDS_DIR)})

Both yield the feature dict of data_pipelines/tfds/features.py. TFDS caches what it prepared
under data_dir/<name>/<config>/<version> and reuses it on the next load; `svilm_shards` cannot
tell that the shards in manual_dir changed, so give each shard directory its own data_dir, or
regenerate with DownloadConfig(manual_dir=..., download_mode=GenerateMode.FORCE_REDOWNLOAD).
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Any, Dict

from etils import epath
import ml_collections
import tensorflow as tf
import tensorflow_datasets as tfds

from data_pipelines import input_pipeline
from data_pipelines import schema
from data_pipelines.shapesworld import build
from data_pipelines.tfds import features

# tfds 4.9.10 finds a builder's file through `importlib_resources`, a backport it does not
# install on Python >= 3.9 (so the lookup raises ModuleNotFoundError): both builders name their
# file directly instead. TFDS reads checksums.tsv, README.md and CITATIONS.bib beside it (none).
_CODE_PATH = epath.Path(__file__)
# Shard names written by shapesworld/build.py and build_shards.py; group 1 is the split.
_SHARD_RE = re.compile(r"^(\w+?)-\d{5}-of-\d{5}\.tfrecord$")
_DESCRIPTION = (
  "Videos with captions, noun phrases, timed segments, QA pairs and (for "
  "ShapesWorld) per-frame object boxes, visibility and masks; see "
  "data_pipelines/schema.py for every field."
)


class SvilmShards(tfds.core.GeneratorBasedBuilder):
  """Any directory of svilm shards (data_pipelines/schema.py) given as TFDS manual_dir.

  Splits are the `{split}` prefixes of the `{split}-NNNNN-of-NNNNN.tfrecord` files found there.
  Examples are keyed by video_id, so a video_id repeated within a split fails the build.
  """

  code_path = _CODE_PATH
  VERSION = tfds.core.Version(f"{schema.SCHEMA_VERSION}.0.0")
  RELEASE_NOTES = {str(VERSION): f"svilm shard schema version {schema.SCHEMA_VERSION}."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
    "Pass the shard directory as manual_dir: download_and_prepare_kwargs={'download_config': "
    "tfds.download.DownloadConfig(manual_dir=SHARDS_DIR)}. It must hold "
    "{split}-NNNNN-of-NNNNN.tfrecord files in the svilm schema (python -m "
    "data_pipelines.build_shards or python -m data_pipelines.shapesworld.build write them)."
  )

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
      description=_DESCRIPTION, features=features.features(with_masks=False)
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> Dict[str, Any]:
    shard_dir = os.fspath(dl_manager.manual_dir)
    splits: Dict[str, list] = {}
    for name in sorted(tf.io.gfile.listdir(shard_dir)):
      match = _SHARD_RE.match(name)
      if match:
        splits.setdefault(match.group(1), []).append(os.path.join(shard_dir, name))
    if not splits:
      raise ValueError(f"{shard_dir} holds no {{split}}-NNNNN-of-NNNNN.tfrecord shards")
    return {split: self._generate_examples(paths) for split, paths in splits.items()}

  def _generate_examples(self, paths):
    # One tf.data pass parses every record with the schema's own parser (the one contract).
    dataset = tf.data.TFRecordDataset(paths).map(
      input_pipeline.graph_fn(schema.parse_sequence_example)
    )
    for record in dataset.as_numpy_iterator():
      if record["schema_version"] != schema.SCHEMA_VERSION:
        raise ValueError(
          f"{record['video_id']!r} has schema_version {record['schema_version']},"
          f" this code reads {schema.SCHEMA_VERSION}: rebuild the shards"
        )
      video_id = record["video_id"].decode("utf-8")
      yield video_id, features.to_example(record, with_masks=False)


@dataclasses.dataclass(eq=False)
class ShapesworldConfig(tfds.core.BuilderConfig):
  """A named ShapesWorld variant: `overrides` are applied to build.default_config()."""

  overrides: Dict[str, Any] = dataclasses.field(default_factory=dict)

  def generator_config(self) -> ml_collections.ConfigDict:
    config = build.default_config()
    config.update(self.overrides)
    return config


class Shapesworld(tfds.core.GeneratorBasedBuilder):
  """ShapesWorld generated directly by build.video_fields (no shards needed).

  Example `i` of split `s` is exactly video `i` of `s` that build.build would write for the
  same config, with its masks added. The version's major number is build.GENERATOR_VERSION, so
  data prepared by older generator code is not silently reused.
  """

  code_path = _CODE_PATH
  VERSION = tfds.core.Version(f"{build.GENERATOR_VERSION}.0.0")
  RELEASE_NOTES = {str(VERSION): f"ShapesWorld generator version {build.GENERATOR_VERSION}."}
  BUILDER_CONFIGS = [
    ShapesworldConfig(
      name="default",
      description="build.default_config(): 4096/512/256 videos of 16 frames at 64 px.",
    ),
    # Small enough to prepare in about a second: for tests and smoke runs.
    ShapesworldConfig(
      name="tiny",
      description="16/8/4 videos of 16 frames at 64 px.",
      overrides=dict(num_train=16, num_val=8, num_compositional=4),
    ),
  ]
  DEFAULT_CONFIG_NAME = "default"

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
      description=_DESCRIPTION, features=features.features(with_masks=True)
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> Dict[str, Any]:
    del dl_manager  # Nothing to download: every video is generated.
    config = self.builder_config.generator_config()
    return {split: self._generate_examples(config, split) for split in build.SPLITS}

  def _generate_examples(self, config, split):
    for index in range(config[f"num_{split}"]):
      fields = build.video_fields(config, split, index)
      yield fields["video_id"], features.to_example(fields, with_masks=True)
