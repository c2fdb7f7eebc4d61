"""Builds the ShapesWorld dataset: shards, tokenizer, vocabularies and a manifest.

  python -m data_pipelines.shapesworld.build --output=/tmp/shapesworld
  python -m data_pipelines.shapesworld.build --output=/tmp/shapesworld_long --variant=long

Video `index` of split `split` is drawn from its own generator seeded by
(config.seed, split id, index), so the output depends only on the config: the same config gives
byte-identical files whatever `num_workers` is. Written into output_dir (local filesystem):

  {split}-{i:05d}-of-{n:05d}.tfrecord   schema.VideoRecord shards, splits train/val/compositional
  tokenizer.model                       SentencePiece model trained on the train split's text
  actions.txt, answers.txt              text.ACTIONS and text.ANSWERS, one per line (id = line)
  manifest.json                         schema version, config, counts, files; written last

A directory is a dataset iff it holds manifest.json: every other file is first written under a
hidden temporary name and renamed once all of them are complete. The default build (4864
videos of 16 frames at 64 px) takes 10-25 s on 2 shared cores (see docs/shapesworld.md).
"""

from __future__ import annotations

from concurrent import futures
import functools
import io
import json
import multiprocessing
import os
import re
import time
from typing import Any, Dict, List, Sequence

from absl import app
from absl import flags
from absl import logging
import ml_collections
import numpy as np
from PIL import Image

from data_pipelines import tokenizer
from data_pipelines.shapesworld import text
from data_pipelines.shapesworld import world

SPLITS = ("train", "val", "compositional")
_SPLIT_IDS = {"train": 0, "val": 1, "compositional": 2}
MANIFEST = "manifest.json"
SOURCE = "shapesworld"
# Knobs that do not change a single output byte: left out of the manifest's config.
_NOT_IN_MANIFEST = ("num_workers",)
# Worker start-up costs seconds (spawned workers re-import the caller's main module, e.g. all
# of JAX and TF for the trainer), so small builds run in-process whatever num_workers says.
MIN_FRAMES_FOR_WORKERS = 16384
# Bump when a change to world.py, text.py or this file changes the output for a given config:
# caches built by older code then fail loudly instead of being reused.
GENERATOR_VERSION = 1
_SHARD_RE = re.compile(r"^(train|val|compositional)-\d{5}-of-\d{5}\.tfrecord$")


def default_config() -> ml_collections.ConfigDict:
  """The default ShapesWorld: 16 frames at 64 px, 1-3 objects, 1-2 action phases."""
  return ml_collections.ConfigDict(
    dict(
      seed=0,
      num_train=4096,
      num_val=512,
      num_compositional=256,
      num_shards_train=8,
      num_shards_val=2,
      num_shards_compositional=2,
      num_frames=16,
      resolution=64,
      fps=8.0,
      min_objects=1,
      max_objects=3,
      min_phases=1,
      max_phases=2,
      min_segment_frames=3,  # shortest action phase, frames
      idle_weight=0.3,  # relative weight of idle stretches around the phases
      concurrent_prob=0.25,  # chance that a second object acts during a phase ("while")
      distractor_prob=0.5,  # chance that a further object shares colour or shape
      min_object_size=0.22,
      max_object_size=0.40,  # shape extent, fraction of the frame
      holdout_combos=(("green", "square"), ("purple", "triangle")),
      jpeg_quality=95,
      vocab_size=512,
      num_workers=2,  # processes for builds of >= MIN_FRAMES_FOR_WORKERS frames
    )
  )


def long_video_config() -> ml_collections.ConfigDict:
  """Long videos: 96 frames, 3-5 phases of >= 8 frames with idle stretches between them."""
  config = default_config()
  config.update(
    dict(
      num_frames=96,
      min_phases=3,
      max_phases=5,
      min_segment_frames=8,
      idle_weight=1.0,
      num_train=1024,
      num_val=256,
      num_compositional=128,
    )
  )
  return config


def _validate(config) -> None:
  """Fails early on knob values the sampler cannot honour."""
  for colour, shape in config.holdout_combos:
    if colour not in text.COLOURS or shape not in text.SHAPES:
      raise ValueError(f"holdout combo ({colour}, {shape}) is not in the vocabularies")
  if not 1 <= config.min_objects <= config.max_objects <= len(text.NUMBER_WORDS):
    raise ValueError(f"need 1 <= min_objects <= max_objects <= {len(text.NUMBER_WORDS)}")
  if min(config[f"num_shards_{split}"] for split in SPLITS) < 1:
    raise ValueError("every split needs at least one shard")
  if not 1 <= config.min_phases <= config.max_phases <= config.num_frames:
    raise ValueError("need 1 <= min_phases <= max_phases <= num_frames")
  if config.num_compositional and not config.holdout_combos:
    raise ValueError("num_compositional > 0 needs at least one holdout combo")
  if not 0 < config.min_object_size <= config.max_object_size < 0.5:
    raise ValueError("need 0 < min_object_size <= max_object_size < 0.5")


