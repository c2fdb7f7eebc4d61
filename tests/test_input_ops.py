"""Input ops (data_pipelines/ops.py): hand-checked values, eagerly and inside tf.data.map.

One small record with known content: 20 frames of 48 x 64 whose grey level is 10 * frame, three
objects with fixed boxes and PNG index maps, three segments, two labels and two QA pairs.
Evaluation sampling of 4 frames 2 apart takes frames [7, 9, 11, 13] and the centre window
(y0, x0, h, w) = (0, 8, 48, 48).
"""

import functools

import numpy as np
import pytest
import tensorflow as tf

from data_pipelines import input_pipeline
from data_pipelines import ops
from data_pipelines import schema
from data_pipelines import tokenizer as tokenizer_lib
from data_pipelines import video_ops

H, W, N = 48, 64, 20
# Object boxes (ymin, xmin, ymax, xmax), normalised, and the pixels their masks fill.
BOXES = [
  (0.25, 0.25, 0.5, 0.5),  # rows 12..23, columns 16..31
  (0.0, 0.0, 1.0, 0.1),  # columns 0..5: left of the centre window
  (0.75, 0.75, 1.0, 1.0),
]  # rows 36..47, columns 48..63
MASK_PIXELS = [
  (slice(12, 24), slice(16, 32)),
  (slice(0, 48), slice(0, 6)),
  (slice(36, 48), slice(48, 64)),
]
EVAL_FRAMES = [7, 9, 11, 13]


@functools.lru_cache(maxsize=None)
def _frames_and_mask() -> tuple[list[bytes], bytes]:
  frames = [
    tf.io.encode_jpeg(np.full((H, W, 3), 10 * i, np.uint8), quality=100).numpy() for i in range(N)
  ]
  index_map = np.zeros((H, W, 1), np.uint8)
  for o, (rows, cols) in enumerate(MASK_PIXELS):
    index_map[rows, cols] = o + 1
  return frames, tf.io.encode_png(index_map).numpy()


def _record(**overrides) -> schema.VideoRecord:
  frames, mask = _frames_and_mask()
  visible = np.ones((N, 3), np.int64)
  visible[::3, 0] = 0  # object 0 hides in frames 0, 3, 6, 9, ...
  fields = dict(
    video_id="v0",
    frames=frames,
    caption="a red circle",
    height=H,
    width=W,
    fps=8.0,
    captions=["a red circle", "a blue square", "a green star"],
    nouns=["red circle", "blue square", "green star"],
    noun_object=[0, 2, -1],
    object_names=["red circle", "blue bar", "blue square"],
    action_labels=[3, 1],
    segment_start=[1, 8, 15],
    segment_end=[9, 12, 16],
    segment_caption=["a", "b", "c"],
    segment_action=[0, 1, -1],
    segment_object=[0, 1, -1],
    qa_question=["how many objects?", "what colour is the square?"],
    qa_answer=["three", "purple"],
    boxes=np.tile(np.asarray(BOXES, np.float32), (N, 1, 1)),
    visible=visible,
    masks=[mask] * N,
  )
  fields.update(overrides)
  return schema.VideoRecord(**fields)


def _serialized(**overrides) -> bytes:
  return schema.to_sequence_example(_record(**overrides)).SerializeToString()


def _features(index=0, **overrides) -> dict:
  """The dict the example ops start from: the parsed record plus its stream index."""
  return {
    **schema.parse_sequence_example(tf.constant(_serialized(**overrides))),
    "index": tf.constant(index, tf.int64),
  }


def _chain(op_list, features):
  for op in op_list:
    features = op(features)
  return features


def _eager_and_mapped(op_list, features):
  """The ops applied eagerly and inside tf.data.Dataset.map; asserts they agree exactly."""
  eager = _chain(op_list, features)
  mapped = next(iter(tf.data.Dataset.from_tensors(features).map(lambda f: _chain(op_list, f))))
  assert set(eager) == set(mapped)
  for key in eager:
    np.testing.assert_array_equal(mapped[key].numpy(), eager[key].numpy(), err_msg=key)
  return {k: v.numpy() for k, v in eager.items()}


