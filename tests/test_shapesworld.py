"""Tests for the ShapesWorld generator and builder (data_pipelines/shapesworld)."""

from __future__ import annotations

import glob
import os

import numpy as np
import pytest
import tensorflow as tf

from data_pipelines import schema
from data_pipelines import tokenizer
from data_pipelines.shapesworld import build
from data_pipelines.shapesworld import text
from data_pipelines.shapesworld import world


def _tiny_config(**overrides):
  config = build.default_config()
  config.update(
    dict(
      num_train=16,
      num_val=6,
      num_compositional=6,
      num_shards_train=2,
      num_shards_val=1,
      num_shards_compositional=1,
      num_frames=8,
      num_workers=1,
      vocab_size=128,
    )
  )
  config.update(overrides)
  return config


def _shard_bytes(directory):
  return {
    os.path.basename(p): open(p, "rb").read()
    for p in sorted(glob.glob(os.path.join(directory, "*.tfrecord")))
  }


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
  directory = str(tmp_path_factory.mktemp("tiny"))
  return directory, build.build(directory, _tiny_config())


def _check_annotations(masks, boxes, visible, num_objects):
  """Mask pixel centres lie inside their object's box; visible iff the object has pixels."""
  _, h, w = masks.shape
  assert boxes.min() >= 0.0 and boxes.max() <= 1.0
  assert (boxes[..., 0] <= boxes[..., 2]).all() and (boxes[..., 1] <= boxes[..., 3]).all()
  for t in range(masks.shape[0]):
    assert masks[t].max() <= num_objects
    for o in range(num_objects):
      ys, xs = np.nonzero(masks[t] == o + 1)
      assert visible[t, o] == int(len(ys) > 0)
      ymin, xmin, ymax, xmax = boxes[t, o]
      assert ((ys + 0.5 >= ymin * h - 1e-4) & (ys + 0.5 <= ymax * h + 1e-4)).all()
      assert ((xs + 0.5 >= xmin * w - 1e-4) & (xs + 0.5 <= xmax * w + 1e-4)).all()


def test_geometry_matches_hand_computed_pixels():
  bg = world.Background("gradient", (60.0, 60.0, 60.0), (1.0, 1.0, 1.0), 0.0, 0.0, 8.0, 3, 0)
  objects = (
    world.Obj("red", "square", 4.0, 10.0, 10.0),  # pixel centres 6.5..13.5
    world.Obj("blue", "circle", 3.0, 24.0, 8.0),  # 6x6 block minus 4 corners
    world.Obj("white", "square", 2.0, 10.0, 10.0),
  )  # on top of the red square
  scene = world.Scene(2, 32, 32, objects, (), bg)
  r = world.render(scene)
  assert (r.masks[0] == 1).sum() == 64 - 16
  assert (r.masks[0] == 2).sum() == 32
  assert (r.masks[0] == 3).sum() == 16
  np.testing.assert_allclose(r.boxes[0, 0], [6 / 32, 6 / 32, 14 / 32, 14 / 32])
  np.testing.assert_allclose(r.boxes[0, 1], [5 / 32, 21 / 32, 11 / 32, 27 / 32])
  # Exact colours before JPEG: white square centre, untouched background corner.
  assert tuple(r.frames[0, 10, 10]) == world.PALETTE["white"]
  assert tuple(r.frames[0, 31, 0]) == (60, 60, 60)
  np.testing.assert_array_equal(r.visible, [[1, 1, 1], [1, 1, 1]])


def _scene(objects, segments):
  bg = world.Background("gradient", (60.0, 60.0, 60.0), (1.0, 1.0, 1.0), 0.0, 0.0, 8.0, 3, 0)
  return world.Scene(
    16,
    64,
    64,
    tuple(world.Obj(c, s, 8.0, 20.0 + 20 * i, 32.0) for i, (c, s) in enumerate(objects)),
    segments,
    bg,
  )


