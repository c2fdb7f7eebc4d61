"""The retrieval task: it learns, its evaluator scores every clip whatever the batch size, and
its empty-query control is exactly chance (the registry smoke test is tests/test_tasks.py)."""

import jax
import numpy as np
import pytest

from data_pipelines import input_pipeline
from svilm import sharding
from svilm.evaluators import retrieval_eval
from tests.conftest import prepare_and_setup
from tests.test_tasks import task_config


@pytest.fixture(scope="module")
def retrieval_setup(shapesworld_cache):
  return prepare_and_setup(task_config("retrieval", shapesworld_cache), jax.devices()[:1])


def test_training_on_a_fixed_batch_lowers_the_contrastive_loss(shapesworld_cache):
  config = task_config("retrieval", shapesworld_cache)
  config.total_steps, config.optim.warmup_steps, config.optim.learning_rate = 30, 3, 1e-3
  ctx, sources, tokenizer = prepare_and_setup(config, jax.devices()[:1])
  example_ops, batch_ops = ctx.task.input_ops(ctx.config, tokenizer, train=True)
  ds = input_pipeline.make_dataset_from_ops(
    sources.train_files[0],
    example_ops=example_ops,
    batch_ops=batch_ops,
    batch_size=ctx.config.batch_size,
    train=True,
    seed=ctx.config.seed,
  )
  batch = sharding.to_global(next(input_pipeline.as_numpy(ds)), ctx.mesh)
  assert set(batch) == {"index", "video", "text_tokens", "text_mask"}
  step, state = ctx.jit_train_step(), ctx.init_state()
  losses = []
  for _ in range(30):
    state, metrics = step(state, batch)
    losses.append(float(metrics["loss/contrast"]))
  # From ln 8 = 2.08 (chance for 8 pairs) to below 60% of it within 30 steps.
  assert losses[0] == pytest.approx(np.log(8), abs=0.05)
  assert np.mean(losses[-5:]) < 0.6 * losses[0], losses


def _evaluator(ctx, sources, tokenizer, batch_size, **kwargs):
  config = ctx.config.copy_and_resolve_references()
  config.unlock()
  config.eval.batch_size = batch_size
  return retrieval_eval.RetrievalEvaluator(
    config,
    ctx.model,
    ctx.mesh,
    ctx.state_shardings.params,
    sources.eval_files,
    tokenizer,
    distinct_captions=True,
    **kwargs,
  )


def test_every_clip_is_scored_whatever_the_batch_size(retrieval_setup):
  ctx, sources, tokenizer = retrieval_setup
  params = ctx.init_state().params
  whole = _evaluator(ctx, sources, tokenizer, 32)  # the 32 held-out clips in one batch
  padded = _evaluator(ctx, sources, tokenizer, 24)  # 24 + 8 real rows, 16 padded
  videos = whole.video_embeddings(params)
  assert videos.shape[0] == 32
  np.testing.assert_allclose(padded.video_embeddings(params), videos, rtol=1e-5, atol=1e-6)
  results = padded.run(params)
  assert (
    results["retrieval/num_videos"]
    == results["retrieval/num_captions"]
    == len({c[0] for c in padded._captions})
  )


def test_the_empty_query_control_is_exactly_chance(retrieval_setup):
  # Identical queries rank the clips identically: t2v ranks are a permutation of 1..N.
  ctx, sources, tokenizer = retrieval_setup
  results = _evaluator(ctx, sources, tokenizer, 16, empty_query=True).run(ctx.init_state().params)
  n = results["retrieval/num_videos"]
  assert results["retrieval/t2v_R@1"] == pytest.approx(1 / n)
  assert results["retrieval/t2v_R@5"] == pytest.approx(5 / n)
  assert results["retrieval/t2v_MdR"] == (n + 1) / 2