def _per_index(op_list, features, indices):
  """`_eager_and_mapped` of `features` with each stream index of `indices` (one map)."""
  eager = [_chain(op_list, {**features, "index": tf.constant(i, tf.int64)}) for i in indices]
  mapped = tf.data.Dataset.from_tensor_slices(tf.constant(indices, tf.int64)).map(
    lambda i: _chain(op_list, {**features, "index": i})
  )
  for e, m in zip(eager, mapped, strict=True):
    assert set(e) == set(m)
    for key in e:
      np.testing.assert_array_equal(m[key].numpy(), e[key].numpy(), err_msg=key)
  return [{k: v.numpy() for k, v in e.items()} for e in eager]


def _clip(train=False, seed=0, **crop):
  return [ops.Frames(4, 2, train=train, seed=seed), ops.Crop(24, train=train, seed=seed, **crop)]


def test_frames_samples_centred_in_eval_and_seeded_in_training():
  out = _eager_and_mapped([ops.Frames(4, 2)], _features())
  assert out["_frame_ids"].tolist() == EVAL_FRAMES
  assert out["_frames"].shape == (4, H, W, 3) and out["_frames"].dtype == np.uint8
  # The decoded grey level tells which stored frame each sampled frame is.
  assert np.round(out["_frames"].mean(axis=(1, 2, 3)) / 10).tolist() == EVAL_FRAMES
  starts = set()
  outs = _per_index([ops.Frames(4, 2, train=True, seed=3)], _features(), range(8))
  for index, out in enumerate(outs):
    ids = out["_frame_ids"]
    offset = tf.random.stateless_uniform([], seed=tf.constant([3 + 0, index], tf.int64))
    assert ids.tolist() == input_pipeline.sample_frame_indices(N, 4, 2, offset).numpy().tolist()
    assert np.diff(ids).tolist() == [2, 2, 2] and 0 <= ids[0] <= N - 7
    starts.add(int(ids[0]))
  assert len(starts) > 1


def test_crop_centre_square_and_seeded_random_window():
  out = _eager_and_mapped(_clip(), _features())
  assert out["_window"].tolist() == [0, 8, 48, 48]
  assert out["_frame_size"].tolist() == [H, W]
  assert out["video"].shape == (4, 24, 24, 3) and out["video"].dtype == np.float32
  np.testing.assert_allclose(
    out["video"][:, 5, 5, 0], np.array(EVAL_FRAMES) * 10 / 255, atol=2 / 255
  )
  outs = _per_index(_clip(True, 4, area=(0.3, 0.6)), _features(), range(3))
  for index, out in enumerate(outs):
    expected = video_ops.random_crop_window(
      H, W, tf.constant([4 + 1, index], tf.int64), (0.3, 0.6), (0.75, 4 / 3)
    ).numpy()
    np.testing.assert_array_equal(out["_window"], expected)
    y0, x0, h, w = out["_window"]
    assert y0 + h <= H and x0 + w <= W and 0.25 <= h * w / (H * W) <= 0.65
  # area[0] == 1 means no random crop, even in training.
  out = _eager_and_mapped(_clip(True, 4), _features(1))
  assert out["_window"].tolist() == [0, 8, 48, 48]


def test_flip_mirrors_about_half_the_clips_and_is_a_no_op_in_eval():
  base = _eager_and_mapped(_clip(), _features())
  assert "_flipped" not in _eager_and_mapped(_clip() + [ops.Flip()], _features())
  flips = []
  outs = _per_index(_clip() + [ops.Flip(train=True, seed=2)], _features(), range(8))
  for index, out in enumerate(outs):
    draw = tf.random.stateless_uniform([], seed=tf.constant([2 + 2, index], tf.int64)) < 0.5
    assert bool(out["_flipped"]) == bool(draw)
    expected = base["video"][:, :, ::-1] if out["_flipped"] else base["video"]
    np.testing.assert_array_equal(out["video"], expected)
    flips.append(bool(out["_flipped"]))
  assert any(flips) and not all(flips)


