"""Tests for svilm/param_mapping.py: checkpoint params mapped into a new model's tree."""

from __future__ import annotations

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from svilm import param_mapping

D = 8


def _normal(rng, *shape, dtype=np.float32):
  return rng.normal(size=shape).astype(dtype)


def _interp_axis(x: np.ndarray, axis: int, n_out: int) -> np.ndarray:
  """Linear resampling of one axis with np.interp, written independently of the module.

  Half-pixel centres: output sample i sits at input coordinate (i + 0.5) * n_in / n_out - 0.5
  (input sample j at coordinate j); np.interp holds the edge values beyond [0, n_in - 1].
  """
  n_in = x.shape[axis]
  coords = (np.arange(n_out) + 0.5) * n_in / n_out - 0.5
  return np.apply_along_axis(
    lambda v: np.interp(coords, np.arange(n_in), v), axis, x.astype(np.float64)
  )


def _reference_resize(x: np.ndarray, out_shape) -> np.ndarray:
  for axis, n_out in enumerate(out_shape):
    x = _interp_axis(x, axis, n_out)
  return x


def _reference_joint(table: np.ndarray, source_grid, target_grid) -> np.ndarray:
  grid = table.reshape(*source_grid, table.shape[-1])
  return _reference_resize(grid, target_grid).reshape(-1, table.shape[-1])


def _trees(
  rng, source_grid=(2, 2, 2), target_grid=(2, 2, 2), source_len=6, target_len=6, kind="joint"
):
  """Small random (source, target) param trees shaped like SViLM's, with fresh targets."""

  def tree(grid, length):
    n_t, h_p, w_p = grid
    if kind == "joint":
      pos = {"joint": _normal(rng, n_t * h_p * w_p, D)}
    else:
      pos = {"temporal": _normal(rng, n_t, D), "spatial": _normal(rng, h_p * w_p, D)}
    return {
      "video_encoder": {
        "embedding": {"conv": {"kernel": _normal(rng, 2, 4, 4, 3, D), "bias": _normal(rng, D)}},
        "pos_embedding": pos,
        "block_1": {"ln_attn": {"scale": _normal(rng, D), "bias": _normal(rng, D)}},
      },
      "text_encoder": {
        "position_embeddings": _normal(rng, length, D),
        "word_embeddings": {"embedding": _normal(rng, 10, D)},
      },
      "video_proj": {"kernel": _normal(rng, D, 4)},
      "text_proj": {"kernel": _normal(rng, D, 4)},
      "log_logit_scale": np.float32(rng.normal()).reshape(()),
    }

  return tree(source_grid, source_len), tree(target_grid, target_len)


MAPPING = {
  "video_encoder": "video_encoder",
  "text_encoder": "text_encoder",
  "video_proj": "video_proj",
}
flat = param_mapping.flatten


# --- flatten / unflatten ---------------------------------------------------------------------


def test_flatten_unflatten_round_trip():
  tree = {"a": {"b": np.zeros(2), "c": {"d": np.ones(3)}}, "e": np.float32(1), "empty": {}}
  flat_tree = flat(tree)
  assert list(flat_tree) == ["a/b", "a/c/d", "e"]
  back = param_mapping.unflatten(flat_tree)
  assert back == {"a": {"b": tree["a"]["b"], "c": {"d": tree["a"]["c"]["d"]}}, "e": tree["e"]}


def test_flatten_unboxes_and_rejects_ambiguous_keys():
  boxed = {"w": flax.linen.LogicallyPartitioned(np.ones(3), ("embed",))}
  assert isinstance(flat(boxed)["w"], np.ndarray)
  with pytest.raises(ValueError, match="a/b"):
    flat({"a/b": np.zeros(1)})
  with pytest.raises(ValueError, match="leaf"):
    param_mapping.unflatten({"a": 1, "a/b": 2})


# --- loading, initialising, unused ------------------------------------------------------------


def test_loaded_initialised_and_unused():
  rng = np.random.default_rng(0)
  source, target = _trees(rng)
  source["video_encoder"]["extra"] = {"kernel": _normal(rng, 3, 3)}  # Not in the target.
  params, report = param_mapping.map_params(source, target, MAPPING)
  src, tgt, out = flat(source), flat(target), flat(params)
  assert list(out) == list(tgt)  # Same structure and order.
  for path, leaf in out.items():
    assert leaf.shape == tgt[path].shape and leaf.dtype == tgt[path].dtype
    mapped = path.split("/")[0] in MAPPING
    np.testing.assert_array_equal(leaf, src[path] if mapped else tgt[path])
    status = param_mapping.LOADED if mapped else param_mapping.INITIALISED
    assert report.leaves[path].status == status
    assert report.leaves[path].source == (path if mapped else None)
  assert report.paths(param_mapping.INITIALISED) == ["text_proj/kernel", "log_logit_scale"]
  assert report.unused == {
    "log_logit_scale": (),
    "text_proj/kernel": (D, 4),
    "video_encoder/extra/kernel": (3, 3),
  }
  totals = report.totals()
  assert totals[param_mapping.INITIALISED] == (2, D * 4 + 1)
  assert totals["unused"] == (3, 1 + D * 4 + 9)
  assert totals[param_mapping.RESAMPLED] == (0, 0)