def scene_for(config, split: str, index: int) -> world.Scene:
  """The scene of video `index` of `split` (no rendering): what `build` writes for it."""
  rng = np.random.default_rng([config.seed, _SPLIT_IDS[split], index])
  return world.sample_scene(rng, config, compositional=split == "compositional")


def _encode(array: np.ndarray, **kwargs) -> bytes:
  buffer = io.BytesIO()
  Image.fromarray(array).save(buffer, **kwargs)
  return buffer.getvalue()


def video_fields(config, split: str, index: int) -> Dict[str, Any]:
  """Keyword arguments of schema.VideoRecord for one video (frames JPEG, masks PNG).

  A plain dict so that worker processes need neither TensorFlow nor the schema module.
  """
  scene = scene_for(config, split, index)
  rendering = world.render(scene)
  caption, nouns, noun_object = text.clip_caption(scene)
  qa = text.qa_pairs(scene)
  actions = [text.ACTIONS.index(s.action) for s in scene.segments]
  return dict(
    video_id=f"{split}-{index:06d}",
    source=SOURCE,
    frames=[_encode(f, format="JPEG", quality=config.jpeg_quality) for f in rendering.frames],
    masks=[_encode(m, format="PNG") for m in rendering.masks],
    caption=caption,
    height=scene.height,
    width=scene.width,
    fps=config.fps,
    nouns=nouns,
    noun_object=noun_object,
    object_names=[text.object_name(o.colour, o.shape) for o in scene.objects],
    action_labels=list(dict.fromkeys(actions)),  # distinct, in order of first occurrence
    segment_start=[s.start for s in scene.segments],
    segment_end=[s.end for s in scene.segments],
    segment_caption=text.segment_captions(scene),
    segment_action=actions,
    segment_object=[s.obj for s in scene.segments],
    qa_question=[q for q, _ in qa],
    qa_answer=[a for _, a in qa],
    boxes=rendering.boxes,
    visible=rendering.visible,
  )


def _schema():
  # Imported on use, not at module level: spawned workers import this module and would
  # otherwise each spend seconds importing TensorFlow (through schema) they never use.
  from data_pipelines import schema  # pylint: disable=g-import-not-at-top

  return schema


def _versions() -> Dict[str, int]:
  return dict(schema_version=_schema().SCHEMA_VERSION, generator_version=GENERATOR_VERSION)


def _video_fields_star(config, split_index):
  return video_fields(config, *split_index)


def _config_key(config) -> Dict[str, Any]:
  """The config as JSON values (tuples become lists), without output-neutral knobs."""
  key = json.loads(json.dumps(config.to_dict()))
  for name in _NOT_IN_MANIFEST:
    key.pop(name, None)
  return key


def _shard_names(split: str, num_shards: int) -> List[str]:
  return [f"{split}-{i:05d}-of-{num_shards:05d}.tfrecord" for i in range(num_shards)]


def _write_split(output_dir, config, split, map_fn, tmp_prefix, texts) -> List[str]:
  """Writes one split's shards under temporary names; appends train text to `texts`."""
  count, num_shards = config[f"num_{split}"], config[f"num_shards_{split}"]
  names = _shard_names(split, num_shards)
  videos = map_fn([(split, i) for i in range(count)])  # workers start on these now
  # TF imported once the workers are busy (the first import takes seconds).
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  schema = _schema()
  for shard, name in enumerate(names):
    lo, hi = shard * count // num_shards, (shard + 1) * count // num_shards
    with tf.io.TFRecordWriter(os.path.join(output_dir, tmp_prefix + name)) as writer:
      for _ in range(lo, hi):
        fields = next(videos)
        # deterministic=True sorts the context map keys, otherwise the bytes vary by process.
        writer.write(
          schema.to_sequence_example(schema.VideoRecord(**fields)).SerializeToString(
            deterministic=True
          )
        )
        if split == "train":
          texts += text.tokenizer_texts(
            fields["caption"],
            fields["segment_caption"],
            fields["nouns"],
            list(zip(fields["qa_question"], fields["qa_answer"])),
          )
  return names


def build(output_dir: str, config: ml_collections.ConfigDict) -> Dict[str, Any]:
  """Writes the dataset described by `config` into `output_dir`; returns the manifest.

  Returns the existing manifest without doing any work when output_dir already holds a
  dataset built from the same config (num_workers aside) by the same SCHEMA_VERSION and
  GENERATOR_VERSION; raises ValueError when it holds one built from anything else. Raises
  RuntimeError when worker processes die (see MIN_FRAMES_FOR_WORKERS for when they are used).
  """
  _validate(config)
  key = _config_key(config)
  manifest_path = os.path.join(output_dir, MANIFEST)
  if os.path.exists(manifest_path):
    with open(manifest_path) as f:
      manifest = json.load(f)
    old_key = manifest.get("config", {})
    versions = _versions()
    if old_key == key and all(manifest.get(k) == v for k, v in versions.items()):
      return manifest
    differ = sorted(k for k in set(key) | set(old_key) if key.get(k) != old_key.get(k))
    differ += [k for k, v in versions.items() if manifest.get(k) != v]
    raise ValueError(
      f"{output_dir} already holds a ShapesWorld dataset built from a different "
      f"config or code (differs in: {differ}); use another output dir or delete "
      "it to rebuild"
    )
  os.makedirs(output_dir, exist_ok=True)
  start = time.time()
  # Per-process temporary names: two hosts building the same config never clobber each other
  # mid-write, and they rename identical bytes into place.
  tmp_prefix = f".tmp-{os.getpid()}."
  try:
    manifest = _build(output_dir, config, key, tmp_prefix)
  except BaseException:
    for name in os.listdir(output_dir):
      if name.startswith(tmp_prefix):
        os.remove(os.path.join(output_dir, name))
    raise
  logging.info("built %s in %.1f s: %s", output_dir, time.time() - start, manifest["counts"])
  return manifest