def test_normalize():
  out = _eager_and_mapped(_clip() + [ops.Normalize("imagenet")], _features())
  grey = 70 / 255
  np.testing.assert_allclose(
    out["video"][0, 3, 3],
    [(grey - 0.485) / 0.229, (grey - 0.456) / 0.224, (grey - 0.406) / 0.225],
    atol=0.05,
  )
  with pytest.raises(ValueError, match="Unknown normalization"):
    ops.Normalize("zscore")


def test_caption_first_in_eval_drawn_from_the_list_in_training():
  out = _eager_and_mapped([ops.Caption(sample=True)], _features())
  assert out["caption"] == b"a red circle"
  drawn = {
    out["caption"]
    for out in _per_index([ops.Caption(sample=True, train=True, seed=1)], _features(), range(12))
  }
  assert drawn == {b"a red circle", b"a blue square", b"a green star"}
  single = _eager_and_mapped([ops.Caption(sample=True, train=True)], _features(captions=[]))
  assert single["caption"] == b"a red circle"


def test_nouns_pad_and_trim():
  out = _eager_and_mapped([ops.Nouns(2)], _features())
  assert out["nouns"].tolist() == [b"red circle", b"blue square"]
  assert out["noun_valid"].tolist() == [1, 1]
  out = _eager_and_mapped([ops.Nouns(4)], _features())
  assert out["nouns"].tolist() == [b"red circle", b"blue square", b"green star", b""]
  assert out["noun_valid"].tolist() == [1, 1, 1, 0]


def test_noun_boxes_follow_the_crop_and_the_flip():
  out = _eager_and_mapped(_clip() + [ops.NounBoxes(4)], _features())
  # Noun 0 is object 0: rows 12..24 of 48, columns 16..32 -> 8..24 of the 48 wide window.
  np.testing.assert_allclose(out["noun_boxes"][0], [[0.25, 8 / 48, 0.5, 24 / 48]] * 4, atol=1e-6)
  assert out["noun_visible"][0].tolist() == [1, 0, 1, 1]  # hidden in frame 9
  # Noun 1 is object 2: columns 48..64 -> 40..56, clipped to the window's right edge.
  np.testing.assert_allclose(out["noun_boxes"][1], [[0.75, 40 / 48, 1.0, 1.0]] * 4, atol=1e-6)
  assert out["noun_visible"][1].tolist() == [1, 1, 1, 1]
  assert not out["noun_boxes"][2:].any() and not out["noun_visible"][2:].any()  # unknown, pad
  flipped = next(
    i
    for i in range(20)
    if tf.random.stateless_uniform([], seed=tf.constant([0 + 2, i], tf.int64)) < 0.5
  )
  out = _eager_and_mapped(_clip() + [ops.Flip(train=True), ops.NounBoxes(4)], _features(flipped))
  assert out["_flipped"]
  np.testing.assert_allclose(out["noun_boxes"][0, 0], [0.25, 24 / 48, 0.5, 40 / 48], atol=1e-6)


def test_noun_boxes_of_real_video_are_zero():
  out = _eager_and_mapped(
    _clip() + [ops.NounBoxes(2)], _features(boxes=None, visible=None, masks=None)
  )
  assert out["noun_boxes"].shape == (2, 4, 4) and not out["noun_boxes"].any()
  assert not out["noun_visible"].any()


def test_boxes_after_a_random_crop():
  clip = _clip(True, 4, area=(0.3, 0.6))
  out = _eager_and_mapped(clip + [ops.Boxes(4)], _features(2))
  y0, x0, h, w = out["_window"].astype(np.float64)
  ymin, xmin, ymax, xmax = BOXES[0]
  expected = np.clip(
    [(ymin * H - y0) / h, (xmin * W - x0) / w, (ymax * H - y0) / h, (xmax * W - x0) / w], 0, 1
  )
  np.testing.assert_allclose(out["object_boxes"][:, 0], [expected] * 4, atol=1e-5)
  assert out["object_boxes"].shape == (4, 4, 4)
  assert out["object_valid"].tolist() == [1, 1, 1, 0]
  assert not out["object_boxes"][:, 3].any() and not out["object_visible"][:, 3].any()
  out = _eager_and_mapped(_clip() + [ops.Boxes(2)], _features())
  assert out["object_boxes"].shape == (4, 2, 4) and out["object_valid"].tolist() == [1, 1]
  # Object 1 lies left of the centre window: not visible in the crop, though visible = 1.
  assert out["object_visible"].tolist() == [[1, 0], [0, 0], [1, 0], [1, 0]]