def test_an_optional_subtree_is_taken_only_when_the_checkpoint_has_it():
  rng = np.random.default_rng(0)
  source, target = _trees(rng)
  mapping = {"video_encoder": "video_encoder", "?text_proj": "text_proj"}
  params, report = param_mapping.map_params(source, target, mapping)
  np.testing.assert_array_equal(params["text_proj"]["kernel"], source["text_proj"]["kernel"])
  assert report.leaves["text_proj/kernel"].status == param_mapping.LOADED
  del source["text_proj"]  # a checkpoint without it (a pretraining run, for a task head)
  params, report = param_mapping.map_params(source, target, mapping)
  np.testing.assert_array_equal(params["text_proj"]["kernel"], target["text_proj"]["kernel"])
  assert report.leaves["text_proj/kernel"].status == param_mapping.INITIALISED
  with pytest.raises(param_mapping.MappingError, match="'text_proj' is not in the source"):
    param_mapping.map_params(source, target, {"text_proj": "text_proj"})


def test_inputs_untouched_and_outputs_are_fresh_copies():
  rng = np.random.default_rng(1)
  source, target = _trees(rng, target_grid=(4, 2, 2), target_len=9)
  before = {
    k: v.copy()
    for k, v in {**flat(source), **{"T/" + p: v for p, v in flat(target).items()}}.items()
  }
  params, _ = param_mapping.map_params(
    source, target, MAPPING, source_grid=(2, 2, 2), target_grid=(4, 2, 2)
  )
  for leaf in flat(params).values():
    leaf += 1.0  # Must not write through to the inputs.
  after = {**flat(source), **{"T/" + p: v for p, v in flat(target).items()}}
  for path, value in before.items():
    np.testing.assert_array_equal(after[path], value, err_msg=path)


def test_renamed_subtree_single_leaf_and_whole_tree():
  rng = np.random.default_rng(2)
  source, target = _trees(rng)
  renamed = {"encoder": source["video_encoder"], "scale": source["log_logit_scale"]}
  params, report = param_mapping.map_params(
    renamed, target, {"encoder": "video_encoder", "scale": "log_logit_scale"}
  )
  np.testing.assert_array_equal(params["log_logit_scale"], source["log_logit_scale"])
  np.testing.assert_array_equal(
    params["video_encoder"]["block_1"]["ln_attn"]["scale"],
    source["video_encoder"]["block_1"]["ln_attn"]["scale"],
  )
  assert report.leaves["video_encoder/pos_embedding/joint"].source == (
    "encoder/pos_embedding/joint"
  )
  assert report.unused == {}
  # "" maps the whole tree.
  params, report = param_mapping.map_params(source, target, {"": ""})
  assert report.paths(param_mapping.LOADED) == list(flat(target))
  for path, leaf in flat(params).items():
    np.testing.assert_array_equal(leaf, flat(source)[path])


def test_dtype_follows_target():
  rng = np.random.default_rng(3)
  source, target = _trees(rng)
  source = jax.tree.map(lambda x: np.asarray(x, np.float64), source)
  source["video_proj"]["kernel"] = jnp.asarray(source["video_proj"]["kernel"], jnp.bfloat16)
  params, _ = param_mapping.map_params(source, target, MAPPING)
  for path, leaf in flat(params).items():
    assert isinstance(leaf, np.ndarray) and leaf.dtype == np.float32, path
  np.testing.assert_array_equal(
    params["video_proj"]["kernel"], np.asarray(source["video_proj"]["kernel"]).astype(np.float32)
  )


# --- video position tables --------------------------------------------------------------------

GRID_PAIRS = [
  ((4, 4, 4), (2, 2, 2)),  # Downsampling every axis (8 frames, 64 px -> 4 frames, 32 px).
  ((2, 2, 2), (4, 6, 3)),  # Upsampling, non-integer factor on w.
  ((3, 2, 5), (1, 4, 2)),  # Mixed, one axis down to a single sample.
  ((2, 4, 4), (4, 2, 4)),  # Same number of rows, different grid: still resampled.
]