def test_caption_nouns_and_qa_templates():
  scene = _scene(
    [("red", "circle"), ("blue", "square"), ("red", "star")],
    (
      world.Segment(0, 6, 0, "move left", dx=-10.0),
      world.Segment(0, 6, 1, "grow", dsize=3.0),
      world.Segment(8, 14, 0, "shrink", dsize=-2.0),
    ),
  )
  assert text.clip_caption(scene) == (
    "a red circle moves left while a blue square grows, then the red circle shrinks",
    ["red circle", "blue square"],
    [0, 1],
  )
  assert text.segment_captions(scene) == [
    "the red circle moves left",
    "the blue square grows",
    "the red circle shrinks",
  ]
  assert text.qa_pairs(scene) == [
    ("how many objects are there?", "three"),
    ("what colour is the object that moves left?", "red"),
    ("what shape is the object that moves left?", "circle"),
    ("what colour is the object that grows?", "blue"),
    ("what shape is the object that grows?", "square"),
    ("what colour is the object that shrinks?", "red"),
    ("what shape is the object that shrinks?", "circle"),
    ("what does the blue square do?", "grow"),
    ("what does the red star do?", "nothing"),
  ]
  scene = _scene(
    [("orange", "star")],
    (world.Segment(0, 6, 0, "appear"), world.Segment(7, 12, 0, "change colour", colour="white")),
  )
  assert text.clip_caption(scene) == (
    "an orange star appears, then it turns white",
    ["orange star"],
    [0],
  )
  assert ("what colour is the object that turns white?", "orange") not in text.qa_pairs(scene)


def test_progress_and_full_occlusion():
  np.testing.assert_allclose(world.progress(np.arange(8), 2, 6), [0, 0, 0.25, 0.5, 0.75, 1, 1, 1])
  bg = world.Background("stripes", (60.0, 70.0, 80.0), (1.0, 1.0, 1.0), 8.0, 0.3, 8.0, 3, 0)
  objects = (
    world.Obj("red", "circle", 3.0, 16.0, 16.0),
    world.Obj("blue", "square", 6.0, 16.0, 16.0),
  )
  seg = world.Segment(1, 3, 1, "move right", dx=8.0)
  r = world.render(world.Scene(4, 32, 32, objects, (seg,), bg))
  # The square hides the whole circle at frame 0; 4 px to the right (frame 1) it uncovers the
  # circle's left column.
  np.testing.assert_array_equal(r.visible[:, 0], [0, 1, 1, 1])
  np.testing.assert_allclose(r.boxes[:, 1, 1] * 32, [10, 14, 18, 18])
  _check_annotations(r.masks, r.boxes, r.visible, 2)


def test_fading_object_is_in_the_mask_from_half_opacity():
  bg = world.Background("gradient", (100.0, 100.0, 100.0), (1.0, 1.0, 1.0), 0.0, 0.0, 8.0, 3, 0)
  objects = (world.Obj("white", "square", 4.0, 16.0, 16.0),)
  seg = world.Segment(0, 4, 0, "appear")
  r = world.render(world.Scene(5, 32, 32, objects, (seg,), bg))
  # Opacity 0.25, 0.5, 0.75, 1, 1: drawn from frame 0, in the mask from frame 1.
  np.testing.assert_array_equal(r.visible[:, 0], [0, 1, 1, 1, 1])
  assert r.frames[0, 16, 16, 0] == round(100 + 0.25 * 145)  # 136
  assert r.frames[2, 16, 16, 0] == round(100 + 0.75 * 145)  # 209 (208.75)
  assert (r.masks[1] == 1).sum() == 64


