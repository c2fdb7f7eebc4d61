"""Tests for svilm.losses against hand-computed numbers."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from svilm import losses


# ----------------------------------------------------------------- contrastive
def test_contrastive_loss_hand_example():
  video = jnp.array([[1.0, 0.0], [0.0, 1.0]])
  text = jnp.array([[1.0, 0.0], [0.6, 0.8]])
  # logits = v @ t.T = [[1, 0.6], [0, 0.8]] (scale 1).
  # v2t rows:   log(1 + e^-0.4) = 0.513015, log(1 + e^-0.8) = 0.371101
  #             mean 0.442058
  # t2v columns: log(1 + e^-1)  = 0.313262, log(1 + e^-0.2) = 0.598139
  #             mean 0.455700
  # loss = (0.442058 + 0.455700) / 2 = 0.448879
  loss, metrics = losses.contrastive_loss(video, text, 1.0)
  np.testing.assert_allclose(loss, 0.448879, atol=1e-5)
  # Row 0 argmax 0, row 1 argmax 1; column 0 argmax 0, column 1 argmax 1.
  assert float(metrics["v2t_accuracy"]) == 1.0
  assert float(metrics["t2v_accuracy"]) == 1.0


def test_contrastive_loss_symmetric_and_accuracy():
  rng = np.random.default_rng(0)
  v = rng.normal(size=(5, 4))
  t = rng.normal(size=(5, 4))
  v /= np.linalg.norm(v, axis=1, keepdims=True)
  t /= np.linalg.norm(t, axis=1, keepdims=True)
  a, _ = losses.contrastive_loss(jnp.array(v), jnp.array(t), 3.0)
  b, _ = losses.contrastive_loss(jnp.array(t), jnp.array(v), 3.0)
  np.testing.assert_allclose(a, b, rtol=1e-6)
  # Swapping captions 0 and 1 makes clips 0 and 1 (and captions 0, 1) wrong.
  _, metrics = losses.contrastive_loss(jnp.eye(3), jnp.eye(3)[jnp.array([1, 0, 2])], 1.0)
  np.testing.assert_allclose(metrics["v2t_accuracy"], 1 / 3, rtol=1e-6)
  np.testing.assert_allclose(metrics["t2v_accuracy"], 1 / 3, rtol=1e-6)


def test_contrastive_loss_perfect_alignment_large_scale():
  emb = jnp.eye(4)
  loss, _ = losses.contrastive_loss(emb, emb, 100.0)
  # Each CE = log(1 + 3 e^-100), about 1e-43.
  assert float(loss) < 1e-6


def test_contrastive_loss_jit_and_grad_finite():
  v = jax.random.normal(jax.random.key(0), (4, 8))
  t = jax.random.normal(jax.random.key(1), (4, 8))
  grad = jax.jit(jax.grad(lambda v, t, s: losses.contrastive_loss(v, t, s)[0], argnums=(0, 1, 2)))
  for g in grad(v, t, 10.0):
    assert np.all(np.isfinite(g))


# --------------------------------------------------------------- cut and paste
def _tagged_video(batch, frames):
  # Value 100 * b + t everywhere in frame t of clip b: the source is readable.
  tags = 100 * np.arange(batch)[:, None] + np.arange(frames)[None, :]
  return jnp.asarray(
    np.broadcast_to(tags[:, :, None, None, None], (batch, frames, 2, 2, 3)).astype(np.float32)
  )


def test_cut_and_paste_structure():
  batch, frames, positions = 4, 8, 4
  video = _tagged_video(batch, frames)
  fn = jax.jit(losses.cut_and_paste, static_argnums=(2, 3, 4))
  seen_bg, seen_len = set(), set()
  for seed in range(40):
    mixed, mask, background = fn(jax.random.key(seed), video, positions, 1, 3)
    mixed, mask = np.asarray(mixed), np.asarray(mask)
    assert mask.shape == (batch, positions) and mask.dtype == np.float32
    for i in range(batch):
      ones = np.flatnonzero(mask[i])
      # One contiguous run of ones, length in [1, 3], at least one zero.
      assert 1 <= len(ones) <= 3 and ones[-1] - ones[0] + 1 == len(ones)
      seen_len.add(len(ones))
      frame_fg = np.repeat(mask[i], frames // positions).astype(bool)
      src = mixed[i, :, 0, 0, 0] // 100  # which clip each frame came from
      np.testing.assert_array_equal(mixed[i, :, 0, 0, 0] % 100, np.arange(frames))
      assert np.all(src[frame_fg] == i)
      backgrounds = set(src[~frame_fg].tolist())
      assert len(backgrounds) == 1 and i not in backgrounds
      assert backgrounds == {int(background[i])}  # the returned source is the real one
      seen_bg.add((i, backgrounds.pop()))
  # Every other clip is used as background and every span length occurs.
  assert seen_bg == {(i, j) for i in range(4) for j in range(4) if i != j}
  assert seen_len == {1, 2, 3}


def test_cut_and_paste_deterministic():
  video = _tagged_video(3, 6)
  a = losses.cut_and_paste(jax.random.key(7), video, 3, 1, 2)
  b = losses.cut_and_paste(jax.random.key(7), video, 3, 1, 2)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize(
  "batch,frames,positions,lo,hi,match",
  [
    (1, 8, 4, 1, 2, "batch of 1"),
    (2, 7, 4, 1, 2, "T=7"),
    (2, 8, 4, 0, 2, "min_span=0"),
    (2, 8, 4, 3, 2, "min_span=3"),
    (2, 8, 4, 1, 4, "max_span=4"),
  ],
)
def test_cut_and_paste_errors(batch, frames, positions, lo, hi, match):
  with pytest.raises(ValueError, match=match):
    losses.cut_and_paste(jax.random.key(0), _tagged_video(batch, frames), positions, lo, hi)


# ----------------------------------------------------------- temporal grouping
_Z = jnp.array([[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]])  # [1, 3, 2]
_M = jnp.array([[1.0, 0.0, 0.0]])
# f = (1, 0); b = mean((0, 1), (1, 1)) = (0.5, 1), |b| = sqrt(1.25).
# d^k = cos(z^k, f) - cos(z^k, b) at tau = 1:
#   d0 = 1 - 0.5/1.118034            =  0.552786 -> p0 = 0.634782
#   d1 = 0 - 1/1.118034              = -0.894427 -> p1 = 0.290197
#   d2 = 0.707107 - 1.5/1.581139     = -0.241577 -> p2 = 0.439898
_P = np.array([0.634782, 0.290197, 0.439898])


def test_temporal_grouping_mse_hand_example():
  loss = losses.temporal_grouping_loss(_Z, _M, temperature=1.0, kind="mse")
  # ((1 - 0.634782)^2 + 0.290197^2 + 0.439898^2) / 3 = 0.137036
  np.testing.assert_allclose(loss, 0.137036, atol=1e-5)
  np.testing.assert_allclose(loss, np.mean((_P - [1, 0, 0]) ** 2), atol=1e-5)


def test_temporal_grouping_bce_hand_example():
  loss = losses.temporal_grouping_loss(_Z, _M, temperature=1.0, kind="bce")
  # (-log 0.634782 - log(1 - 0.290197) - log(1 - 0.439898)) / 3 = 0.458959
  np.testing.assert_allclose(loss, 0.458959, atol=1e-5)


def test_temporal_grouping_perfect_separation():
  z = jnp.array([[[1.0, 0.0], [2.0, 0.0], [0.0, 1.0], [0.0, 3.0]]])
  m = jnp.array([[1.0, 1.0, 0.0, 0.0]])
  # d = +-1 / 0.01 = +-100: p is 0 or 1 to within e^-100.
  for kind in ("mse", "bce"):
    assert float(losses.temporal_grouping_loss(z, m, 0.01, kind)) < 1e-6


def test_temporal_grouping_empty_set_finite_and_bad_kind():
  z = jax.random.normal(jax.random.key(0), (2, 4, 3))
  m = jnp.array([[1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0]])
  grads = jax.jit(jax.grad(losses.temporal_grouping_loss))(z, m)
  assert np.all(np.isfinite(grads))
  with pytest.raises(ValueError, match="hinge"):
    losses.temporal_grouping_loss(z, m, kind="hinge")


def test_temporal_grouping_grad_finite_under_jit():
  z = jax.random.normal(jax.random.key(0), (3, 4, 5))
  m = jnp.array([[1.0, 0, 0, 0], [0, 1, 1, 0], [0, 0, 1, 1]])
  for kind in ("mse", "bce"):
    fn = jax.jit(jax.value_and_grad(losses.temporal_grouping_loss), static_argnames="kind")
    value, grads = fn(z, m, kind=kind)
    assert np.isfinite(value) and np.all(np.isfinite(grads))


# ----------------------------------------------------------- spatial grounding
# Clip 0 groups: (1, 0), (0, 1). Clip 1 groups: (0.8, 0.6) twice.
_GROUPS = jnp.array([[[1.0, 0.0], [0.0, 1.0]], [[0.8, 0.6], [0.8, 0.6]]])
# Caption 0: noun (1, 0) and a padded noun; caption 1: nouns (0, 1), (.8, .6).
_NOUNS = jnp.array([[[1.0, 0.0], [0.0, 1.0]], [[0.0, 1.0], [0.8, 0.6]]])
_VALID = jnp.array([[1, 0], [1, 1]])


def test_spatial_grounding_hand_example():
  # assign_temperature 1, logit_scale 2; e/(e+1) = 0.731059.
  # noun (1,0):  s(clip0) = 0.731059, s(clip1) = 0.8 (uniform a)
  #   CE target 0 = log(1 + e^{2(0.8 - 0.731059)})      = 0.764463 (wrong)
  # noun (0,1):  s(clip0) = 0.731059, s(clip1) = 0.6
  #   CE target 1 = log(1 + e^{2(0.731059 - 0.6)})      = 0.832769 (wrong)
  # noun (.8,.6): cos clip0 = (0.8, 0.6), a = (sig(0.2), 1 - sig(0.2))
  #   = (0.549834, 0.450166) -> s = 0.709967; s(clip1) = 1.0
  #   CE target 1 = log(1 + e^{2(0.709967 - 1)})        = 0.444597 (right)
  # loss = (0.764463 + 0.832769 + 0.444597) / 3 = 0.680610
  loss, metrics = losses.spatial_grounding_loss(
    _NOUNS, _VALID, _GROUPS, assign_temperature=1.0, logit_scale=2.0
  )
  np.testing.assert_allclose(loss, 0.680610, atol=1e-5)
  np.testing.assert_allclose(metrics["noun_accuracy"], 1 / 3, rtol=1e-6)
  assert float(metrics["num_valid_nouns"]) == 3


def test_spatial_grounding_excluded_pairs_leave_the_softmax():
  # Caption 0 x clip 1 excluded: noun (1, 0) of caption 0 has only its own clip left, CE 0
  # (and it is right); caption 1's nouns are unchanged (0.832769 wrong, 0.444597 right).
  # loss = (0 + 0.832769 + 0.444597) / 3 = 0.425789. The diagonal is never excluded.
  exclude = jnp.array([[True, True], [False, True]])
  loss, metrics = losses.spatial_grounding_loss(_NOUNS, _VALID, _GROUPS, 1.0, 2.0, exclude=exclude)
  np.testing.assert_allclose(loss, 0.425789, atol=1e-5)
  np.testing.assert_allclose(metrics["noun_accuracy"], 2 / 3, rtol=1e-6)
  grads = jax.grad(
    lambda n: losses.spatial_grounding_loss(n, _VALID, _GROUPS, 1.0, 2.0, exclude=exclude)[0]
  )(_NOUNS)
  assert np.all(np.isfinite(grads))


def test_background_exclusions_are_exactly_the_clips_pasted_on_the_nouns_clip():
  # On tagged clips the background source of every mixed clip can be read off its frames:
  # the mask must hold exactly the (i, j) with clip j's background frames from clip i.
  batch, frames, positions = 6, 8, 4
  video = _tagged_video(batch, frames)
  for seed in range(10):
    mixed, mask, background = losses.cut_and_paste(jax.random.key(seed), video, positions, 1, 3)
    src = (np.asarray(mixed)[:, :, 0, 0, 0] // 100).astype(int)  # [B, T] source of each frame
    frame_fg = np.repeat(np.asarray(mask), frames // positions, axis=1).astype(bool)
    read = np.zeros((batch, batch), bool)
    for j in range(batch):
      for i in set(src[j][~frame_fg[j]].tolist()):
        read[i, j] = True
    np.testing.assert_array_equal(losses.background_exclusions(background), read)
    assert read.sum() == batch and not np.any(np.diag(read))  # one background each, never own


def test_local_cut_and_paste_stays_on_each_device():
  # 16 clips over 8 fake devices, 2 per device: local backgrounds come from the device's other
  # clip, and the compiled step moves no video between devices (no all-gather), while the
  # global draw does gather.
  from jax.sharding import NamedSharding
  from jax.sharding import PartitionSpec as P

  from svilm import sharding

  mesh = jax.make_mesh(
    (8, 1, 1), ("data", "fsdp", "model"), axis_types=(jax.sharding.AxisType.Auto,) * 3
  )  # as sharding.make_mesh builds it
  batch, frames, positions = 16, 8, 4
  video = jax.device_put(_tagged_video(batch, frames), NamedSharding(mesh, P(("data", "fsdp"))))

  def cut(rng, clips, local):
    groups = sharding.traced_batch_shards() if local else 1
    return losses.cut_and_paste(rng, clips, positions, 1, 3, num_groups=groups)

  for local in (True, False):
    fn = jax.jit(functools.partial(cut, local=local))
    with jax.set_mesh(mesh):
      hlo = fn.lower(jax.random.key(0), video).compile().as_text()
      for seed in range(10):
        mixed, mask, background = fn(jax.random.key(seed), video)
        src = np.asarray(mixed)[:, :, 0, 0, 0] // 100
        device_of = lambda clip: clip // 2
        if local:
          np.testing.assert_array_equal(
            device_of(np.asarray(background)), device_of(np.arange(batch))
          )
          assert np.all(device_of(src) == device_of(np.arange(batch))[:, None])
    assert ("all-gather" in hlo) == (not local), local


def test_spatial_grounding_padded_noun_ignored():
  # Changing the padded noun's embedding changes nothing.
  other = _NOUNS.at[0, 1].set(jnp.array([0.6, 0.8]))
  a, _ = losses.spatial_grounding_loss(_NOUNS, _VALID, _GROUPS, 1.0, 2.0)
  b, _ = losses.spatial_grounding_loss(other, _VALID, _GROUPS, 1.0, 2.0)
  np.testing.assert_allclose(a, b, rtol=1e-7)


def test_spatial_grounding_all_padded_zero_with_finite_grad():
  valid = jnp.zeros((2, 2))
  fn = jax.jit(
    jax.value_and_grad(
      lambda n, g: losses.spatial_grounding_loss(n, valid, g, 0.1, 10.0)[0], argnums=(0, 1)
    )
  )
  value, grads = fn(_NOUNS, _GROUPS)
  assert float(value) == 0.0
  for g in grads:
    assert np.all(np.isfinite(g)) and np.all(g == 0)


def test_spatial_grounding_grad_finite_random():
  k1, k2 = jax.random.split(jax.random.key(3))
  n = jax.random.normal(k1, (3, 2, 6))
  g = jax.random.normal(k2, (3, 5, 6))
  n /= jnp.linalg.norm(n, axis=-1, keepdims=True)
  g /= jnp.linalg.norm(g, axis=-1, keepdims=True)
  valid = jnp.array([[1, 1], [1, 0], [0, 1]])
  grads = jax.jit(
    jax.grad(lambda n, g: losses.spatial_grounding_loss(n, valid, g, 0.05, 10.0)[0], argnums=(0, 1))
  )(n, g)
  for x in grads:
    assert np.all(np.isfinite(x))


# ------------------------------------------------------------------ total loss
def test_total_loss():
  terms = {"contrastive": 1.5, "temporal_grouping": 0.5, "spatial_grounding": 2.0}
  # 1.5 * 1 (default weight) + 0.5 * 2 + 2.0 * 0.25 = 3.0
  total = losses.total_loss(terms, {"temporal_grouping": 2.0, "spatial_grounding": 0.25})
  assert total == pytest.approx(3.0)
  # A zero weight for a disabled (absent) term is fine; a nonzero one is not.
  assert losses.total_loss({"contrastive": 1.5}, {"spatial_grounding": 0.0}) == pytest.approx(1.5)
  with pytest.raises(ValueError, match="spatial_grouding"):
    losses.total_loss(terms, {"spatial_grouding": 1.0})


def test_masked_classification_loss_skips_invalid_entries():
  logits = jnp.log(jnp.array([[0.5, 0.25, 0.25], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6]]))
  labels = jnp.array([0, 2, -1])  # the last one is invalid (e.g. out of vocabulary)
  valid = jnp.array([True, True, False])
  loss, accuracy = losses.masked_classification_loss(logits, labels, valid)
  np.testing.assert_allclose(loss, (-np.log(0.5) - np.log(0.1)) / 2, rtol=1e-6)
  assert float(accuracy) == 0.5  # right on the first, wrong on the second
  loss, accuracy = losses.masked_classification_loss(logits, labels, jnp.zeros(3, bool))
  assert float(loss) == 0.0 and float(accuracy) == 0.0