@pytest.mark.parametrize("source_grid,target_grid", GRID_PAIRS)
def test_joint_table_matches_independent_interpolation(source_grid, target_grid):
  rng = np.random.default_rng(4)
  source, target = _trees(rng, source_grid, target_grid)
  params, report = param_mapping.map_params(
    source, target, MAPPING, source_grid=source_grid, target_grid=target_grid
  )
  table = source["video_encoder"]["pos_embedding"]["joint"]
  got = params["video_encoder"]["pos_embedding"]["joint"]
  assert got.shape == (np.prod(target_grid), D) and got.dtype == np.float32
  np.testing.assert_allclose(
    got, _reference_joint(table, source_grid, target_grid), rtol=0, atol=1e-6
  )
  # The same as jax.image.resize(method="linear", antialias=False).
  jax_resized = jax.image.resize(
    jnp.asarray(table).reshape(*source_grid, D), (*target_grid, D), "linear", antialias=False
  )
  np.testing.assert_allclose(got, np.asarray(jax_resized).reshape(-1, D), rtol=0, atol=1e-6)
  leaf = report.leaves["video_encoder/pos_embedding/joint"]
  assert leaf.status == param_mapping.RESAMPLED
  assert leaf.source_shape == table.shape and leaf.shape == got.shape
  assert str(source_grid) in leaf.detail and str(target_grid) in leaf.detail


@pytest.mark.parametrize("kind", ["joint", "factorised"])
def test_equal_grids_copy_tables_exactly(kind):
  rng = np.random.default_rng(5)
  source, target = _trees(rng, (2, 3, 4), (2, 3, 4), kind=kind)
  for grids in ({"source_grid": (2, 3, 4), "target_grid": (2, 3, 4)}, {}):
    params, report = param_mapping.map_params(source, target, MAPPING, **grids)
    for name, table in source["video_encoder"]["pos_embedding"].items():
      np.testing.assert_array_equal(params["video_encoder"]["pos_embedding"][name], table)
      assert report.leaves[f"video_encoder/pos_embedding/{name}"].status == param_mapping.LOADED
  np.testing.assert_array_equal(
    param_mapping.resample_grid(np.arange(24.0).reshape(2, 3, 4), (2, 3)),
    np.arange(24.0).reshape(2, 3, 4),
  )


@pytest.mark.parametrize("source_grid,target_grid", GRID_PAIRS)
def test_factorised_tables_match_independent_interpolation(source_grid, target_grid):
  rng = np.random.default_rng(6)
  source, target = _trees(rng, source_grid, target_grid, kind="factorised")
  params, report = param_mapping.map_params(
    source, target, MAPPING, source_grid=source_grid, target_grid=target_grid
  )
  pos, got = source["video_encoder"]["pos_embedding"], params["video_encoder"]["pos_embedding"]
  np.testing.assert_allclose(
    got["temporal"], _reference_resize(pos["temporal"], target_grid[:1]), rtol=0, atol=1e-6
  )
  spatial = pos["spatial"].reshape(*source_grid[1:], D)
  np.testing.assert_allclose(
    got["spatial"], _reference_resize(spatial, target_grid[1:]).reshape(-1, D), rtol=0, atol=1e-6
  )
  for name, axes in (("temporal", slice(0, 1)), ("spatial", slice(1, 3))):
    status = report.leaves[f"video_encoder/pos_embedding/{name}"].status
    changed = source_grid[axes] != target_grid[axes]
    assert status == (param_mapping.RESAMPLED if changed else param_mapping.LOADED), name
    if not changed:
      np.testing.assert_array_equal(got[name], pos[name])


def test_video_table_without_grids_or_off_grid_is_an_error():
  rng = np.random.default_rng(7)
  source, target = _trees(rng, (4, 4, 4), (2, 2, 2))
  with pytest.raises(
    param_mapping.MappingError, match=r"video_encoder/pos_embedding/joint.*(64, 8).*(8, 8).*grid"
  ):
    param_mapping.map_params(source, target, MAPPING)
  with pytest.raises(param_mapping.MappingError, match="target_grid"):
    param_mapping.map_params(source, target, MAPPING, source_grid=(4, 4, 4))
  with pytest.raises(
    param_mapping.MappingError, match=r"video_encoder/pos_embedding/joint.*\(2, 4, 4\)"
  ):
    param_mapping.map_params(source, target, MAPPING, source_grid=(2, 4, 4), target_grid=(2, 2, 2))
  with pytest.raises(ValueError, match="source_grid"):
    param_mapping.map_params(source, target, MAPPING, source_grid=(4, 4), target_grid=(2, 2, 2))


