"""The figures (svilm/evaluators/figures.py): what is drawn where, checked on pixels."""

from __future__ import annotations

import numpy as np

from svilm.evaluators import figures


def test_grounding_figure_marks_the_chosen_groups_map_and_the_box():
  # One clip of 4 frames at 32 px, grid (2, 2, 2): 2 temporal positions of 2 frames.
  frames = np.zeros((4, 32, 32, 3), np.float32)
  grid = (2, 2, 2)
  # Two groups; noun 0 is nearest group 1, whose map is all on the top-left token.
  soft = np.zeros((8, 2), np.float32)
  soft[[0, 4], 1] = 1.0  # token (y=0, x=0) of both positions
  soft[:, 0] = 0.5
  noun_emb = np.array([[0.0, 1.0], [1.0, 0.0]])
  group_emb = np.array([[1.0, 0.0], [0.0, 1.0]])
  boxes = np.zeros((2, 4, 4), np.float32)
  boxes[0, :] = [0.5, 0.5, 1.0, 1.0]  # bottom-right quarter
  visible = np.ones((2, 4), np.int64)
  image = figures.grounding_figure(
    frames, soft, grid, noun_emb, np.array([1, 0]), group_emb, boxes, visible, scale=1
  )
  # One row (one valid noun) of 2 positions, each a 32 x 32 frame.
  assert image.shape == (32, 64, 3) and image.dtype == np.uint8
  # The chosen map (group 1) reddens the top-left token of each position, not the others.
  assert image[4, 4, 0] > 150 and image[4, 4, 1] < 50
  assert image[4, 20].tolist() == [0, 0, 0] and image[20, 36].tolist() == [0, 0, 0]
  # The box's outline is green along its top edge (row 16) from column 16.
  assert image[16, 24].tolist() == [40, 230, 60]
  assert image[16, 32 + 24].tolist() == [40, 230, 60]  # and in the second position's frame


def test_similarity_figure_cells_and_foreground_bars():
  # Positions 0, 1 identical (cos 1), position 2 opposite (cos -1); foreground = position 2.
  z = np.array([[1.0, 0.0], [1.0, 0.0], [-1.0, 0.0]])
  image = figures.similarity_figure(z, np.array([0, 0, 1]), cell=9)
  bar = 3
  assert image.shape == (3 * 9 + bar, 3 * 9 + bar, 3)
  at = lambda a, b: image[bar + a * 9 + 4, bar + b * 9 + 4].tolist()
  assert at(0, 1) == [255, 255, 255] and at(0, 2) == [0, 0, 0] and at(2, 2) == [255, 255, 255]
  assert image[bar + 2 * 9 + 4, 0].tolist() == [255, 160, 0]  # foreground row marked orange
  assert image[bar + 4, 0].tolist() == [70, 70, 70]  # background row grey
  # Two clips side by side, a one-cell gap between them.
  pair = figures.similarity_figure(np.stack([z, z]), np.array([[0, 0, 1], [1, 0, 0]]), cell=9)
  assert pair.shape == (30, 2 * 30 + 9, 3)