def test_masks_are_cropped_resized_nearest_and_flipped():
  out = _eager_and_mapped(_clip() + [ops.Masks(24, max_objects=3)], _features())
  masks = out["object_masks"]
  assert masks.shape == (4, 24, 24) and masks.dtype == np.int32
  # Nearest neighbour from the 48 x 48 window to 24 x 24: output (i, j) is frame pixel
  # (2i + 1, 8 + 2j + 1). Object 0 fills rows 12..23 and columns 16..31.
  assert masks[0, 6, 4] == 1 and masks[0, 11, 11] == 1
  assert masks[0, 5, 4] == 0 and masks[0, 6, 3] == 0 and masks[0, 12, 11] == 0
  assert masks[0, 18, 20] == 3  # object 2
  assert set(np.unique(masks).tolist()) == {0, 1, 3}  # object 1 is cropped away
  np.testing.assert_array_equal(masks[1:], np.repeat(masks[:1], 3, axis=0))
  capped = _eager_and_mapped(_clip() + [ops.Masks(24, max_objects=2)], _features())
  assert capped["object_masks"][0, 18, 20] == 0 and capped["object_masks"][0, 6, 4] == 1
  flipped = next(
    i
    for i in range(20)
    if tf.random.stateless_uniform([], seed=tf.constant([0 + 2, i], tf.int64)) < 0.5
  )
  out = _eager_and_mapped(_clip() + [ops.Flip(train=True), ops.Masks(24, 3)], _features(flipped))
  np.testing.assert_array_equal(out["object_masks"], masks[:, :, ::-1])
  none = _eager_and_mapped(_clip() + [ops.Masks(24, 3)], _features(masks=None))
  assert none["object_masks"].shape == (4, 24, 24) and not none["object_masks"].any()


def test_segments_in_sampled_frame_units():
  out = _eager_and_mapped([ops.Frames(4, 2), ops.Segments(4)], _features())
  # Sampled frames are stored frames [7, 9, 11, 13]. [1, 9) holds frame 7 -> [0, 1); [8, 12)
  # holds 9 and 11 -> [1, 3); [15, 16) holds none -> invalid; the fourth slot is padding.
  assert out["segments"].tolist() == [[0, 1], [1, 3], [0, 0], [0, 0]]
  assert out["segment_valid"].tolist() == [1, 1, 0, 0]
  out = _eager_and_mapped([ops.Frames(4, 2), ops.Segments(1)], _features())
  assert out["segments"].tolist() == [[0, 1]] and out["segment_valid"].tolist() == [1]
  # A clip shorter than the span repeats its last frame: [0, 1, 2, 2] for 3 stored frames.
  short = _features(
    frames=_record().frames[:3],
    boxes=None,
    visible=None,
    masks=None,
    segment_start=[2],
    segment_end=[3],
    segment_caption=["a"],
    segment_action=[0],
    segment_object=[0],
  )
  out = _eager_and_mapped([ops.Frames(4, 1), ops.Segments(2)], short)
  assert out["segments"].tolist() == [[2, 4], [0, 0]]


def test_label():
  out = _eager_and_mapped([ops.Label()], _features())
  assert out["label"] == 3 and out["label_valid"] == 1
  out = _eager_and_mapped([ops.Label()], _features(action_labels=[]))
  assert out["label"] == -1 and out["label_valid"] == 0


