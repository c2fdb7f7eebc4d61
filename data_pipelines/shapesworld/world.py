"""ShapesWorld scenes: seeded sampling of objects and action phases, and exact rendering.

A Scene is plain data: objects with their initial state and time segments, in each of which
one object performs one action of text.ACTIONS. `sample_scene` draws a scene from a numpy
Generator (nothing else is random); `render` turns it into frames, index masks, boxes and
visibility with numpy only. Captions and QA come from text.py and need no rendering.

Geometry (pixel units, pixel (i, j) has its centre at (i + 0.5, j + 0.5)):
  an object of `size` r centred at (x, y) covers the pixels whose centre lies inside its shape
  scaled by r: circle u^2 + v^2 <= 1, square |u|, |v| <= 1, diamond |u| + |v| <= 1, triangle
  apex (0, -1) and base (+-1, 1), five-pointed star with tips on the unit circle, where
  (u, v) = ((px - x) / r, (py - y) / r). Its box is the shape's full extent, clipped to the
  frame, so a box always contains its object's mask pixels.
Time: a segment [start, end) has progress p(t) = clip((t - start + 1) / (end - start), 0, 1),
  so every frame of the segment differs from the one before and the action is complete at
  end - 1. Moves and size changes are linear in p; "appear"/"disappear" fade opacity 0 -> 1 /
  1 -> 0; "change colour" blends RGB. A pixel belongs to an object in the mask only where the
  object is drawn with opacity >= 0.5 (later objects on top); `visible` = the object has at
  least one mask pixel in the frame, so a faint half-faded or fully occluded object is invisible.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, List, Optional, Tuple

import numpy as np

from data_pipelines.shapesworld import text

# Object colours are saturated (channel spread >= 160) or bright (white, all channels 245).
# Backgrounds keep spread <= 80 and every channel <= 170, so no background pixel equals (or
# comes within 35 levels of) an object colour.
PALETTE = {
  "red": (230, 40, 40),
  "orange": (245, 140, 20),
  "yellow": (235, 225, 30),
  "green": (40, 200, 60),
  "cyan": (30, 210, 225),
  "blue": (40, 80, 240),
  "purple": (165, 50, 225),
  "white": (245, 245, 245),
}
BACKGROUND_MAX_CHANNEL = 170.0
BACKGROUND_KINDS = ("noise", "stripes", "gradient")
_TERMINAL = ("disappear", "change colour")  # nothing may follow these for the same object


def _star() -> np.ndarray:
  k = np.arange(10)
  angle = np.deg2rad(-90.0 + 36.0 * k)
  radius = np.where(k % 2 == 0, 1.0, np.sin(np.deg2rad(18)) / np.sin(np.deg2rad(54)))
  return np.stack([radius * np.cos(angle), radius * np.sin(angle)], -1)


_STAR = _star()
# Unit extent (umin, vmin, umax, vmax) of each shape.
EXTENT = {s: (-1.0, -1.0, 1.0, 1.0) for s in text.SHAPES}
EXTENT["star"] = (*_STAR.min(0), *_STAR.max(0))


@dataclasses.dataclass(frozen=True)
class Obj:
  colour: str
  shape: str
  size: float  # r in pixels: the shape spans about 2r
  x: float  # initial centre, pixels
  y: float


@dataclasses.dataclass(frozen=True)
class Segment:
  start: int  # first frame
  end: int  # one past the last frame
  obj: int
  action: str
  dx: float = 0.0  # total displacement / size change over the segment, pixels
  dy: float = 0.0
  dsize: float = 0.0
  colour: Optional[str] = None  # new colour of "change colour"


@dataclasses.dataclass(frozen=True)
class Background:
  kind: str  # one of BACKGROUND_KINDS
  base: Tuple[float, float, float]
  tint: Tuple[float, float, float]
  amplitude: float
  angle: float  # radians, stripes and gradient direction
  period: float  # stripes period, pixels
  grid: int  # noise lattice size
  noise_seed: int


@dataclasses.dataclass(frozen=True)
class Scene:
  num_frames: int
  height: int
  width: int
  objects: Tuple[Obj, ...]
  segments: Tuple[Segment, ...]  # ordered by start; concurrent segments share start and end
  background: Background


@dataclasses.dataclass
class Rendering:
  frames: np.ndarray  # uint8 [T, H, W, 3]
  masks: np.ndarray  # uint8 [T, H, W], 0 background, o + 1 object o
  boxes: np.ndarray  # float32 [T, O, 4] (ymin, xmin, ymax, xmax) in [0, 1]
  visible: np.ndarray  # int64 [T, O]


def progress(t: np.ndarray, start: int, end: int) -> np.ndarray:
  """Fraction of a segment's action done at frame t (see module docstring)."""
  return np.clip((np.asarray(t, np.float64) - start + 1) / (end - start), 0.0, 1.0)


