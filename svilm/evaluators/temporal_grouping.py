"""Temporal grouping accuracy on cut-and-paste clips.

Measures what the temporal grouping loss is meant to teach: can the clip
features of a mixed clip be split into the pasted foreground and the
background, and is the part the caption describes the foreground?

Definition (exact; `temporal_grouping_accuracy` implements it), per clip n:
  1. labels = two_means(clip_emb[n]) splits the P positions into clusters 0
     and 1 using the features only (see `two_means`).
  2. mu_c = mean of the L2-normalised features of cluster c. The foreground
     cluster is argmax_c cos(mu_c, text_emb[n]) (ties -> cluster 0; an empty
     cluster is never chosen, so a single-cluster clip is all foreground).
  3. predicted_fg[k] = labels[k] == foreground cluster.
  accuracy = sum over clips and positions of [predicted_fg == fg_mask] / (N*P),
  i.e. pooled over positions, not a mean of per-clip accuracies (the same
  thing when every clip has P positions, which it does).

The mask is deliberately not used to build the centres. With centres taken
from the true foreground and background positions (as the training loss does)
even an untrained model scores near 1.0, because the two pasted clips are
different scenes whose raw features already separate; that would measure the
data, not the caption. Here the split is found blindly and only the caption
decides which side is foreground, so a model that ignores the caption scores
~0.5 on average, like the random variant.

Random variant 'accuracy_random': step 2 is replaced by a uniform choice of
cluster 0 or 1 for each clip: one call `rng.integers(0, 2, size=N)`, entry n
for clip n.
"""

from __future__ import annotations

import numpy as np

_EPS = 1e-12


def _normalize(x: np.ndarray) -> np.ndarray:
  return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), _EPS)


def two_means(x: np.ndarray, num_iters: int = 20) -> np.ndarray:
  """Cosine 2-means of the rows of x with a deterministic initialisation.

  Rows are L2-normalised. Centre 0 = row 0; centre 1 = the row with the lowest
  cosine to row 0 (ties -> first such row). Then repeat at most num_iters
  times: assign each row to the centre with the higher cosine (ties -> 0),
  stop if no label changed, otherwise set each centre to the mean of its
  normalised rows (an emptied cluster keeps its previous centre). If all rows
  are identical both centres coincide and every label is 0.

  Args:
    x: [P, D] features.
    num_iters: maximum number of assignment steps.

  Returns:
    int64 [P] labels in {0, 1}; row 0 always gets label 0 on the first pass.
  """
  if num_iters < 1:
    raise ValueError(f"num_iters={num_iters} must be >= 1.")
  xn = _normalize(np.asarray(x, dtype=np.float64))
  # Farthest-from-row-0 init: deterministic, and for a pasted clip it lands
  # in the other scene whenever the two scenes are separable at all.
  centres = np.stack([xn[0], xn[np.argmin(xn @ xn[0])]])
  labels = None
  for _ in range(num_iters):
    # Means of unit vectors are shorter than 1; normalise for a true cosine.
    cos = xn @ _normalize(centres).T  # [P, 2]
    new_labels = (cos[:, 1] > cos[:, 0]).astype(np.int64)  # ties -> 0
    if labels is not None and np.array_equal(new_labels, labels):
      break
    labels = new_labels
    for c in (0, 1):
      if np.any(labels == c):
        centres[c] = xn[labels == c].mean(axis=0)
  return labels


def temporal_grouping_accuracy(
  clip_emb: np.ndarray,
  text_emb: np.ndarray,
  fg_mask: np.ndarray,
  rng: np.random.Generator,
) -> dict[str, float]:
  """Pooled foreground/background accuracy of caption-guided 2-means.

  See the module docstring for the exact definition and the reason the mask
  is not used to place the centres.

  Args:
    clip_emb: [N, P, E] per-position clip features projected to the joint
      space (need not be normalised).
    text_emb: [N, E] caption embeddings (need not be normalised).
    fg_mask: [N, P] true foreground mask from cut-and-paste.
    rng: generator for the random variant.

  Returns:
    {'temporal_grouping/accuracy', 'temporal_grouping/accuracy_random'}.
  """
  clip_emb = np.asarray(clip_emb, dtype=np.float64)
  n, p, _ = clip_emb.shape
  if np.shape(text_emb)[0] != n or np.shape(fg_mask) != (n, p):
    raise ValueError(
      f"Shapes disagree: clip_emb {clip_emb.shape}, text_emb "
      f"{np.shape(text_emb)}, fg_mask {np.shape(fg_mask)}."
    )
  # > 0.5 accepts both {0, 1} floats from jax and booleans.
  truth = np.asarray(fg_mask) > 0.5
  text = _normalize(np.asarray(text_emb, dtype=np.float64))
  # Drawn once up front, so the stream does not depend on the clustering.
  random_pick = rng.integers(0, 2, size=n)
  correct = correct_random = 0
  for i in range(n):
    # The split never sees fg_mask: only the caption chooses a side.
    labels = two_means(clip_emb[i])
    xn = _normalize(clip_emb[i])
    scores = np.full(2, -np.inf)  # an empty cluster can never win
    for c in (0, 1):
      if np.any(labels == c):
        scores[c] = _normalize(xn[labels == c].mean(axis=0)) @ text[i]
    fg_cluster = int(np.argmax(scores))  # ties -> cluster 0
    correct += int(np.sum((labels == fg_cluster) == truth[i]))
    correct_random += int(np.sum((labels == random_pick[i]) == truth[i]))
  return {
    "temporal_grouping/accuracy": correct / (n * p),
    "temporal_grouping/accuracy_random": correct_random / (n * p),
  }