def test_questions_ids_out_of_vocabulary_padding_and_draws():
  vocab = ["one", "two", "three", "red"]
  q0, q1 = b"how many objects?", b"what colour is the square?"
  # S < Q: the first question in record order.
  out = _eager_and_mapped([ops.Questions(vocab, 1)], _features())
  assert out["question"].tolist() == [q0] and out["answer"].tolist() == [2]
  assert out["answer_valid"].tolist() == [1] and out["answer"].dtype == np.int32
  # S > Q: both questions, then padding. "purple" is not in the vocabulary: id -1, and the
  # question still counts (answer_valid 1).
  out = _eager_and_mapped([ops.Questions(vocab, 3)], _features())
  assert out["question"].tolist() == [q0, q1, b""]
  assert out["answer"].tolist() == [2, -1, -1] and out["answer_valid"].tolist() == [1, 1, 0]
  out = _eager_and_mapped([ops.Questions({"three": 7, "purple": 0}, 2)], _features())
  assert out["answer"].tolist() == [7, 0] and out["answer_valid"].tolist() == [1, 1]
  # Static shapes [S], inside tf.data too.
  ds = tf.data.Dataset.from_tensors(_features()).map(
    ops.Questions(vocab, 3, sample=True, train=True)
  )
  assert all(ds.element_spec[k].shape == [3] for k in ops.Questions.writes)
  # Draws without replacement: four questions, three slots; no question twice in a clip, and
  # over many stream indices every question is drawn, always with its own answer.
  questions = [f"q{i}" for i in range(4)]
  features = _features(qa_question=questions, qa_answer=["one", "two", "three", "blue"])
  expected = {b"q0": 0, b"q1": 1, b"q2": 2, b"q3": -1}
  op = ops.Questions(vocab, 3, sample=True, train=True, seed=5)
  drawn, orders = set(), set()
  for out in _per_index([op], features, range(24)):
    picked = out["question"].tolist()
    assert len(set(picked)) == 3 and out["answer_valid"].tolist() == [1, 1, 1]
    assert out["answer"].tolist() == [expected[q] for q in picked]
    drawn.update(picked)
    orders.add(tuple(picked))
  assert drawn == set(expected) and len(orders) > 1
  # S > Q when sampling: a permutation of both questions, then padding.
  for out in _per_index([ops.Questions(vocab, 3, sample=True, train=True)], _features(), range(8)):
    assert sorted(out["question"].tolist()[:2]) == [q0, q1] and out["question"][2] == b""
    assert out["answer_valid"].tolist() == [1, 1, 0]
  # Same seed and index, same draw; sample without train is the first questions.
  first_draw, again = (_per_index([op], features, [3])[0]["question"] for _ in range(2))
  np.testing.assert_array_equal(first_draw, again)
  out = _eager_and_mapped([ops.Questions(vocab, 2, sample=True)], features)
  assert out["question"].tolist() == [b"q0", b"q1"]
  # A record without QA: all padding.
  out = _eager_and_mapped(
    [ops.Questions(vocab, 2, sample=True, train=True)], _features(qa_question=[], qa_answer=[])
  )
  assert out["question"].tolist() == [b"", b""]
  assert out["answer"].tolist() == [-1, -1] and out["answer_valid"].tolist() == [0, 0]
  assert ops.Questions({"a": 4, "b": 1}, 1).vocab_size == 5
  with pytest.raises(ValueError, match="repeats"):
    ops.Questions(["one", "one"], 2)
  with pytest.raises(ValueError, match="num_questions"):
    ops.Questions(vocab, 0)
  with pytest.raises(ValueError, match="empty"):
    ops.Questions([], 1)
  with pytest.raises(ValueError, match=">= 0"):
    ops.Questions({"a": -1}, 1)


def test_caption_id_hashes_the_caption_before_a_draw():
  features = _features(1)
  out = _eager_and_mapped([ops.CaptionId(), ops.Caption(sample=True, train=True)], features)
  expected = tf.strings.to_hash_bucket_fast("a red circle", 2**31 - 1).numpy()
  assert out["caption_id"] == expected and out["caption_id"].dtype == np.int32