def tracks(scene: Scene) -> Dict[str, np.ndarray]:
  """Per-frame object state: x, y, size, opacity [T, O] and rgb [T, O, 3] (float64)."""
  t = np.arange(scene.num_frames)
  num = len(scene.objects)
  out = {k: np.zeros((scene.num_frames, num)) for k in ("x", "y", "size", "opacity")}
  out["rgb"] = np.zeros((scene.num_frames, num, 3))
  for o, obj in enumerate(scene.objects):
    out["x"][:, o], out["y"][:, o], out["size"][:, o] = obj.x, obj.y, obj.size
    opacity = np.ones(scene.num_frames)
    rgb = np.tile(np.asarray(PALETTE[obj.colour], np.float64), (scene.num_frames, 1))
    for seg in (s for s in scene.segments if s.obj == o):
      p = progress(t, seg.start, seg.end)
      out["x"][:, o] += seg.dx * p
      out["y"][:, o] += seg.dy * p
      out["size"][:, o] += seg.dsize * p
      if seg.action == "appear":
        opacity = opacity * p
      elif seg.action == "disappear":
        opacity = opacity * (1.0 - p)
      elif seg.action == "change colour":
        rgb = rgb + (np.asarray(PALETTE[seg.colour]) - rgb) * p[:, None]
    out["opacity"][:, o], out["rgb"][:, o] = opacity, rgb
  return out


