"""S-ViLM pretraining as a task: cut-and-paste clips and the three losses.

total = w_contrast L_contrast + w_temporal L_temporal + w_grounding L_grounding
(svilm/losses.py; each term logged as `loss/<term>`). The held-out evaluation
(svilm/evaluators/pretrain_eval.py) reports zero-shot retrieval, grounding by pointing and
temporal grouping accuracy.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from data_pipelines import ops
from svilm import configuration
from svilm import data_setup
from svilm import losses
from svilm import sharding
from svilm.evaluators import pretrain_eval
from svilm.evaluators import retrieval_eval
from svilm.models import svilm as svilm_model
from svilm.tasks import video_text

require = configuration.require


def compute_losses(params, batch, rng, *, model, config):
  """Cut-and-paste, forward pass and the three S-ViLM losses; returns (total, metrics)."""
  cut_rng, gumbel_rng, dropout_rng = jax.random.split(rng, 3)
  video = batch["video"]
  positions = configuration.num_temporal_positions(config)
  cut = config.cut_and_paste
  exclude = None
  if cut.enabled:
    # "local": backgrounds from the clips on the same device (no cross-device gather).
    groups = sharding.traced_batch_shards() if cut.background == "local" else 1
    video, fg_mask, background = losses.cut_and_paste(
      cut_rng, video, positions, cut.min_span, cut.max_span, num_groups=groups
    )
    if config.loss.grounding_exclude_background:
      # Caption i's nouns x clip j whose background is clip i: not a negative.
      exclude = losses.background_exclusions(background)
  else:
    fg_mask = jnp.ones((video.shape[0], positions), jnp.float32)
  outputs, intermediates = model.apply(
    {"params": params},
    video,
    batch["text_tokens"],
    batch["text_mask"],
    batch["noun_tokens"],
    batch["noun_mask"],
    train=True,
    rngs={"gumbel": gumbel_rng, "dropout": dropout_rng},
  )
  weights = fg_mask if config.loss.video_pooling == "foreground" else None
  video_emb = svilm_model.pool_video_embedding(outputs["clip_emb"], weights)
  scale = outputs["logit_scale"]
  terms, metrics = {}, {}
  terms["contrast"], contrast_metrics = losses.contrastive_loss(
    video_emb, outputs["text_emb"], scale
  )
  if cut.enabled:
    terms["temporal"] = losses.temporal_grouping_loss(
      intermediates["clip_features"],
      fg_mask,
      config.loss.temporal_temperature,
      config.loss.temporal_kind,
    )
  terms["grounding"], grounding_metrics = losses.spatial_grounding_loss(
    outputs["noun_emb"],
    batch["noun_valid"],
    outputs["group_emb"],
    config.loss.grounding_assign_temperature,
    scale,
    exclude=exclude,
  )
  total = losses.total_loss(
    terms,
    {
      "contrast": config.loss.contrast_weight,
      "temporal": config.loss.temporal_weight,
      "grounding": config.loss.grounding_weight,
    },
  )
  metrics.update({f"loss/{name}": value for name, value in terms.items()})
  metrics.update({f"train/{k}": v for k, v in {**contrast_metrics, **grounding_metrics}.items()})
  metrics["loss/total"] = total
  metrics["train/temperature"] = 1.0 / scale
  return total, metrics


class PretrainTask(video_text.VideoTextTask):
  """S-ViLM pretraining (the method, exactly: docs/losses_and_metrics.md)."""

  name = "pretrain"

  def validate_config(self, config, vocab_size):
    super().validate_config(config, vocab_size)
    data, loss = config.data, config.loss
    require(
      "{}" in data.noun_prompt,
      f"data.noun_prompt={data.noun_prompt!r} must contain '{{}}' for the noun",
    )
    require(
      loss.video_pooling in ("foreground", "all"),
      f"loss.video_pooling must be 'foreground' or 'all', got {loss.video_pooling!r}",
    )
    require(
      loss.temporal_kind in ("mse", "bce"),
      f"loss.temporal_kind must be 'mse' or 'bce', got {loss.temporal_kind!r}",
    )
    require(
      config.cut_and_paste.background in ("local", "global"),
      f"cut_and_paste.background must be 'local' or 'global', got "
      f"{config.cut_and_paste.background!r}",
    )
    positions = configuration.num_temporal_positions(config)
    cut = config.cut_and_paste
    if cut.max_span == -1:
      cut.max_span = positions - 1
    if cut.enabled:
      require(
        positions >= 2,
        f"cut_and_paste needs >= 2 temporal positions, the clip has "
        f"{positions} (data.num_frames / model.video.patch_size[0])",
      )
      require(
        1 <= cut.min_span <= cut.max_span <= positions - 1,
        f"cut_and_paste.min_span={cut.min_span} / max_span={cut.max_span} must satisfy "
        f"1 <= min_span <= max_span <= {positions - 1} (temporal positions - 1, so at "
        "least one background position remains)",
      )
    elif loss.temporal_weight:
      raise configuration.ConfigError(
        "loss.temporal_weight > 0 needs cut_and_paste.enabled=True (the temporal grouping "
        "loss is defined on cut-and-paste clips)"
      )

  def dummy_batch(self, config, batch_size):
    return video_text.dummy_batch(config, batch_size)

  def init_variables(self, model, config, rngs, batch):
    return video_text.init_variables(model, rngs, batch)

  def loss_fn(self, params, batch, rng, *, model, config):
    return compute_losses(params, batch, rng, model=model, config=config)

  def input_ops(self, config, tokenizer, *, train):
    """Clips, the caption and the first data.num_nouns nouns in data.noun_prompt, tokenised
    (the batch contract of data_pipelines/input_pipeline.py)."""
    data = config.data
    example_ops = data_setup.clip_ops(config, train=train, seed=config.seed) + [
      ops.Caption(train=train, seed=config.seed),
      ops.Nouns(data.num_nouns),
    ]
    batch_ops = [
      ops.Tokenize(tokenizer, "caption", data.max_text_len, name="text"),
      ops.Tokenize(tokenizer, "nouns", data.max_noun_len, name="noun", prompt=data.noun_prompt),
    ]
    return example_ops, batch_ops

  # heldout: zero-shot retrieval, pointing and temporal grouping on the held-out clips
  # (svilm/evaluators/pretrain_eval.py); retrieval: the retrieval task's evaluator (every
  # caption of every clip, MnR), which reads the same dual encoder.
  evaluator_types = ("heldout", "retrieval")

  def build_evaluator(self, kind, config, data, *, model, mesh, params_shardings):
    if kind == "retrieval":
      return retrieval_eval.RetrievalEvaluator(
        config,
        model,
        mesh,
        params_shardings,
        data.sources.eval_files,
        data.tokenizer,
        distinct_captions=True,
      )
    return pretrain_eval.PretrainEvaluator(
      config, model, mesh, params_shardings, data.sources.eval_files, data.tokenizer
    )
