"""Text-video retrieval metrics: R@1/5/10 and median rank, both directions.

Definitions (exact; `retrieval_metrics` implements them):
  Clips and captions are matched pairs: caption i describes clip i, and
  similarity[i, j] is the score of caption i against clip j.
  t2v rank of caption i = 1 + #{j != i : similarity[i, j] >= similarity[i, i]}
  v2t rank of clip j    = 1 + #{i != j : similarity[i, j] >= similarity[j, j]}
  R@k = fraction (in [0, 1], not percent) of queries with rank <= k.
  MdR = median of the ranks (numpy median: the mean of the two middle ranks
        when the number of queries is even, so it can end in .5).

Tie rule: a candidate scoring exactly the same as the true item is counted as
ranked ahead of it. This is the pessimistic choice, so a degenerate model (for
example one whose embeddings collapse to a constant, where every score ties)
gets rank N instead of rank 1; any optimistic or index-based rule would let
such a model report perfect recall.

Duplicate captions: when two clips share a caption, the "other" clip is an
equally correct answer but is counted as a miss. Retrieval is therefore run
on a subset whose captions are pairwise distinct (`distinct_caption_indices`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _ranks(similarity: np.ndarray) -> np.ndarray:
  """Rank of the diagonal entry of each row, ties counted against it."""
  true = np.diagonal(similarity)[:, None]
  at_least = similarity >= true  # includes the diagonal itself exactly once
  return at_least.sum(axis=1)  # = 1 + others with score >= true


def retrieval_metrics(
    similarity: np.ndarray, prefix: str = 'retrieval/'
) -> dict[str, float]:
  """Recall at 1/5/10 and median rank for text-to-video and video-to-text.

  Args:
    similarity: [N_text, N_video] scores with N_text == N_video; caption i
      belongs to clip i. Must be finite: NaN compares false and would flatter.
    prefix: prepended to every key.

  Returns:
    {prefix + key: float} for keys 't2v_R@1', 't2v_R@5', 't2v_R@10',
    't2v_MdR', 'v2t_R@1', 'v2t_R@5', 'v2t_R@10', 'v2t_MdR' (see the module
    docstring for the definitions) and 'num_clips' = N.
  """
  # float64 so near-equal float32 scores are compared exactly as given.
  sim = np.asarray(similarity, dtype=np.float64)
  if sim.ndim != 2 or sim.shape[0] != sim.shape[1] or sim.shape[0] == 0:
    raise ValueError(
        f'similarity must be a non-empty square [N, N] matrix of matched '
        f'caption-clip pairs, got shape {sim.shape}.')
  if not np.all(np.isfinite(sim)):
    raise ValueError('similarity contains NaN or inf.')
  out = {}
  # Rows of sim are captions (t2v queries); rows of sim.T are clips (v2t).
  for direction, matrix in (('t2v', sim), ('v2t', sim.T)):
    ranks = _ranks(matrix)
    for k in (1, 5, 10):
      out[f'{prefix}{direction}_R@{k}'] = float(np.mean(ranks <= k))
    out[f'{prefix}{direction}_MdR'] = float(np.median(ranks))
  out[f'{prefix}num_clips'] = float(sim.shape[0])
  return out


def distinct_caption_indices(captions: Sequence[str | bytes]) -> np.ndarray:
  """Indices of the first occurrence of each distinct caption, ascending.

  Captions compare exactly (case and whitespace matter); bytes are decoded as
  UTF-8 first so b'a dog' and 'a dog' count as the same caption.

  Args:
    captions: the caption of each clip, in clip order.

  Returns:
    int64 [N_distinct] indices into `captions`.
  """
  seen = set()
  keep = []
  for index, caption in enumerate(captions):
    if isinstance(caption, (bytes, np.bytes_)):
      caption = bytes(caption).decode('utf-8')
    # str() also lets integer caption ids through unchanged in meaning.
    caption = str(caption)
    if caption not in seen:
      seen.add(caption)
      keep.append(index)
  return np.asarray(keep, dtype=np.int64)