def _inside(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
  """Boolean coverage of the unit shape at normalised offsets (u, v)."""
  if shape == "circle":
    return u * u + v * v <= 1.0
  if shape == "square":
    return (np.abs(u) <= 1.0) & (np.abs(v) <= 1.0)
  if shape == "diamond":
    return np.abs(u) + np.abs(v) <= 1.0
  if shape == "triangle":
    return (v <= 1.0) & (v >= 2.0 * np.abs(u) - 1.0)
  if shape == "star":  # even-odd ray casting: the star is not convex
    x1, y1 = _STAR[:, 0, None, None], _STAR[:, 1, None, None]
    x2, y2 = np.roll(_STAR[:, 0], -1)[:, None, None], np.roll(_STAR[:, 1], -1)[:, None, None]
    crosses = (y1 > v) != (y2 > v)
    x_at = x1 + (v - y1) * (x2 - x1) / np.where(y2 == y1, 1.0, y2 - y1)
    return np.logical_xor.reduce(crosses & (u < x_at), axis=0)
  raise ValueError(f"unknown shape {shape!r}")


def box(shape: str, x: float, y: float, size: float, height: int, width: int) -> np.ndarray:
  """Normalised (ymin, xmin, ymax, xmax) of the full shape, clipped to [0, 1]."""
  umin, vmin, umax, vmax = EXTENT[shape]
  b = np.array(
    [
      (y + vmin * size) / height,
      (x + umin * size) / width,
      (y + vmax * size) / height,
      (x + umax * size) / width,
    ]
  )
  return np.clip(b, 0.0, 1.0)


def _coverage(shape: str, x: float, y: float, size: float, height: int, width: int):
  """(row0, col0, bool window) of the pixels covered by an object; window may be empty."""
  umin, vmin, umax, vmax = EXTENT[shape]
  r0, r1 = max(0, int(np.floor(y + vmin * size))), min(height, int(np.ceil(y + vmax * size)))
  c0, c1 = max(0, int(np.floor(x + umin * size))), min(width, int(np.ceil(x + umax * size)))
  v = ((np.arange(r0, r1) + 0.5 - y) / size)[:, None]
  u = ((np.arange(c0, c1) + 0.5 - x) / size)[None, :]
  return r0, c0, _inside(shape, u, v)


def background(bg: Background, height: int, width: int) -> np.ndarray:
  """Float32 [H, W, 3] low-contrast texture, every channel in [0, BACKGROUND_MAX_CHANNEL]."""
  yy, xx = np.meshgrid(np.arange(height) + 0.5, np.arange(width) + 0.5, indexing="ij")
  along = xx * np.cos(bg.angle) + yy * np.sin(bg.angle)
  if bg.kind == "stripes":
    pattern = np.sin(2.0 * np.pi * along / bg.period)
  elif bg.kind == "gradient":
    pattern = 2.0 * (along - along.min()) / max(np.ptp(along), 1e-6) - 1.0
  elif bg.kind == "noise":
    # Bilinear upsampling of a small random lattice: smooth blobs, not pixel noise.
    lattice = np.random.default_rng(bg.noise_seed).uniform(-1.0, 1.0, (bg.grid, bg.grid))
    gy = yy[:, 0] / height * (bg.grid - 1)
    gx = xx[0] / width * (bg.grid - 1)
    rows = np.stack([np.interp(gx, np.arange(bg.grid), row) for row in lattice])
    pattern = np.stack([np.interp(gy, np.arange(bg.grid), col) for col in rows.T], axis=1)
  else:
    raise ValueError(f"unknown background {bg.kind!r}")
  img = np.asarray(bg.base) + bg.amplitude * pattern[..., None] * np.asarray(bg.tint)
  return np.clip(img, 0.0, BACKGROUND_MAX_CHANNEL).astype(np.float32)


def render(scene: Scene) -> Rendering:
  """Draws every frame (objects in index order, later on top) with exact annotations."""
  h, w, num = scene.height, scene.width, len(scene.objects)
  state = tracks(scene)
  bg = background(scene.background, h, w)
  frames = np.empty((scene.num_frames, h, w, 3), np.uint8)
  masks = np.zeros((scene.num_frames, h, w), np.uint8)
  boxes = np.zeros((scene.num_frames, num, 4), np.float32)
  cache = {}  # idle objects repeat their state: rasterise each state once
  for t in range(scene.num_frames):
    img = bg.copy()
    for o, obj in enumerate(scene.objects):
      x, y, size = state["x"][t, o], state["y"][t, o], state["size"][t, o]
      boxes[t, o] = box(obj.shape, x, y, size, h, w)
      alpha = state["opacity"][t, o]
      if alpha <= 0.0:
        continue
      key = (obj.shape, x, y, size)
      if key not in cache:
        cache[key] = _coverage(obj.shape, x, y, size, h, w)
      r0, c0, cov = cache[key]
      window = img[r0 : r0 + cov.shape[0], c0 : c0 + cov.shape[1]]
      window[cov] += np.float32(alpha) * (state["rgb"][t, o].astype(np.float32) - window[cov])
      if alpha >= 0.5:
        masks[t, r0 : r0 + cov.shape[0], c0 : c0 + cov.shape[1]][cov] = o + 1
    frames[t] = np.clip(np.rint(img), 0, 255).astype(np.uint8)
  visible = (masks[:, None] == np.arange(1, num + 1)[None, :, None, None]).any((2, 3))
  return Rendering(frames, masks, boxes, visible.astype(np.int64))


# ----------------------------------------------------------------------------- sampling

_MOVES = {"move left": (-1, 0), "move right": (1, 0), "move up": (0, -1), "move down": (0, 1)}
_MOVE_RANGE = (0.2, 0.35)  # move distance, fraction of the frame side
_SCALE_RANGE = (1.35, 1.8)  # grow / shrink factor
_MARGIN = 1.0  # pixels kept between any shape and the frame border


def _sample_names(
  rng, num: int, holdout: List[Tuple[str, str]], compositional: bool, distractor_prob: float
) -> List[Tuple[str, str]]:
  """(colour, shape) of each object, all distinct; the first is a holdout combo when
  `compositional`, and no object is one otherwise. Each later object is, with probability
  `distractor_prob`, a distractor sharing the colour or the shape of an earlier object."""
  combos = [(c, s) for c in text.COLOURS for s in text.SHAPES]
  allowed = combos if compositional else [c for c in combos if c not in holdout]
  names = [
    holdout[rng.integers(len(holdout))] if compositional else allowed[rng.integers(len(allowed))]
  ]
  for _ in range(num - 1):
    pool = [c for c in allowed if c not in names]
    if rng.random() < distractor_prob:
      ref, axis = names[rng.integers(len(names))], int(rng.integers(2))
      similar = [c for c in pool if c[axis] == ref[axis]]
      pool = similar or pool
    names.append(pool[rng.integers(len(pool))])
  return names


def _sample_slots(
  rng, num_frames: int, num_phases: int, idle_weight: float, min_len: int
) -> List[Tuple[int, int]]:
  """[start, end) of each phase: at least `min_len` frames each, the rest of the clip shared
  between phases (weights U(0.6, 1.4)) and the idle gaps around them (weights
  idle_weight * U(0, 1)) by largest-remainder rounding."""
  min_len = min(min_len, num_frames // num_phases)
  weights = np.zeros(2 * num_phases + 1)
  weights[1::2] = rng.uniform(0.6, 1.4, num_phases)
  weights[0::2] = rng.uniform(0.0, 1.0, num_phases + 1) * idle_weight
  share = (num_frames - num_phases * min_len) * weights / weights.sum()
  lengths = np.floor(share).astype(int)
  leftover = int(num_frames - num_phases * min_len - lengths.sum())
  lengths[np.argsort(-(share - lengths), kind="stable")[:leftover]] += 1
  lengths[1::2] += min_len
  ends = np.cumsum(lengths)
  return [(int(ends[i] - lengths[i]), int(ends[i])) for i in range(1, 2 * num_phases, 2)]


def _fits(keys: List[Tuple[float, float, float]], height: int, width: int) -> bool:
  """Whether some start position keeps a shape of these (dx, dy, size) keyframes in frame."""
  d = np.asarray(keys)
  span_x = (d[:, 0] + d[:, 2]).max() - (d[:, 0] - d[:, 2]).min()
  span_y = (d[:, 1] + d[:, 2]).max() - (d[:, 1] - d[:, 2]).min()
  return span_x <= width - 2 * _MARGIN and span_y <= height - 2 * _MARGIN


def _plan(rng, config, slots, names, sizes, forced: Optional[int], holdout):
  """Chooses the acting object(s) and the action of each slot.

  Returns (segments, keyframes): keyframes[o] lists (dx, dy, size) of object o at its start
  and after each of its segments. Actions are drawn uniformly among the feasible ones: the
  object stays inside the frame from some start position, "appear" is an object's first
  action, nothing follows a terminal action, and a terminal action leaves another object free
  to act in later slots. With `forced`, that object acts in a random slot unless it already did.
  """
  h = w = int(config.resolution)
  r_min = config.min_object_size * config.resolution / 2
  r_max = config.max_object_size * config.resolution / 2
  num = len(names)
  keys = [[(0.0, 0.0, float(s))] for s in sizes]
  acted, done = [False] * num, [False] * num
  current = list(names)
  forced_slot = int(rng.integers(len(slots)))
  segments = []
  for k, (start, end) in enumerate(slots):
    free = [o for o in range(num) if not done[o]]
    first = (
      forced
      if (forced is not None and k == forced_slot and not acted[forced])
      else (free[rng.integers(len(free))])
    )
    actors = [first]
    others = [o for o in free if o != first]
    if others and rng.random() < config.concurrent_prob:
      actors.append(others[rng.integers(len(others))])
    for o in actors:
      terminal_ok = k == len(slots) - 1 or sum(not d for d in done) >= 2
      for a in rng.permutation(len(text.ACTIONS)):
        action = text.ACTIONS[a]
        dx, dy, r = keys[o][-1]
        new_size, colour = r, None
        if action in _MOVES:
          sx, sy = _MOVES[action]
          distance = rng.uniform(*_MOVE_RANGE) * (w if sx else h)
          dx, dy = dx + sx * distance, dy + sy * distance
        elif action == "grow":
          if r * _SCALE_RANGE[0] > r_max:
            continue
          new_size = rng.uniform(r * _SCALE_RANGE[0], min(r * _SCALE_RANGE[1], r_max))
        elif action == "shrink":
          if r / _SCALE_RANGE[0] < r_min:
            continue
          new_size = rng.uniform(max(r / _SCALE_RANGE[1], r_min), r / _SCALE_RANGE[0])
        elif action == "appear" and acted[o]:
          continue
        elif action in _TERMINAL and not terminal_ok:
          continue
        if action == "change colour":
          taken = set(names) | set(current)
          shape = names[o][1]
          options = [
            c
            for c in text.COLOURS
            if c != current[o][0]
            and (c, shape) not in taken
            and (forced is not None or (c, shape) not in holdout)
          ]
          if not options:
            continue
          colour = options[rng.integers(len(options))]
        if not _fits(keys[o] + [(dx, dy, new_size)], h, w):
          continue
        segments.append(
          Segment(
            start, end, o, action, dx - keys[o][-1][0], dy - keys[o][-1][1], new_size - r, colour
          )
        )
        keys[o].append((dx, dy, new_size))
        acted[o], done[o] = True, action in _TERMINAL
        if colour is not None:
          current[o] = (colour, names[o][1])
        break
  return segments, keys


def _place(rng, keys, height: int, width: int, tries: int = 8) -> List[Tuple[float, float]]:
  """Initial centres: inside the frame through all keyframes; of `tries` uniform candidates,
  the one farthest from the objects already placed (less occlusion, easier grounding)."""
  placed = []
  for obj_keys in keys:
    d = np.asarray(obj_keys)
    lo = np.array([(d[:, 2] - d[:, 0]).max(), (d[:, 2] - d[:, 1]).max()]) + _MARGIN
    hi = np.array([(width - d[:, 2] - d[:, 0]).min(), (height - d[:, 2] - d[:, 1]).min()])
    candidates = rng.uniform(lo, np.maximum(hi - _MARGIN, lo), (tries, 2))
    if placed:
      dist = np.linalg.norm(candidates[:, None] - np.asarray(placed)[None], axis=-1).min(1)
      placed.append(tuple(candidates[int(np.argmax(dist))]))
    else:
      placed.append(tuple(candidates[0]))
  return placed


def _sample_background(rng, resolution: int) -> Background:
  """Grey-ish base (channels 30..150, spread <= 40) plus a texture of amplitude <= 16 whose
  tint spread adds <= 13: spread stays <= 80 and channels are clipped at 170."""
  grey = rng.uniform(50.0, 130.0)
  return Background(
    kind=BACKGROUND_KINDS[rng.integers(len(BACKGROUND_KINDS))],
    base=tuple(grey + rng.uniform(-20.0, 20.0, 3)),
    tint=tuple(rng.uniform(0.6, 1.4, 3)),
    amplitude=float(rng.uniform(6.0, 16.0)),
    angle=float(rng.uniform(0.0, 2 * np.pi)),
    period=float(rng.uniform(6.0, 16.0) * resolution / 64),
    grid=int(rng.integers(3, 9)),
    noise_seed=int(rng.integers(2**31)),
  )


def sample_scene(rng: np.random.Generator, config, compositional: bool = False) -> Scene:
  """Draws one scene; `config` holds the world knobs of build.default_config().

  With `compositional` the scene contains one of config.holdout_combos and that object acts;
  otherwise no object ever has a holdout (colour, shape), not even after a colour change.
  """
  holdout = [tuple(c) for c in config.holdout_combos]
  num_objects = int(rng.integers(config.min_objects, config.max_objects + 1))
  num_phases = int(rng.integers(config.min_phases, config.max_phases + 1))
  names = _sample_names(rng, num_objects, holdout, compositional, config.distractor_prob)
  # Shuffle so the holdout object (and the objects distractors copy) is not always drawn first.
  order = rng.permutation(num_objects)
  names = [names[i] for i in order]
  forced = int(np.argmax(order == 0)) if compositional else None
  r_min = config.min_object_size * config.resolution / 2
  r_max = config.max_object_size * config.resolution / 2
  sizes = rng.uniform(r_min, r_max, num_objects)
  slots = _sample_slots(
    rng, config.num_frames, num_phases, config.idle_weight, config.min_segment_frames
  )
  segments, keys = _plan(rng, config, slots, names, sizes, forced, holdout)
  positions = _place(rng, keys, config.resolution, config.resolution)
  objects = tuple(
    Obj(c, s, float(r), float(x), float(y)) for (c, s), r, (x, y) in zip(names, sizes, positions)
  )
  return Scene(
    config.num_frames,
    config.resolution,
    config.resolution,
    objects,
    tuple(segments),
    _sample_background(rng, config.resolution),
  )
