"""config.init_from: parameters of another run mapped into a task's model, and freezing.

The pretraining checkpoint is written once per module (tiny model, 8 frames at 64 px, text
length 24) and loaded into retrieval models of another frame count, resolution and text
length; the position-table arithmetic itself is tested in tests/test_param_mapping.py.
"""

from flax import traverse_util
import jax
import numpy as np
import pytest

from svilm import checkpointing
from svilm import configuration
from svilm import data_setup
from svilm import param_mapping
from svilm.trainers import trainer
from tests.conftest import prepare_and_setup
from tests.test_param_mapping import _reference_joint
from tests.test_tasks import task_config


@pytest.fixture(scope="module")
def pretrained(shapesworld_cache, tmp_path_factory):
  """(workdir, params) of a saved tiny pretraining state (fresh weights from seed 3)."""
  workdir = str(tmp_path_factory.mktemp("pretrained"))
  config = task_config("pretrain", shapesworld_cache)
  config.seed = 3
  ctx, _, _ = prepare_and_setup(config, jax.devices()[:1])
  state = ctx.init_state()
  manager = checkpointing.make_manager(workdir, keep=1)
  meta = {**data_setup.stream_meta(ctx.config, 5, 1), "video_grid": [4, 4, 4]}
  checkpointing.save(manager, 5, state.replace(step=state.step + 5), meta)
  manager.wait_until_finished()
  manager.close()
  return workdir, jax.device_get(state.params)


def _retrieval(shapesworld_cache, **data):
  config = task_config("retrieval", shapesworld_cache)
  config.data.update(data)
  return config


def test_init_from_another_frame_count_resolution_and_text_length(shapesworld_cache, pretrained):
  workdir, source = pretrained
  # 4 frames at 32 px: a (2, 2, 2) tubelet grid instead of (4, 4, 4); 30 text positions.
  config = _retrieval(shapesworld_cache, num_frames=4, resolution=32, max_text_len=30)
  ctx, _, _ = prepare_and_setup(config, jax.devices()[:1])
  fresh = param_mapping.flatten(jax.device_get(ctx.init_state().params))
  state = trainer.init_from_checkpoint(ctx, f"{workdir}/checkpoints")  # newest step
  assert int(state.step) == 0
  loaded, src = param_mapping.flatten(jax.device_get(state.params)), param_mapping.flatten(source)
  for path in (
    "video_encoder/block_1/mlp/fc1/kernel",
    "text_encoder/layer_0/intermediate/kernel",
    "video_encoder/group_tokens",
    "video_proj/kernel",
    "log_logit_scale",
  ):
    np.testing.assert_array_equal(loaded[path], src[path], err_msg=path)
  table = "video_encoder/pos_embedding/joint"
  assert src[table].shape[0] == 64 and loaded[table].shape[0] == 8
  np.testing.assert_allclose(
    loaded[table], _reference_joint(src[table], (4, 4, 4), (2, 2, 2)), rtol=0, atol=1e-6
  )
  text = "text_encoder/position_embeddings"
  np.testing.assert_array_equal(loaded[text][:24], src[text])
  np.testing.assert_array_equal(loaded[text][24:], fresh[text][24:])


def test_a_step_directory_is_taken_as_named_and_bad_paths_fail(pretrained, tmp_path):
  workdir, _ = pretrained
  assert checkpointing.resolve_step_dir(workdir).endswith("checkpoints/5")
  assert checkpointing.resolve_step_dir(f"{workdir}/checkpoints/5").endswith("checkpoints/5")
  with pytest.raises(FileNotFoundError, match="does not exist"):
    checkpointing.resolve_step_dir(str(tmp_path / "missing"))
  with pytest.raises(FileNotFoundError, match="holds no checkpoint"):
    checkpointing.resolve_step_dir(str(tmp_path))


