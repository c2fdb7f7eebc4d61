"""Zero-shot evaluation of a pretrained S-ViLM model on held-out clips with exact ground truth.

One pass over the held-out split computes, with the model in inference mode (no Gumbel noise):
  retrieval/*          text<->video retrieval over clips with pairwise-distinct captions
                       (svilm/evaluators/retrieval.py);
  grounding/*          pointing with the soft assignment map of the group token nearest to each
                       prompted noun (svilm/evaluators/pointing.py);
  temporal_grouping/*  2-means split of cut-and-paste clips, foreground chosen by the caption
                       (svilm/evaluators/temporal_grouping.py).
The cut-and-paste clips and the random baselines use `config.eval.seed`, so two evaluations
of the same parameters give identical numbers.
"""

from __future__ import annotations

import functools

import jax
from jax.experimental import multihost_utils
import ml_collections
import numpy as np

from data_pipelines import input_pipeline
from svilm import configuration
from svilm import data_setup
from svilm import losses
from svilm import sharding
from svilm.evaluators import figures
from svilm.evaluators import pointing
from svilm.evaluators import retrieval
from svilm.evaluators import temporal_grouping
from svilm.models import svilm as svilm_model
from svilm.models import vit


def _predict(params, batch, rng, *, model, config):
  """Everything the metrics need, for one batch (runs jitted, batch sharded on `data`)."""
  variables = {"params": params}
  video_out, video_inter = model.apply(
    variables, batch["video"], train=False, method=model.encode_video
  )
  text_emb, _ = model.apply(
    variables, batch["text_tokens"], batch["text_mask"], train=False, method=model.encode_text
  )
  noun_emb, _ = model.apply(
    variables, batch["noun_tokens"], batch["noun_mask"], train=False, method=model.encode_text
  )
  cut = config.cut_and_paste
  positions = configuration.num_temporal_positions(config)
  mixed, fg_mask, _ = losses.cut_and_paste(
    rng, batch["video"], positions, cut.min_span, cut.max_span
  )
  mixed_out, _ = model.apply(variables, mixed, train=False, method=model.encode_video)
  return {
    "video_emb": svilm_model.pool_video_embedding(video_out["clip_emb"], None),
    "text_emb": text_emb,
    "noun_emb": noun_emb,
    "group_emb": video_out["group_emb"],
    "soft_assignment": video_inter["soft_assignments"][-1],
    "mixed_clip_emb": mixed_out["clip_emb"],
    "fg_mask": fg_mask,
  }


class PretrainEvaluator:
  """Runs the held-out evaluation; `run(params)` returns {metric_name: value}."""

  def __init__(
    self, config: ml_collections.ConfigDict, model, mesh, params_shardings, eval_files, tokenizer
  ):
    self._config = config
    self._mesh = mesh
    # Every host reads the whole split and keeps its rows of each global batch, so the global
    # batches, and with them the cut-and-paste draws (one key per global batch) and every
    # metric, are the same for any number of hosts and devices.
    self._files = list(eval_files)
    self._tokenizer = tokenizer
    self._predict = sharding.jit_evaluation(
      functools.partial(_predict, model=model, config=config),
      config,
      mesh,
      params_shardings,
      [True, False],
    )
    self._figure_inputs: dict = {}  # frames and noun text of the first clips, for figures
    self._images: dict = {}

  def _dataset(self):
    config = self._config
    return data_setup.make_dataset(
      config,
      self._files,
      self._tokenizer,
      batch_size=config.eval.batch_size // jax.process_count(),
      train=False,
      with_annotations=True,
      max_examples=config.eval.max_clips,
      host_slice=(jax.process_index(), jax.process_count()),
    )

  def collect(self, params) -> dict:
    """Predictions and annotations of the whole held-out set as numpy arrays (all hosts)."""
    base_rng = jax.random.PRNGKey(self._config.eval.seed)
    parts = []
    for i, local in enumerate(input_pipeline.as_numpy(self._dataset())):
      if i == 0:
        count = self._config.eval.num_figures
        self._figure_inputs = {
          "frames": local["video"][:count],
          "names": [self._tokenizer.decode(n) for n in local["noun_tokens"][:count]],
        }
      batch = sharding.to_global(local, self._mesh)
      out = self._predict(params, batch, jax.random.fold_in(base_rng, i))
      annotations = {
        k: batch[k] for k in ("noun_valid", "noun_boxes", "noun_visible", "caption_id", "valid")
      }
      parts.append(multihost_utils.process_allgather({**out, **annotations}, tiled=True))
    if not parts:
      raise ValueError("The held-out split is empty; nothing to evaluate")
    out = {k: np.concatenate([np.asarray(p[k]) for p in parts]) for k in parts[0]}
    real = out.pop("valid") == 1  # drop the padding of the last batch
    out = {k: v[real] for k, v in out.items()}
    out["video_shape"] = (len(out["text_emb"]), *batch["video"].shape[1:])
    return out

  def run(self, params) -> dict:
    p = self.collect(params)
    rng = np.random.default_rng(self._config.eval.seed)
    results = {}
    keep = retrieval.distinct_caption_indices(p["caption_id"].tolist())
    similarity = p["text_emb"][keep] @ p["video_emb"][keep].T
    results.update(retrieval.retrieval_metrics(similarity, prefix="retrieval/"))
    grid = vit.tubelet_grid(p["video_shape"], self._config.model.video.patch_size)
    results.update(
      pointing.pointing_accuracy(
        p["soft_assignment"],
        grid,
        self._config.model.video.patch_size[0],
        p["noun_emb"],
        p["noun_valid"],
        p["group_emb"],
        p["noun_boxes"],
        p["noun_visible"],
        rng,
      )
    )
    results.update(
      temporal_grouping.temporal_grouping_accuracy(
        p["mixed_clip_emb"], p["text_emb"], p["fg_mask"], rng
      )
    )
    # Only process 0 writes figures (the trainer), so only it draws them.
    self._images = self._figures(p, grid) if jax.process_index() == 0 else {}
    return {k: float(v) for k, v in results.items()}

  def _figures(self, p: dict, grid) -> dict[str, np.ndarray]:
    """The paper's Figure 4 for the first eval.num_figures clips (one image each) and its
    Figures 2 / 5 for their cut-and-paste versions (one image); {} when num_figures is 0."""
    count = len(self._figure_inputs.get("frames", ()))
    if not count:
      return {}
    images = {
      f"figures/grounding_{n}": figures.grounding_figure(
        self._figure_inputs["frames"][n],
        p["soft_assignment"][n],
        grid,
        p["noun_emb"][n],
        p["noun_valid"][n],
        p["group_emb"][n],
        p["noun_boxes"][n],
        p["noun_visible"][n],
        names=self._figure_inputs["names"][n],
      )
      for n in range(count)
    }
    images["figures/cut_and_paste_similarity"] = figures.similarity_figure(
      p["mixed_clip_emb"][:count], p["fg_mask"][:count]
    )
    return images

  def images(self) -> dict[str, np.ndarray]:
    """The figures of the last run: {name: uint8 [H, W, 3]} (see svilm/evaluators/figures.py)."""
    return self._images