def test_rendered_scenes_are_consistent():
  config = build.default_config()
  config.max_objects = 4
  for split in ("train", "compositional"):
    for index in range(40):
      scene = build.scene_for(config, split, index)
      r = world.render(scene)
      num = len(scene.objects)
      _check_annotations(r.masks, r.boxes, r.visible, num)
      extent = np.maximum(r.boxes[..., 2] - r.boxes[..., 0], r.boxes[..., 3] - r.boxes[..., 1])
      assert (extent * 64 >= 13.4).all() and (extent * 64 <= 26).all()
      state = world.tracks(scene)
      assert (state["x"] - state["size"] >= 0).all() and (state["x"] + state["size"] <= 64).all()
      assert (state["y"] - state["size"] >= 0).all() and (state["y"] + state["size"] <= 64).all()
      starts = [s.start for s in scene.segments]
      assert starts == sorted(starts) and len(starts) >= 1
      for s in scene.segments:
        assert 0 <= s.start < s.end <= scene.num_frames
      for o in set(range(num)) - {s.obj for s in scene.segments}:  # idle objects stay still
        assert (r.boxes[:, o] == r.boxes[0, o]).all()
      caption, nouns, noun_object = text.clip_caption(scene)
      assert 1 <= len(nouns) == len(set(nouns)) <= 2
      for noun, o in zip(nouns, noun_object):
        assert noun == text.object_name(scene.objects[o].colour, scene.objects[o].shape)
        assert noun in caption
      assert all(a in text.ANSWERS for _, a in text.qa_pairs(scene))


def test_segments_do_what_their_caption_says():
  config = build.default_config()
  for index in range(60):
    scene = build.scene_for(config, "val", index)
    state = world.tracks(scene)
    for s, caption in zip(scene.segments, text.segment_captions(scene)):
      before, after = max(s.start - 1, 0), s.end - 1
      delta = {k: state[k][after, s.obj] - state[k][before, s.obj] for k in ("x", "y", "size")}
      expected_sign = {
        "move left": ("x", -1),
        "move right": ("x", 1),
        "move up": ("y", -1),
        "move down": ("y", 1),
        "grow": ("size", 1),
        "shrink": ("size", -1),
      }
      if s.action in expected_sign:
        key, sign = expected_sign[s.action]
        assert np.sign(delta[key]) == sign, caption
      if s.action == "appear":
        assert (
          state["opacity"][after, s.obj] == 1
          and state["opacity"][: s.start, s.obj].max(initial=0) == 0
        )
      if s.action == "disappear":
        assert state["opacity"][after:, s.obj].max() == 0


def test_holdout_combos_only_in_compositional():
  config = build.default_config()
  holdout = {tuple(c) for c in config.holdout_combos}
  for split in ("train", "val"):
    for index in range(300):
      scene = build.scene_for(config, split, index)
      names = {(o.colour, o.shape) for o in scene.objects}
      names |= {(s.colour, scene.objects[s.obj].shape) for s in scene.segments if s.colour}
      assert not names & holdout
  for index in range(100):
    scene = build.scene_for(config, "compositional", index)
    acting = {(scene.objects[s.obj].colour, scene.objects[s.obj].shape) for s in scene.segments}
    assert acting & holdout


def test_backgrounds_never_take_object_colours():
  rng = np.random.default_rng(0)
  palette = np.asarray(list(world.PALETTE.values()), np.float32)
  for _ in range(60):
    img = world.background(world._sample_background(rng, 64), 64, 64).reshape(-1, 3)
    distance = np.abs(img[:, None] - palette[None]).max(-1)
    assert distance.min() >= 35


def test_captions_are_mostly_distinct_on_default_val():
  config = build.default_config()
  captions = [
    text.clip_caption(build.scene_for(config, "val", i))[0] for i in range(config.num_val)
  ]
  assert len(set(captions)) >= 256


def test_long_variant_has_several_phases_and_idle_stretches():
  config = build.long_video_config()
  idle = 0
  for index in range(20):
    scene = build.scene_for(config, "train", index)
    assert scene.num_frames == 96 and len({s.start for s in scene.segments}) >= 2
    covered = np.zeros(96, bool)
    for s in scene.segments:
      covered[s.start : s.end] = True
    idle += int((~covered).sum() > 0)
  assert idle >= 15
  r = world.render(build.scene_for(config, "val", 0))
  assert r.frames.shape == (96, 64, 64, 3)


