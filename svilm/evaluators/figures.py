"""Figures of what a pretrained model learned (the paper's Figures 2, 4 and 5), as uint8 images.

  grounding_figure   for one clip, a row per valid noun: each temporal position's middle frame
                     with the soft-assignment map of the group token chosen for the noun (the
                     one nearest to it, as pointing accuracy chooses) overlaid in red, its peak
                     token marked, and the noun's ground-truth box drawn in green
  similarity_figure  for cut-and-paste clips, the cosine similarity of every pair of temporal
                     positions' clip features (white = 1, black = -1), with the true foreground
                     positions marked by orange bars beside the rows and above the columns

The pretraining evaluator makes them for the first `eval.num_figures` held-out clips at each
evaluation; the trainer writes them to TensorBoard (clu image summaries) and as PNGs to
WORKDIR/figures/. Pure numpy and PIL.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from PIL import Image
from PIL import ImageDraw

_RED = np.array([255.0, 40.0, 40.0])
_GREEN = (40, 230, 60)
_ORANGE = (255, 160, 0)


def _to_uint8(frame: np.ndarray) -> np.ndarray:
  """A [H, W, 3] frame in [0, 1] (or ImageNet-normalised: rescaled to its own range)."""
  frame = np.asarray(frame, np.float32)
  if frame.min() < 0 or frame.max() > 1:
    frame = (frame - frame.min()) / max(float(np.ptp(frame)), 1e-6)
  return (np.clip(frame, 0, 1) * 255).astype(np.uint8)


def _overlay(frame: np.ndarray, heat: np.ndarray, scale: int) -> Image.Image:
  """frame uint8 [H, W, 3] with heat [Hp, Wp] in [0, 1] blended in red, upscaled x `scale`."""
  height, width = frame.shape[:2]
  cells = np.kron(heat, np.ones((height // heat.shape[0], width // heat.shape[1])))
  alpha = 0.65 * cells[..., None]
  blended = frame * (1 - alpha) + _RED * alpha
  image = Image.fromarray(blended.astype(np.uint8))
  return image.resize((width * scale, height * scale), Image.Resampling.NEAREST)


def grounding_figure(
  frames: np.ndarray,
  soft_assignment: np.ndarray,
  grid: tuple[int, int, int],
  noun_emb: np.ndarray,
  noun_valid: np.ndarray,
  group_emb: np.ndarray,
  boxes: np.ndarray,
  visible: np.ndarray,
  names: Sequence[str] = (),
  scale: int = 3,
) -> np.ndarray:
  """uint8 [rows * H', N_t * W', 3] for one clip.

  Args:
    frames: [T, H, W, 3] the clip's frames (as the model saw them).
    soft_assignment: [N, M] the last grouping block's soft assignment, N = N_t * H_p * W_p.
    grid: (N_t, H_p, W_p).
    noun_emb: [K, E], noun_valid: [K], group_emb: [M, E] (L2-normalised embeddings).
    boxes: [K, T, 4] (ymin, xmin, ymax, xmax) in [0, 1], visible: [K, T].
    names: the nouns' text, drawn on their row when given.
  """
  n_t, h_p, w_p = grid
  per_position = frames.shape[0] // n_t
  chosen = np.argmax(noun_emb @ group_emb.T, axis=-1)  # [K], ties -> lowest, as pointing
  maps = soft_assignment.reshape(n_t, h_p, w_p, -1)
  height, width = frames.shape[1] * scale, frames.shape[2] * scale
  rows = []
  for k in np.flatnonzero(noun_valid):
    heat = maps[..., chosen[k]]
    heat = heat / max(float(heat.max()), 1e-6)
    cells = []
    for t in range(n_t):
      f = t * per_position + per_position // 2  # the position's middle frame
      image = _overlay(_to_uint8(frames[f]), heat[t], scale)
      draw = ImageDraw.Draw(image)
      peak = int(np.argmax(heat[t]))
      cy, cx = (peak // w_p + 0.5) * height / h_p, (peak % w_p + 0.5) * width / w_p
      draw.ellipse([cx - 3, cy - 3, cx + 3, cy + 3], outline=(255, 255, 0), width=2)
      if visible[k, f]:
        ymin, xmin, ymax, xmax = boxes[k, f]
        draw.rectangle([xmin * width, ymin * height, xmax * width, ymax * height], outline=_GREEN)
      if t == 0 and k < len(names):
        draw.text((2, 2), names[k], fill=(255, 255, 255))
      cells.append(np.asarray(image))
    rows.append(np.concatenate(cells, axis=1))
  if not rows:  # no valid noun: a blank strip the width of a row
    return np.zeros((height, n_t * width, 3), np.uint8)
  return np.concatenate(rows, axis=0)


def similarity_figure(clip_features: np.ndarray, fg_mask: np.ndarray, cell: int = 24) -> np.ndarray:
  """uint8 image of one or more clips side by side: clip_features [C, P, D] (or [P, D]),
  fg_mask [C, P] (or [P]). Cell (a, b) is cos(z_a, z_b) mapped from [-1, 1] to black..white;
  a bar of width cell / 3 left of each row and above each column is orange on foreground
  positions, dark grey on background ones; clips are separated by a gap of one cell."""
  z = np.asarray(clip_features, np.float32)
  mask = np.asarray(fg_mask)
  if z.ndim == 2:
    z, mask = z[None], mask[None]
  bar, gap = max(cell // 3, 2), cell
  panels = []
  for features, fg in zip(z, mask):
    unit = features / np.maximum(np.linalg.norm(features, axis=-1, keepdims=True), 1e-6)
    cos = unit @ unit.T
    grey = ((cos + 1) / 2 * 255).clip(0, 255).astype(np.uint8)
    size = len(fg) * cell
    panel = np.full((size + bar, size + bar, 3), 255, np.uint8)
    panel[bar:, bar:] = np.kron(grey, np.ones((cell, cell), np.uint8))[..., None]
    for p, is_fg in enumerate(fg):
      colour = _ORANGE if is_fg > 0.5 else (70, 70, 70)
      panel[bar + p * cell : bar + (p + 1) * cell, :bar] = colour
      panel[:bar, bar + p * cell : bar + (p + 1) * cell] = colour
    panels.append(panel)
    panels.append(np.full((panel.shape[0], gap, 3), 255, np.uint8))
  return np.concatenate(panels[:-1], axis=1)
