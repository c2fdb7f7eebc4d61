"""Text-video retrieval: finetune the dual encoder with the symmetric contrastive loss.

Training pairs each clip with one of its captions, drawn per step when the record has several
(`captions`, e.g. MSR-VTT's ~20 per video). The video embedding is the mean of the clip's
per-position embeddings (no cut-and-paste: the clips are whole), the loss the CLIP-style
InfoNCE over the global batch (svilm/losses.py `contrastive_loss`). Evaluation:
svilm/evaluators/retrieval_eval.py (`retrieval/t2v_R@1` ...).

Start from a pretraining run with `--config.init_from=WORKDIR`: both towers, their projections
and the temperature are loaded (`init_from_map`); group tokens and the group projection come
along unused by this loss (they stay in the model so a finetuned checkpoint still grounds).
"""

from __future__ import annotations

import jax
import ml_collections

from data_pipelines import ops
from svilm import configuration
from svilm import data_setup
from svilm import losses
from svilm.evaluators import retrieval_eval
from svilm.models import svilm as svilm_model
from svilm.tasks import video_text

BENCHMARKS = ("shapesworld", "msrvtt")


def _encode_both(module, video, tokens, mask, train):
  return (
    module.encode_video(video, train=train),
    module.encode_text(tokens, mask, train=train),
    module.logit_scale(),
  )


def compute_loss(params, batch, rng, *, model, config):
  """Symmetric InfoNCE between mean-pooled clip embeddings and caption embeddings."""
  gumbel_rng, dropout_rng = jax.random.split(rng)
  (video_out, _), (text_emb, _), scale = model.apply(
    {"params": params},
    batch["video"],
    batch["text_tokens"],
    batch["text_mask"],
    True,
    method=_encode_both,
    rngs={"gumbel": gumbel_rng, "dropout": dropout_rng},
  )
  video_emb = svilm_model.pool_video_embedding(video_out["clip_emb"], None)
  loss, metrics = losses.contrastive_loss(video_emb, text_emb, scale)
  metrics = {f"train/{k}": v for k, v in metrics.items()}
  metrics.update({"loss/contrast": loss, "loss/total": loss, "train/temperature": 1.0 / scale})
  return loss, metrics


class RetrievalTask(video_text.VideoTextTask):
  """Text-video retrieval finetuning (configs/retrieval.py)."""

  name = "retrieval"

  def validate_config(self, config, vocab_size):
    super().validate_config(config, vocab_size)
    benchmark = config.retrieval.benchmark
    configuration.require(
      benchmark in BENCHMARKS, f"retrieval.benchmark={benchmark!r} is not one of {BENCHMARKS}"
    )
    configuration.require(
      benchmark == "shapesworld" or config.data.path,
      f"retrieval.benchmark={benchmark!r} reads your shards: pass "
      "--config.data.path=SHARD_DIR (for MSR-VTT: python -m data_pipelines.readers.msrvtt)",
    )

  def dummy_batch(self, config, batch_size):
    batch = video_text.dummy_batch(config, batch_size)
    return {k: batch[k] for k in ("video", "text_tokens", "text_mask")}

  def init_variables(self, model, config, rngs, batch):
    # Through both towers only; parameters come out identical to pretraining's (the noun
    # path shares the text tower), so pretraining checkpoints map one to one.
    return model.init(
      rngs, batch["video"], batch["text_tokens"], batch["text_mask"], False, method=_encode_both
    )

  def loss_fn(self, params, batch, rng, *, model, config):
    return compute_loss(params, batch, rng, model=model, config=config)

  def input_ops(self, config, tokenizer, *, train):
    """Clips and one caption each, drawn from the clip's `captions` when training."""
    example_ops = data_setup.clip_ops(config, train=train, seed=config.seed) + [
      ops.Caption(sample=train, train=train, seed=config.seed)
    ]
    batch_ops = [ops.Tokenize(tokenizer, "caption", config.data.max_text_len, name="text")]
    return example_ops, batch_ops

  evaluator_types = ("retrieval",)  # svilm/evaluators/retrieval_eval.py

  def build_evaluator(self, kind, config, data, *, model, mesh, params_shardings):
    return retrieval_eval.RetrievalEvaluator(
      config,
      model,
      mesh,
      params_shardings,
      data.sources.eval_files,
      data.tokenizer,
      distinct_captions=config.retrieval.distinct_captions,
      empty_query=config.retrieval.empty_query_control,
    )


def default_config() -> ml_collections.ConfigDict:
  """config.retrieval: the task's own keys."""
  return ml_collections.ConfigDict(
    dict(
      benchmark="shapesworld",
      # Drop clips whose first caption repeats an earlier clip's (template captions repeat);
      # False for real benchmarks, where every test clip counts.
      distinct_captions=True,
      # The control run: every query caption replaced by "" at evaluation (R@k must be k/N).
      empty_query_control=False,
    )
  )
