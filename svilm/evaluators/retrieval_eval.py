"""Text-video retrieval evaluation of a dual encoder on a held-out split, every clip counted.

Two passes over the split, in the same record order:
  videos    each clip (centre crop, centred frames) through the video tower; the embedding is
            the mean of its per-position clip embeddings, L2-normalised;
  captions  every caption of every clip (`captions`, else `caption`) through the text tower.
Then similarity[caption, video] = cosine, and `retrieval.multi_caption_retrieval_metrics`
gives R@1/5/10, MdR and MnR in both directions under `retrieval/...` (one query per caption for
text-to-video; for video-to-text a clip's rank is the best rank among its own captions).

Every clip of the split is scored: the last batch is padded and the padding masked out
(data_pipelines/input_pipeline.py), so MSR-VTT 1k-A scores exactly 1000 clips and a split
smaller than a batch works. Each host reads the whole split and embeds its rows of each global
batch, so the numbers do not depend on the number of hosts or devices.

`empty_query=True` is the control that removes the input retrieval should read: every
caption is replaced by the empty string, so every query embeds alike and ranks the clips in
the same order; the t2v ranks are then a permutation of 1..N, so R@k must be exactly k / N
(chance) and MdR (N + 1) / 2. Anything better would mean the score leaks the answer some
other way (order, padding).

`distinct_captions=True` (ShapesWorld, whose template captions repeat) first drops every clip
whose first caption already belongs to an earlier clip, exactly as the pretraining evaluator
does: a duplicate caption's other clip would be an equally right answer counted as a miss.
"""

from __future__ import annotations

import functools

import jax
from jax.experimental import multihost_utils
import ml_collections
import numpy as np

from data_pipelines import input_pipeline
from data_pipelines import schema
from svilm import data_setup
from svilm import sharding
from svilm.evaluators import retrieval
from svilm.models import svilm as svilm_model


def _embed_videos(params, batch, *, model):
  out, _ = model.apply({"params": params}, batch["video"], train=False, method=model.encode_video)
  return svilm_model.pool_video_embedding(out["clip_emb"], None)


def _embed_texts(params, batch, *, model):
  emb, _ = model.apply(
    {"params": params},
    batch["text_tokens"],
    batch["text_mask"],
    train=False,
    method=model.encode_text,
  )
  return emb


def read_captions(files, max_clips: int) -> list[list[str]]:
  """Every caption of each clip of `files`, in the evaluation's record order."""
  ds = input_pipeline.record_stream(files, train=False, seed=0)
  if max_clips:
    ds = ds.take(max_clips)
  ds = ds.map(
    input_pipeline.graph_fn(lambda r: schema.parse_sequence_example(r, with_annotations=False))
  )
  ds = ds.map(input_pipeline.graph_fn(lambda r: (r["caption"], r["captions"])))
  clips = []
  for caption, captions in ds.as_numpy_iterator():
    texts = [c.decode("utf-8") for c in captions] or [caption.decode("utf-8")]
    clips.append(texts)
  return clips


class RetrievalEvaluator:
  """`run(params)` -> {"retrieval/<metric>": value}; see the module docstring."""

  def __init__(
    self,
    config: ml_collections.ConfigDict,
    model,
    mesh,
    params_shardings,
    eval_files,
    tokenizer,
    *,
    distinct_captions: bool,
    empty_query: bool = False,
  ):
    self._empty_query = empty_query
    self._config, self._mesh, self._tokenizer = config, mesh, tokenizer
    self._files = list(eval_files)
    self._distinct = distinct_captions
    jit = lambda fn: sharding.jit_evaluation(
      functools.partial(fn, model=model), config, mesh, params_shardings, [True]
    )
    self._embed_videos, self._embed_texts = jit(_embed_videos), jit(_embed_texts)
    self._captions = read_captions(self._files, config.eval.max_clips)
    if not self._captions:
      raise ValueError(f"The evaluation split ({len(self._files)} files) holds no clips")

  def _local_batches(self, rows: list[int]):
    """Indices of this host's rows of each padded global batch, and their validity."""
    global_batch = self._config.eval.batch_size
    local = global_batch // jax.process_count()
    begin = jax.process_index() * local
    for start in range(0, len(rows), global_batch):
      chunk = rows[start : start + global_batch]
      valid = np.arange(global_batch) < len(chunk)
      chunk = chunk + [chunk[-1]] * (global_batch - len(chunk))
      yield chunk[begin : begin + local], valid

  def video_embeddings(self, params) -> np.ndarray:
    config = self._config
    ds = data_setup.make_dataset(
      config,
      self._files,
      self._tokenizer,
      batch_size=config.eval.batch_size // jax.process_count(),
      train=False,
      max_examples=config.eval.max_clips,
      host_slice=(jax.process_index(), jax.process_count()),
    )
    parts, valid = [], []
    for local in input_pipeline.as_numpy(ds):
      batch = sharding.to_global({"video": local["video"]}, self._mesh)
      parts.append(np.asarray(self._embed_videos(params, batch)))
      valid.append(multihost_utils.process_allgather(local["valid"], tiled=True))
    return np.concatenate(parts)[np.concatenate(valid) == 1]

  def text_embeddings(self, params, texts: list[str]) -> np.ndarray:
    max_len = self._config.data.max_text_len
    parts = []
    for rows, valid in self._local_batches(list(range(len(texts)))):
      tokens, mask = self._tokenizer.encode([texts[i] for i in rows], max_len)
      batch = sharding.to_global(
        {"text_tokens": tokens.astype(np.int32), "text_mask": mask.astype(np.int32)}, self._mesh
      )
      parts.append(np.asarray(self._embed_texts(params, batch))[valid])
    return np.concatenate(parts)

  def run(self, params) -> dict[str, float]:
    videos = self.video_embeddings(params)
    if len(videos) != len(self._captions):
      raise RuntimeError(f"{len(videos)} clips embedded but {len(self._captions)} read")
    keep = np.arange(len(videos))
    if self._distinct:
      keep = retrieval.distinct_caption_indices([c[0] for c in self._captions])
    texts, owner = [], []
    for new_index, clip in enumerate(keep):
      texts.extend(self._captions[clip])
      owner.extend([new_index] * len(self._captions[clip]))
    if self._empty_query:
      texts = [""] * len(texts)
    similarity = self.text_embeddings(params, texts) @ videos[keep].T
    return retrieval.multi_caption_retrieval_metrics(
      similarity, np.asarray(owner), prefix="retrieval/"
    )
