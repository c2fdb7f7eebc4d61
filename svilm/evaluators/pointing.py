"""Pointing accuracy: does the group token chosen for a noun cover its object?

Measures what the spatial grounding loss is meant to teach, using the exact
per-frame boxes of ShapesWorld. Definition (exact; `pointing_accuracy`
implements it):

  For every valid noun k of clip n:
    m* = argmax_m cos(noun_emb[n, k], group_emb[n, m])   (ties -> lowest m)
    map(t, y, x) = soft_assignment[n, t*Hp*Wp + y*Wp + x, m*]
  For every frame f in [0, T) with visible[n, k, f]:
    position p = f // frames_per_position
    (y, x) = argmax over the Hp x Wp tokens of map(p, ., .)
             (ties -> first in row-major order)
    hit if ymin <= (y + 0.5) / Hp <= ymax and xmin <= (x + 0.5) / Wp <= xmax
    with (ymin, xmin, ymax, xmax) = boxes[n, k, f], normalised to [0, 1];
    the box is inclusive on all four sides.
  pointing_acc = hits / pairs over all (noun, visible frame) pairs.

The soft map is the softmax assignment weights of the last grouping block
(no Gumbel noise, before the straight-through hardening), read per group:
column m* says how much each token belongs to group m*.

Random baseline 'pointing_acc_random': identical, but m* is replaced by a
group drawn uniformly from [0, M) for each valid noun. The draws are one call
`rng.integers(0, M, size=V)`, V = number of valid nouns, assigned to the valid
nouns in row-major (n, k) order, so a seeded generator reproduces it.

With no (noun, visible frame) pair at all both accuracies are NaN (there is
nothing to measure; 0 would read as a failure) and 'num_pointing' is 0.
"""

from __future__ import annotations

import numpy as np


def _hits(
  peak: np.ndarray,
  groups: np.ndarray,
  grid: tuple[int, int, int],
  frames_per_position: int,
  boxes: np.ndarray,
) -> np.ndarray:
  """[N, K, T] bool: is the peak of group groups[n, k] inside boxes[n, k, f]?"""
  _, hp, wp = grid
  num_frames = boxes.shape[2]
  position = np.arange(num_frames) // frames_per_position  # [T]
  n_idx = np.arange(peak.shape[0])[:, None, None]
  # peak is [N, P, M]; pick [n, position(f), groups[n, k]] -> [N, K, T].
  flat = peak[n_idx, position[None, None, :], groups[:, :, None]]
  cy = (flat // wp + 0.5) / hp
  cx = (flat % wp + 0.5) / wp
  ymin, xmin, ymax, xmax = np.moveaxis(boxes, -1, 0)
  return (ymin <= cy) & (cy <= ymax) & (xmin <= cx) & (cx <= xmax)


def pointing_accuracy(
  soft_assignment: np.ndarray,
  grid: tuple[int, int, int],
  frames_per_position: int,
  noun_emb: np.ndarray,
  noun_valid: np.ndarray,
  group_emb: np.ndarray,
  boxes: np.ndarray,
  visible: np.ndarray,
  rng: np.random.Generator,
) -> dict[str, float]:
  """Pointing accuracy of the noun-selected group token and a random baseline.

  See the module docstring for the exact definition.

  Args:
    soft_assignment: [N, P*Hp*Wp, M] token-to-group weights, token order
      t-major, then h, then w.
    grid: (P, Hp, Wp) token grid.
    frames_per_position: frames per temporal token position; T must equal
      P * frames_per_position.
    noun_emb: [N, K, E] noun embeddings, L2-normalised.
    noun_valid: [N, K] 1/True for real nouns.
    group_emb: [N, M, E] group token embeddings, L2-normalised.
    boxes: [N, K, T, 4] (ymin, xmin, ymax, xmax) of the referred object,
      normalised to [0, 1].
    visible: [N, K, T] 1/True where the referred object is in the frame.
    rng: generator for the random baseline.

  Returns:
    {'grounding/pointing_acc', 'grounding/pointing_acc_random',
     'grounding/num_pointing'} as floats.
  """
  num_pos, hp, wp = grid
  soft = np.asarray(soft_assignment)
  n, tokens, num_groups = soft.shape
  if tokens != num_pos * hp * wp:
    raise ValueError(
      f"soft_assignment has {tokens} tokens but grid {grid} has {num_pos * hp * wp}."
    )
  boxes = np.asarray(boxes, dtype=np.float64)
  if boxes.shape[2] != num_pos * frames_per_position:
    raise ValueError(
      f"boxes have T={boxes.shape[2]} frames, expected P * "
      f"frames_per_position = {num_pos} * {frames_per_position}."
    )
  valid = np.asarray(noun_valid).astype(bool)
  # A frame counts only if its noun is real and its object visible.
  pairs = valid[:, :, None] & np.asarray(visible).astype(bool)
  num_pairs = int(pairs.sum())
  result = {"grounding/num_pointing": float(num_pairs)}

  # Peak token per (clip, position, group); np.argmax returns the first
  # maximum, i.e. row-major ties -> first, as documented.
  peak = np.argmax(soft.reshape(n, num_pos, hp * wp, num_groups), axis=2)
  cos = np.einsum("nke,nme->nkm", noun_emb, group_emb)
  chosen = np.argmax(cos, axis=-1)  # ties -> lowest group index
  random_groups = np.zeros_like(chosen)
  # Boolean-mask assignment fills in row-major (n, k) order.
  random_groups[valid] = rng.integers(0, num_groups, size=int(valid.sum()))

  for key, groups in (("pointing_acc", chosen), ("pointing_acc_random", random_groups)):
    if num_pairs == 0:
      result[f"grounding/{key}"] = float("nan")
      continue
    hits = _hits(peak, groups, grid, frames_per_position, boxes)
    result[f"grounding/{key}"] = float((hits & pairs).sum() / num_pairs)
  return result