def test_apply_example_ops_keeps_only_what_the_ops_ask_for():
  example_ops = _clip() + [ops.Caption(), ops.Label(), ops.Keep("video_id", "fps")]
  features = _features(5)
  record = {k: v for k, v in features.items() if k != "index"}
  out = ops.apply_example_ops(example_ops, record, features["index"])
  assert set(out) == {"index", "video", "caption", "label", "label_valid", "video_id", "fps"}
  assert out["index"].dtype == tf.int32 and int(out["index"]) == 5
  assert out["video_id"] == b"v0" and out["caption"] == b"a red circle"
  assert ops.needs_annotations([ops.Frames(2), ops.Masks(8, 2)])
  assert not ops.needs_annotations(example_ops)
  with pytest.raises(KeyError, match="run Frames first"):
    ops.Crop(8)(features)


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("tokenizer") / "t.model")
  texts = [
    "a red circle",
    "a blue square",
    "a green star",
    "a video of a red circle",
    "how many objects?",
    "what colour is the square?",
  ] * 4
  return tokenizer_lib.Tokenizer(tokenizer_lib.train_tokenizer(texts, path, vocab_size=60))


def test_tokenize_batches_with_the_prompt(tokenizer):
  batch = {
    "caption": tf.constant(["a red circle", "a green star"]),
    "nouns": tf.constant([["red circle", ""], ["blue square", "green star"]]),
    "index": tf.constant([0, 1]),
  }
  batch_ops = [
    ops.Tokenize(tokenizer, "caption", 8, name="text"),
    ops.Tokenize(tokenizer, "nouns", 10, name="noun", prompt="a video of a {}"),
  ]
  out = _eager_and_mapped(batch_ops, batch)
  assert set(out) == {"index", "text_tokens", "text_mask", "noun_tokens", "noun_mask"}
  tokens, mask = tokenizer.encode(["a red circle", "a green star"], 8)
  np.testing.assert_array_equal(out["text_tokens"], tokens)
  np.testing.assert_array_equal(out["text_mask"], mask)
  prompted = [
    "a video of a red circle",
    "a video of a ",
    "a video of a blue square",
    "a video of a green star",
  ]
  tokens, mask = tokenizer.encode(prompted, 10)
  assert out["noun_tokens"].shape == (2, 2, 10) and out["noun_tokens"].dtype == np.int32
  np.testing.assert_array_equal(out["noun_tokens"].reshape(4, 10), tokens)
  np.testing.assert_array_equal(out["noun_mask"].reshape(4, 10), mask)
  assert out["text_tokens"][0, 0] == tokenizer.cls_id


def test_make_dataset_from_ops_composes_every_op_and_pads_the_last_batch(tokenizer, tmp_path):
  path = str(tmp_path / "val-00000.tfrecord")
  with tf.io.TFRecordWriter(path) as writer:
    writer.write(_serialized())
    writer.write(
      _serialized(video_id="v1", action_labels=[], qa_question=["q"], qa_answer=["purple"])
    )
    writer.write(_serialized(video_id="v2", boxes=None, visible=None, masks=None))
  example_ops = _clip() + [
    ops.Normalize(),
    ops.Caption(),
    ops.Label(),
    ops.Segments(3),
    ops.Questions(["three", "two"], 2),
    ops.Boxes(3),
    ops.Masks(24, 3),
  ]
  batch_ops = [
    ops.Tokenize(tokenizer, "caption", 8, name="text"),
    ops.Tokenize(tokenizer, "question", 8),
  ]
  ds = input_pipeline.make_dataset_from_ops(
    [path], example_ops=example_ops, batch_ops=batch_ops, batch_size=2, train=False
  )
  batches = list(input_pipeline.as_numpy(ds))
  assert len(batches) == 2
  first, last = batches
  assert set(first) == {
    "video",
    "text_tokens",
    "text_mask",
    "label",
    "label_valid",
    "segments",
    "segment_valid",
    "question_tokens",
    "question_mask",
    "answer",
    "answer_valid",
    "object_boxes",
    "object_visible",
    "object_valid",
    "object_masks",
    "index",
    "valid",
  }
  assert first["video"].shape == (2, 4, 24, 24, 3)
  assert first["label"].tolist() == [3, -1] and first["label_valid"].tolist() == [1, 0]
  # Clip 0: "three" (id 0) and "purple" (out of vocabulary); clip 1: one question, then padding.
  assert first["answer"].tolist() == [[0, -1], [-1, -1]]
  assert first["answer_valid"].tolist() == [[1, 1], [1, 0]]
  assert first["answer"].dtype == np.int32 and first["answer_valid"].dtype == np.int32
  assert first["question_tokens"].shape == first["question_mask"].shape == (2, 2, 8)
  tokens, mask = tokenizer.encode(["how many objects?", "what colour is the square?", "q", ""], 8)
  np.testing.assert_array_equal(first["question_tokens"].reshape(4, 8), tokens)
  np.testing.assert_array_equal(first["question_mask"].reshape(4, 8), mask)
  assert first["segments"][0].tolist() == [[0, 1], [1, 3], [0, 0]]
  assert first["object_masks"][0, 0, 6, 4] == 1
  # Three clips in batches of 2: the last batch repeats clip 2 as padding (valid 0).
  assert last["index"].tolist() == [2, 2] and last["valid"].tolist() == [1, 0]
  assert not last["object_valid"].any() and not last["object_masks"].any()
  # The map gives what the ops give eagerly.
  eager = _chain(example_ops, _features(0))
  np.testing.assert_array_equal(first["video"][0], eager["video"].numpy())
  np.testing.assert_array_equal(first["object_boxes"][0], eager["object_boxes"].numpy())