# --- text position table ----------------------------------------------------------------------


def test_text_table_extended_keeps_fresh_rows_and_cut_keeps_first_rows():
  rng = np.random.default_rng(8)
  source, target = _trees(rng, source_len=6, target_len=10)
  params, report = param_mapping.map_params(source, target, MAPPING)
  got = params["text_encoder"]["position_embeddings"]
  np.testing.assert_array_equal(got[:6], source["text_encoder"]["position_embeddings"])
  np.testing.assert_array_equal(got[6:], target["text_encoder"]["position_embeddings"][6:])
  leaf = report.leaves["text_encoder/position_embeddings"]
  assert (leaf.status, leaf.source_shape, leaf.shape) == (param_mapping.RESAMPLED, (6, D), (10, D))
  assert "fresh" in leaf.detail

  source, target = _trees(rng, source_len=10, target_len=4)
  params, report = param_mapping.map_params(source, target, MAPPING)
  np.testing.assert_array_equal(
    params["text_encoder"]["position_embeddings"], source["text_encoder"]["position_embeddings"][:4]
  )
  assert report.leaves["text_encoder/position_embeddings"].status == param_mapping.RESAMPLED


# --- errors -----------------------------------------------------------------------------------


def test_other_shape_mismatch_names_path_and_shapes():
  rng = np.random.default_rng(9)
  source, target = _trees(rng)
  target["video_encoder"]["block_1"]["ln_attn"]["scale"] = np.zeros(D + 2, np.float32)
  with pytest.raises(
    param_mapping.MappingError, match=r"video_encoder/block_1/ln_attn/scale.*\(8,\).*\(10,\)"
  ):
    param_mapping.map_params(source, target, MAPPING)
  source, target = _trees(rng)
  target["text_encoder"]["position_embeddings"] = np.zeros((6, D + 1), np.float32)
  with pytest.raises(
    param_mapping.MappingError, match=r"text_encoder/position_embeddings.*\(6, 8\).*\(6, 9\)"
  ):
    param_mapping.map_params(source, target, MAPPING)


def test_missing_subtrees_and_leaves_are_named():
  rng = np.random.default_rng(10)
  source, target = _trees(rng)
  with pytest.raises(
    param_mapping.MappingError,
    match=r"'group_proj'.*\['log_logit_scale', 'text_encoder', 'text_proj', "
    r"'video_encoder', 'video_proj'\]",
  ):
    param_mapping.map_params(source, target, {"group_proj": "video_proj"})
  with pytest.raises(param_mapping.MappingError, match="Target subtree 'head'"):
    param_mapping.map_params(source, target, {"video_proj": "head"})
  del source["video_encoder"]["block_1"]["ln_attn"]["bias"]
  with pytest.raises(
    param_mapping.MappingError, match=r"video_encoder/block_1/ln_attn/bias.*\['scale'\]"
  ):
    param_mapping.map_params(source, target, MAPPING)
  # A layout difference (scanned vs unscanned blocks) points to the converter.
  source, _ = _trees(rng)
  source["video_encoder"]["blocks_1_1"] = source["video_encoder"].pop("block_1")
  with pytest.raises(param_mapping.MappingError, match="convert_layer_layout"):
    param_mapping.map_params(source, target, MAPPING)


def test_overlapping_targets_are_an_error():
  rng = np.random.default_rng(11)
  source, target = _trees(rng)
  with pytest.raises(param_mapping.MappingError, match="overlap"):
    param_mapping.map_params(source, target, {"": "", "video_proj": "video_proj"})
  with pytest.raises(param_mapping.MappingError, match="overlap"):
    param_mapping.map_params(
      source, target, {"video_encoder": "video_encoder", "text_encoder": "video_encoder/block_1"}
    )


# --- format_report ----------------------------------------------------------------------------


def test_format_report_mentions_each_category():
  rng = np.random.default_rng(12)
  source, target = _trees(rng, (2, 2, 2), (1, 2, 2), source_len=6, target_len=8)
  _, report = param_mapping.map_params(
    source, target, MAPPING, source_grid=(2, 2, 2), target_grid=(1, 2, 2)
  )
  text = param_mapping.format_report(report)
  for word in ("loaded", "resampled", "initialised", "unused"):
    assert word in text
  assert "video_encoder/pos_embedding/joint  (8, 8) -> (4, 8)" in text
  assert "text_encoder/position_embeddings  (6, 8) -> (8, 8)" in text
  assert "text_proj" in text and "log_logit_scale" in text