def _build(output_dir, config, key, tmp_prefix) -> Dict[str, Any]:
  """Writes every file under a temporary name, renames them, then writes the manifest."""
  # A plain copy: the caller's config may be a locked child of a bigger config.
  worker = functools.partial(_video_fields_star, ml_collections.ConfigDict(config.to_dict()))
  texts: List[str] = []
  files = {}
  executor = None
  total_frames = sum(config[f"num_{split}"] for split in SPLITS) * config.num_frames
  if config.num_workers > 1 and total_frames >= MIN_FRAMES_FOR_WORKERS:
    # spawn, not fork: the caller may already run JAX or TF threads, which fork can deadlock.
    # An executor, not a Pool: a worker that dies while starting (a script calling build()
    # without an `if __name__ == "__main__"` guard) breaks it loudly instead of hanging.
    executor = futures.ProcessPoolExecutor(
      config.num_workers, mp_context=multiprocessing.get_context("spawn")
    )
  try:
    map_fn = (
      (lambda items: executor.map(worker, items, chunksize=16))
      if executor
      else (lambda items: map(worker, items))
    )
    for split in SPLITS:
      files[split] = _write_split(output_dir, config, split, map_fn, tmp_prefix, texts)
  except futures.process.BrokenProcessPool as e:
    raise RuntimeError(
      "ShapesWorld worker processes died. Spawned workers re-import the main module: call "
      "build() under `if __name__ == '__main__':`, or set num_workers=1."
    ) from e
  finally:
    if executor is not None:
      executor.shutdown(wait=True, cancel_futures=True)
  tokenizer.train_tokenizer(
    texts, os.path.join(output_dir, tmp_prefix + "tokenizer.model"), config.vocab_size
  )
  for name, lines in (("actions.txt", text.ACTIONS), ("answers.txt", text.ANSWERS)):
    with open(os.path.join(output_dir, tmp_prefix + name), "w") as f:
      f.write("".join(f"{line}\n" for line in lines))
  final = [n for names in files.values() for n in names]
  for name in final + ["tokenizer.model", "actions.txt", "answers.txt"]:
    os.replace(os.path.join(output_dir, tmp_prefix + name), os.path.join(output_dir, name))
  for name in os.listdir(output_dir):  # shards of an earlier, unfinished build
    if _SHARD_RE.match(name) and name not in final:
      os.remove(os.path.join(output_dir, name))
  manifest = dict(
    _versions(),
    config=key,
    source=SOURCE,
    counts={split: config[f"num_{split}"] for split in SPLITS},
    files=files,
    tokenizer="tokenizer.model",
    vocab_size=tokenizer.Tokenizer(os.path.join(output_dir, "tokenizer.model")).vocab_size,
    actions="actions.txt",
    answers="answers.txt",
  )
  with open(os.path.join(output_dir, tmp_prefix + MANIFEST), "w") as f:
    json.dump(manifest, f, indent=2, sort_keys=True)
  os.replace(os.path.join(output_dir, tmp_prefix + MANIFEST), os.path.join(output_dir, MANIFEST))
  return manifest


def _define_flags() -> None:
  # Defined only when run as a program, so importing build (e.g. from a trainer) adds no flags.
  flags.DEFINE_string("output", None, "Output directory.")
  flags.DEFINE_enum(
    "variant", "default", ["default", "long"], "default_config() or long_video_config()."
  )
  for name in (
    "seed",
    "num_train",
    "num_val",
    "num_compositional",
    "num_workers",
    "num_frames",
    "resolution",
  ):
    flags.DEFINE_integer(name, None, f"Overrides config.{name}.")
  flags.mark_flag_as_required("output")


def main(argv: Sequence[str]) -> None:
  del argv
  config = default_config() if flags.FLAGS.variant == "default" else long_video_config()
  for name in (
    "seed",
    "num_train",
    "num_val",
    "num_compositional",
    "num_workers",
    "num_frames",
    "resolution",
  ):
    if flags.FLAGS[name].value is not None:
      config[name] = flags.FLAGS[name].value
  start = time.time()
  manifest = build(flags.FLAGS.output, config)
  print(f"{flags.FLAGS.output}: {manifest['counts']} ({time.time() - start:.1f} s)")


if __name__ == "__main__":
  _define_flags()
  app.run(main)