def _coded_frames(num: int, height: int, width: int) -> list[bytes]:
  """JPEG frames whose red channel is 10 x the frame's index and green 20 x the column."""
  frames = np.zeros((num, height, width, 3), np.uint8)
  frames[..., 0] = (10 * np.arange(num))[:, None, None]
  frames[..., 1] = (20 * np.arange(width))[None, None, :]
  return [tf.io.encode_jpeg(f, quality=100).numpy() for f in frames]


def test_views_spread_clips_over_time_and_crops_along_the_long_side():
  op = ops.Views(num_frames=4, num_clips=3, num_crops=3, resolution=4, crop_fraction=0.5)
  video = op({"frames": tf.constant(_coded_frames(16, 8, 12))})["video"].numpy() * 255
  assert video.shape == (9, 4, 4, 4, 3) and op.center_view == 3
  # Starts floor((i + 0.5) / 3 * 13) of the 13 valid starts: frames 2-5, 6-9, 10-13.
  frame_ids = np.round(video[:, :, 0, 0, 0] / 10)
  np.testing.assert_array_equal(frame_ids[::3], [[2, 3, 4, 5], [6, 7, 8, 9], [10, 11, 12, 13]])
  # 4-pixel squares of the 8 x 12 frame: centre columns 4-7, then the ends 0-3 and 8-11.
  columns = np.round(video[:3, 0, 0, :, 1] / 20)
  np.testing.assert_array_equal(columns, [[4, 5, 6, 7], [0, 1, 2, 3], [8, 9, 10, 11]])
  # A square frame's three crops are the centre and two corners, so they still differ.
  square = ops.Views(num_frames=2, num_crops=3, resolution=4, crop_fraction=0.5)
  video = square({"frames": tf.constant(_coded_frames(2, 8, 8))})["video"].numpy() * 255
  np.testing.assert_array_equal(
    np.round(video[:, 0, 0, :, 1] / 20), [[2, 3, 4, 5], [0, 1, 2, 3], [4, 5, 6, 7]]
  )
  with pytest.raises(ValueError, match="num_crops 1 or 3"):
    ops.Views(num_frames=4, num_crops=2)


def test_a_single_view_is_what_evaluation_sees():
  frames = tf.constant(_coded_frames(16, 8, 12))
  single = ops.Views(num_frames=4, resolution=8)({"frames": frames, "index": 0})["video"][0]
  clip = _chain([ops.Frames(4), ops.Crop(8)], {"frames": frames, "index": 0})["video"]
  np.testing.assert_array_equal(single.numpy(), clip.numpy())