def test_build_is_deterministic_and_worker_independent(tiny, tmp_path, monkeypatch):
  directory, _ = tiny
  monkeypatch.setattr(build, "MIN_FRAMES_FOR_WORKERS", 0)  # use the pool even for this
  other = str(tmp_path / "two_workers")
  build.build(other, _tiny_config(num_workers=2))
  assert _shard_bytes(directory) == _shard_bytes(other)
  assert (
    open(os.path.join(directory, "tokenizer.model"), "rb").read()
    == open(os.path.join(other, "tokenizer.model"), "rb").read()
  )
  reseeded = str(tmp_path / "seed1")
  build.build(reseeded, _tiny_config(seed=1))
  assert set(_shard_bytes(reseeded)) == set(_shard_bytes(directory))
  for name, data in _shard_bytes(reseeded).items():
    assert data != _shard_bytes(directory)[name]


def test_parse_back_through_schema(tiny):
  directory, manifest = tiny
  assert manifest["counts"] == {"train": 16, "val": 6, "compositional": 6}
  assert manifest["files"]["train"] == [
    "train-00000-of-00002.tfrecord",
    "train-00001-of-00002.tfrecord",
  ]
  actions = open(os.path.join(directory, "actions.txt")).read().splitlines()
  answers = open(os.path.join(directory, "answers.txt")).read().splitlines()
  assert actions == list(text.ACTIONS) and answers == list(text.ANSWERS)
  tok = tokenizer.Tokenizer(os.path.join(directory, "tokenizer.model"))
  count = 0
  for path in sorted(glob.glob(os.path.join(directory, "*.tfrecord"))):
    for serialized in tf.data.TFRecordDataset(path):
      ex = schema.parse_sequence_example(serialized)
      count += 1
      frame = tf.io.decode_jpeg(ex["frames"][0])
      assert frame.shape == (64, 64, 3) and ex["frames"].shape == (8,)
      masks = np.stack([tf.io.decode_png(m)[..., 0].numpy() for m in ex["masks"]])
      num = int(ex["num_objects"])
      assert ex["boxes"].shape == (8, num, 4) and ex["source"].numpy() == b"shapesworld"
      _check_annotations(masks, ex["boxes"].numpy(), ex["visible"].numpy(), num)
      names = [n.decode() for n in ex["object_names"].numpy()]
      for noun, o in zip(ex["nouns"].numpy(), ex["noun_object"].numpy()):
        assert noun.decode() == names[o]
      assert all(a.decode() in answers for a in ex["qa_answer"].numpy())
      assert all(0 <= a < len(actions) for a in ex["segment_action"].numpy())
      if path.startswith(os.path.join(directory, "train")):
        ids, _ = tok.encode([ex["caption"].numpy()], 64)
        assert 1 not in ids  # train text never maps to unk
  assert count == 28


def test_rebuild_is_a_no_op_and_other_config_is_an_error(tiny, monkeypatch):
  directory, manifest = tiny
  mtimes = {p: os.stat(p).st_mtime_ns for p in glob.glob(os.path.join(directory, "*"))}
  assert build.build(directory, _tiny_config(num_workers=3)) == manifest
  assert mtimes == {p: os.stat(p).st_mtime_ns for p in glob.glob(os.path.join(directory, "*"))}
  with pytest.raises(ValueError, match=r"different config.*num_train"):
    build.build(directory, _tiny_config(num_train=17))
  monkeypatch.setattr(build, "GENERATOR_VERSION", build.GENERATOR_VERSION + 1)
  with pytest.raises(ValueError, match=r"generator_version"):
    build.build(directory, _tiny_config())


def test_failed_build_leaves_no_dataset(tmp_path, monkeypatch):
  def fail(*args, **kwargs):
    raise RuntimeError("killed")

  monkeypatch.setattr(tokenizer, "train_tokenizer", fail)
  with pytest.raises(RuntimeError):
    build.build(str(tmp_path), _tiny_config())
  assert not os.listdir(tmp_path)  # no manifest, no shard, no leftover temporary