def test_an_unmappable_shape_names_the_parameter(shapesworld_cache, pretrained):
  workdir, _ = pretrained
  config = _retrieval(shapesworld_cache)
  config.model.embed_dim = 64
  ctx, _, _ = prepare_and_setup(config, jax.devices()[:1])
  with pytest.raises(param_mapping.MappingError, match=r"group_proj/kernel.*\(128, 256\)"):
    trainer.init_from_checkpoint(ctx, workdir)


def test_a_workdir_checkpoint_wins_over_init_from(shapesworld_cache, pretrained, tmp_path):
  workdir, source = pretrained
  config = _retrieval(shapesworld_cache)
  config.init_from = workdir
  ctx, _, _ = prepare_and_setup(config, jax.devices()[:1])
  own = ctx.init_state()  # seed 0: different weights from the pretrained seed 3
  manager = checkpointing.make_manager(str(tmp_path), keep=1)
  checkpointing.save(
    manager, 2, own.replace(step=own.step + 2), data_setup.stream_meta(ctx.config, 2, 1)
  )
  manager.wait_until_finished()
  state, _, last = trainer.restore_or_init(ctx, manager)
  manager.close()
  assert last == 2
  np.testing.assert_array_equal(
    state.params["video_proj"]["kernel"], own.params["video_proj"]["kernel"]
  )
  assert not np.array_equal(state.params["video_proj"]["kernel"], source["video_proj"]["kernel"])


def test_frozen_parameters_get_no_state_no_update(shapesworld_cache):
  config = _retrieval(shapesworld_cache)
  config.optim.freeze = "video_encoder,text_encoder/layer_.*"
  ctx, sources, tokenizer = prepare_and_setup(config, jax.devices()[:1])
  state = ctx.init_state()
  before = param_mapping.flatten(jax.device_get(state.params))
  # Adam's moments exist for the trainable parameters only.
  moment_paths = {
    "/".join(str(getattr(k, "key", k)) for k in path)
    for path, _ in jax.tree_util.tree_leaves_with_path(state.opt_state)
  }
  assert not any("video_encoder" in p or "text_encoder/layer_0" in p for p in moment_paths)
  assert any("video_proj" in p for p in moment_paths)
  assert any("text_encoder/word_embeddings" in p for p in moment_paths)
  batch = ctx.task.dummy_batch(ctx.config, ctx.config.batch_size)
  batch = {
    k: np.random.default_rng(0).uniform(size=v.shape).astype(v.dtype)
    if v.dtype == np.float32
    else np.ones(v.shape, v.dtype)
    for k, v in batch.items()
  }
  step = ctx.jit_train_step()
  for _ in range(3):
    state, metrics = step(state, batch)
  after = param_mapping.flatten(jax.device_get(state.params))
  for path in before:
    frozen = path.startswith("video_encoder/") or path.startswith("text_encoder/layer_")
    same = np.array_equal(before[path], after[path])
    assert same == frozen, (path, frozen)
  assert np.isfinite(float(metrics["loss/total"]))


def test_a_freeze_pattern_that_matches_nothing_is_an_error(shapesworld_cache):
  config = _retrieval(shapesworld_cache)
  config.optim.freeze = "video_encodr"
  with pytest.raises(configuration.ConfigError, match="video_encodr.*match no parameter"):
    prepare_and_setup(config, jax.devices()[:1])


def test_frozen_paths_match_prefixes_and_regexes():
  from svilm.trainers import train_step

  params = traverse_util.unflatten_dict({("a", "b", "w"): 1, ("a", "c", "w"): 2, ("d",): 3})
  assert train_step.frozen_paths(params, ["a"]) == {("a", "b", "w"), ("a", "c", "w")}
  assert train_step.frozen_paths(params, ["a/c"]) == {("a", "c", "w")}
  assert train_step.frozen_paths(params, ["a/.*/w", "d"]) == {
    ("a", "b", "w"),
    ("a", "c", "w"),
    ("d",),
  }
