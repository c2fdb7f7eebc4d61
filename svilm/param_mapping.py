"""Maps a checkpoint's parameters into a new model's parameter tree (for finetuning).

    params, report = map_params(source, target, mapping, source_grid=..., target_grid=...)
    print(format_report(report))

`source` is the checkpoint's params and `target` the freshly initialised params of the new
model, both nested dicts of arrays (plain; `nn.LogicallyPartitioned` boxes are unboxed first).
Paths are "/"-joined keys, e.g. "video_encoder/pos_embedding/joint"; "" is the whole tree.

`mapping` is {source_subtree_path: target_subtree_path}. Every target leaf under a mapped target
subtree T, at relative path r, takes the source leaf at the same relative path r under the
mapped source subtree S:

  * same shape: copied, cast to the target leaf's dtype (status "loaded");
  * a video position table (path ending in "pos_embedding/joint", ".../temporal" or
    ".../spatial", see `vit.SpaceTimePositionEmbedding`) whose tubelet grid differs: resampled
    linearly over the grid (status "resampled"; `resample_grid`). Needs `source_grid` and
    `target_grid` = (N_t, H_p, W_p); without them a table of a different shape is an error;
  * the text position table (a leaf named "position_embeddings", see `text_encoder.TextEncoder`)
    with a different number of rows: a longer target keeps the source's rows first and its own
    fresh initialisation after them, a shorter one the source's first rows (status "resampled");
  * any other shape difference, or a target leaf with no source leaf at its path: `MappingError`
    naming the path (and both shapes).

Target leaves under no mapped subtree keep their fresh initialisation (status "initialised").
Source leaves that no target leaf took are reported as unused; that is not an error (e.g. a
pretraining head the finetuned model drops).

The functions are pure: inputs are never modified, and every returned leaf is a new host
(numpy) array with the target leaf's dtype and shape, ready for `jax.device_put`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
import dataclasses
import re
from typing import Any

import flax.linen as nn
import numpy as np

Array = Any
Grid = tuple[int, int, int]

OPTIONAL = "?"  # prefix of a mapping's source path that the checkpoint may lack
LOADED = "loaded"
RESAMPLED = "resampled"
INITIALISED = "initialised"
STATUSES = (LOADED, RESAMPLED, INITIALISED)

# Path suffixes of the video position tables (`vit.SpaceTimePositionEmbedding`, created under
# the name "pos_embedding" by `video_encoder.VideoEncoder`) and the leaf name of the text table.
VIDEO_TABLES = ("pos_embedding/joint", "pos_embedding/temporal", "pos_embedding/spatial")
TEXT_TABLE = "position_embeddings"

# Names of per-layer params in the unscanned and scanned layouts: a structure mismatch at one
# of them is most likely a layout difference, which `svilm.models.svilm.convert_layer_layout`
# fixes, so the error says so.
_LAYER_NAME = re.compile(r"^(block_\d+|blocks_\d+_\d+|layer_\d+|layers)$")


class MappingError(ValueError):
  """A checkpoint cannot be mapped onto the target tree as asked (the message says where)."""


@dataclasses.dataclass(frozen=True)
class LeafReport:
  """What `map_params` did for one target leaf.

  Attributes:
    status: LOADED (copied from `source`), RESAMPLED (a position table resampled, extended or
      cut from `source`) or INITIALISED (under no mapped subtree: the target's fresh value).
    shape: the target leaf's shape (that of the returned leaf).
    source: the source leaf's path, or None when INITIALISED.
    source_shape: the source leaf's shape, or None when INITIALISED.
    detail: for RESAMPLED, how (grids, or which rows came from where); "" otherwise.
  """

  status: str
  shape: tuple[int, ...]
  source: str | None = None
  source_shape: tuple[int, ...] | None = None
  detail: str = ""


@dataclasses.dataclass(frozen=True)
class MappingReport:
  """The outcome of `map_params`.

  Attributes:
    leaves: target leaf path -> LeafReport, for every leaf of the target tree, in the target's
      flattening order.
    unused: source leaf path -> shape, for every source leaf that no target leaf took (those
      under no mapped source subtree, and those under one whose path the target lacks), sorted.
  """

  leaves: dict[str, LeafReport]
  unused: dict[str, tuple[int, ...]]

  def paths(self, status: str) -> list[str]:
    """Target leaf paths with the given status, in flattening order."""
    _check_status(status)
    return [path for path, leaf in self.leaves.items() if leaf.status == status]

  def totals(self) -> dict[str, tuple[int, int]]:
    """{status: (leaves, params)} for the three statuses, plus "unused" for source leaves."""
    totals = {status: (0, 0) for status in STATUSES}
    for leaf in self.leaves.values():
      count, size = totals[leaf.status]
      totals[leaf.status] = (count + 1, size + _size(leaf.shape))
    totals["unused"] = (len(self.unused), sum(_size(shape) for shape in self.unused.values()))
    return totals


def _check_status(status: str) -> None:
  if status not in STATUSES:
    raise ValueError(f"status must be one of {STATUSES}, got {status!r}.")


def _size(shape: Sequence[int]) -> int:
  return int(np.prod(shape, dtype=np.int64))


def flatten(tree: Mapping[str, Any]) -> dict[str, Array]:
  """{"/"-joined path: leaf} of a nested mapping, in its iteration order (depth first).

  Every non-mapping value is a leaf; a boxed leaf (`nn.LogicallyPartitioned` or any other
  `nn.meta.AxisMetadata`) is unboxed to its value. Empty mappings disappear (they hold no
  parameters).

  Raises:
    ValueError: if a key is not a non-empty string without "/" (the path would be ambiguous).
  """
  flat = {}

  def visit(node: Mapping[str, Any], prefix: str) -> None:
    for key, value in node.items():
      if not isinstance(key, str) or not key or "/" in key:
        raise ValueError(
          f"Cannot flatten key {key!r} under {prefix or '<root>'!r}: keys must "
          "be non-empty strings without '/'."
        )
      path = f"{prefix}/{key}" if prefix else key
      if isinstance(value, Mapping):
        visit(value, path)
      else:
        flat[path] = value.unbox() if isinstance(value, nn.meta.AxisMetadata) else value

  visit(tree, "")
  return flat


def unflatten(flat: Mapping[str, Array]) -> dict[str, Any]:
  """The inverse of `flatten`: a nested dict (in the order of `flat`) from {path: leaf}.

  Raises:
    ValueError: if a path is empty, has an empty component, or is both a leaf and a prefix of
      another path.
  """
  tree: dict[str, Any] = {}
  for path, leaf in flat.items():
    keys = path.split("/")
    if not all(keys):
      raise ValueError(f"Cannot unflatten path {path!r}: empty component.")
    node = tree
    for i, key in enumerate(keys[:-1]):
      node = node.setdefault(key, {})
      if not isinstance(node, dict):
        raise ValueError(f"Cannot unflatten {path!r}: {'/'.join(keys[: i + 1])!r} is a leaf.")
    if keys[-1] in node:
      raise ValueError(f"Cannot unflatten {path!r}: it is also a prefix of another path.")
    node[keys[-1]] = leaf
  return tree


def _linear_weights(n_in: int, n_out: int) -> np.ndarray:
  """[n_out, n_in] weights of linear resampling with half-pixel centres and edge clamping.

  Output sample i (centre i + 1/2 on a [0, n_out] axis) reads the input at coordinate
  (i + 1/2) * n_in / n_out - 1/2 (input sample j has its centre at j + 1/2), clamped to
  [0, n_in - 1] and interpolated between its two neighbours. This is
  jax.image.resize(method="linear", antialias=False) along one axis (there, the kernel's
  weights beyond the edge are dropped and the rest renormalised, which is the same clamping).
  n_in == n_out gives the identity exactly.
  """
  coords = (2 * np.arange(n_out, dtype=np.float64) + 1) * n_in / (2 * n_out) - 0.5
  coords = np.clip(coords, 0.0, n_in - 1)
  low = np.floor(coords).astype(np.int64)
  high = np.minimum(low + 1, n_in - 1)
  frac = coords - low
  weights = np.zeros((n_out, n_in), np.float64)
  rows = np.arange(n_out)
  np.add.at(weights, (rows, low), 1.0 - frac)
  np.add.at(weights, (rows, high), frac)
  return weights


def resample_grid(x: Array, out_shape: Sequence[int]) -> np.ndarray:
  """Linear resampling of the leading axes of `x` to `out_shape`, one axis at a time.

  x has shape [*in_shape, ...]; the len(out_shape) leading axes are resampled (half-pixel
  centres, edge clamping, no antialiasing: see `_linear_weights`), the trailing axes (e.g. the
  embedding width) are carried along. Linear resampling is separable, so this equals
  jax.image.resize(x, (*out_shape, ...), "linear", antialias=False) over those axes.

  Returns:
    A float64 array [*out_shape, ...].
  """
  y = np.asarray(x, dtype=np.float64)
  out_shape = tuple(int(n) for n in out_shape)
  if y.ndim < len(out_shape):
    raise ValueError(f"Cannot resample {len(out_shape)} axes of an array of shape {y.shape}.")
  for axis, n_out in enumerate(out_shape):
    if n_out <= 0:
      raise ValueError(f"Resampled sizes must be positive, got {out_shape}.")
    if y.shape[axis] != n_out:
      weights = _linear_weights(y.shape[axis], n_out)
      y = np.moveaxis(np.tensordot(weights, y, axes=([1], [axis])), 0, axis)
  return y


def _check_grid(name: str, grid: Sequence[int] | None) -> Grid | None:
  if grid is None:
    return None
  grid = tuple(grid)
  if len(grid) != 3 or not all(isinstance(n, (int, np.integer)) and n > 0 for n in grid):
    raise ValueError(f"{name} must be (N_t, H_p, W_p) of positive ints or None, got {grid}.")
  return tuple(int(n) for n in grid)


def _normalise_path(path: str, what: str) -> str:
  if not isinstance(path, str):
    raise MappingError(f"mapping {what} paths must be strings, got {path!r}.")
  return path.strip("/")


def _join(prefix: str, rel: str) -> str:
  return "/".join(p for p in (prefix, rel) if p)


def _select(flat: Mapping[str, Array], path: str) -> dict[str, Array]:
  """{path relative to `path`: leaf} for the leaves at or under `path` ("" = all)."""
  if not path:
    return dict(flat)
  prefix = path + "/"
  return {
    key[len(prefix) :] if key != path else "": leaf
    for key, leaf in flat.items()
    if key == path or key.startswith(prefix)
  }


def _overlaps(a: str, b: str) -> bool:
  return not a or not b or a == b or a.startswith(b + "/") or b.startswith(a + "/")


def _top_level(flat: Iterable[str]) -> list[str]:
  return sorted({path.split("/", 1)[0] for path in flat})


def _video_table_kind(path: str) -> str | None:
  for suffix in VIDEO_TABLES:
    if path == suffix or path.endswith("/" + suffix):
      return suffix.rsplit("/", 1)[1]
  return None


def _shape(leaf: Array) -> tuple[int, ...]:
  return tuple(int(n) for n in np.shape(leaf))


def _dtype(leaf: Array) -> np.dtype:
  dtype = getattr(leaf, "dtype", None)
  return np.dtype(dtype) if dtype is not None else np.asarray(leaf).dtype


def _map_video_table(
  path: str,
  kind: str,
  src: np.ndarray,
  target_shape: tuple[int, ...],
  source_grid: Grid | None,
  target_grid: Grid | None,
) -> tuple[np.ndarray | None, str]:
  """Resampled table, or (None, "") when the grids agree on the table's axes (plain copy)."""
  if source_grid is None or target_grid is None:
    if src.shape == target_shape:
      # Without grids nothing says the layout changed; equal shapes are taken as equal grids.
      return None, ""
    raise MappingError(
      f"Position table {path!r} has shape {src.shape} in the source and {target_shape} in the "
      f"target: resampling it needs the tubelet grids, but source_grid={source_grid} and "
      f"target_grid={target_grid}."
    )
  # The grid axes each table spans: joint all three, temporal N_t, spatial (H_p, W_p).
  axes = {"joint": slice(0, 3), "temporal": slice(0, 1), "spatial": slice(1, 3)}[kind]
  src_axes, tgt_axes = source_grid[axes], target_grid[axes]
  expected_src, expected_tgt = (_size(src_axes),), (_size(tgt_axes),)
  if (
    src.ndim != 2
    or target_shape[:1] != expected_tgt
    or src.shape[:1] != expected_src
    or len(target_shape) != 2
    or src.shape[1] != target_shape[1]
  ):
    raise MappingError(
      f"Position table {path!r}: source shape {src.shape} with source_grid {source_grid} "
      f"cannot map to target shape {target_shape} with target_grid {target_grid} (a {kind} "
      f"table has prod{tuple(src_axes)} = {expected_src[0]} source rows, "
      f"prod{tuple(tgt_axes)} = {expected_tgt[0]} target rows, and equal widths)."
    )
  if src_axes == tgt_axes:
    return None, ""
  width = src.shape[1]
  grid_table = src.reshape(*src_axes, width)
  resampled = resample_grid(grid_table, tgt_axes).reshape(target_shape)
  names = {"joint": "(t, h, w)", "temporal": "t", "spatial": "(h, w)"}[kind]
  return resampled, f"linear over {names}: {tuple(src_axes)} -> {tuple(tgt_axes)}"


def _map_leaf(
  target_path: str,
  source_path: str,
  source_leaf: Array,
  target_leaf: Array,
  source_grid: Grid | None,
  target_grid: Grid | None,
) -> tuple[np.ndarray, LeafReport]:
  src = np.asarray(source_leaf)
  target_shape, dtype = _shape(target_leaf), _dtype(target_leaf)
  kind = _video_table_kind(target_path)

  def report(status: str, detail: str = "") -> LeafReport:
    return LeafReport(status, target_shape, source_path, src.shape, detail)

  if kind is not None:
    resampled, detail = _map_video_table(
      target_path, kind, src, target_shape, source_grid, target_grid
    )
    if resampled is not None:
      return resampled.astype(dtype), report(RESAMPLED, detail)
  elif (
    target_path.rsplit("/", 1)[-1] == TEXT_TABLE
    and src.shape != target_shape
    and src.ndim == 2
    and len(target_shape) == 2
    and src.shape[1] == target_shape[1]
  ):
    n_src, n_tgt = src.shape[0], target_shape[0]
    if n_tgt > n_src:
      # Rows past the checkpoint's length were never trained; the target's own init is the
      # best start for them (BERT's init, the same as the checkpoint's before pretraining).
      out = np.array(target_leaf, dtype=dtype)
      out[:n_src] = src
      return out, report(
        RESAMPLED, f"rows 0-{n_src - 1} from source, {n_src}-{n_tgt - 1} fresh init"
      )
    return np.array(src[:n_tgt], dtype=dtype), report(RESAMPLED, f"first {n_tgt} of {n_src} rows")
  elif src.shape != target_shape:
    raise MappingError(
      f"Shape mismatch at {target_path!r}: source {source_path!r} has shape "
      f"{src.shape}, target has {target_shape}."
    )
  return np.array(src, dtype=dtype), report(LOADED)


def _missing_leaf_error(
  target_path: str, source_path: str, rel: str, source_sub: Mapping[str, Array], source_root: str
) -> MappingError:
  # Name what the source does hold at the deepest existing level, which is what one needs to
  # see to fix a rename or a layout difference.
  parts = rel.split("/") if rel else []
  depth = 0
  while depth < len(parts) and _select(source_sub, "/".join(parts[: depth + 1])):
    depth += 1
  level = "/".join(parts[:depth])
  here = _select(source_sub, level)
  keys = sorted({k.split("/", 1)[0] for k in here if k})
  hint = ""
  if any(_LAYER_NAME.match(p) for p in parts) or any(_LAYER_NAME.match(k) for k in keys):
    hint = (
      " If one model scans its layers and the other does not, convert the checkpoint "
      "first with svilm.models.svilm.convert_layer_layout."
    )
  where = _join(source_root, level) or "<root>"
  held = f"keys {keys}" if keys else "a leaf"
  return MappingError(
    f"Target leaf {target_path!r} has no source leaf at {source_path!r}: the "
    f"source holds {held} at {where!r}.{hint}"
  )


def map_params(
  source: Mapping[str, Any],
  target: Mapping[str, Any],
  mapping: Mapping[str, str],
  *,
  source_grid: Sequence[int] | None = None,
  target_grid: Sequence[int] | None = None,
) -> tuple[dict[str, Any], MappingReport]:
  """Target params with the mapped subtrees taken from `source` (module docstring).

  Args:
    source: the checkpoint's params, a nested mapping of arrays (numpy or jax; boxes unboxed).
    target: the new model's freshly initialised params (same kinds of leaves).
    mapping: {source_subtree_path: target_subtree_path}, "/"-joined; "" is the whole tree. A
      path may name a subtree or a single leaf. Target subtrees must not overlap (no leaf may
      be mapped twice); source subtrees may. A source path starting with OPTIONAL ("?") is
      taken when the source has it and otherwise skipped, its target left initialised (a
      task head: present in a checkpoint of the same task, absent from a pretraining one).
    source_grid: (N_t, H_p, W_p) tubelet grid the checkpoint's video encoder was built for.
    target_grid: the same for the new model. Both are only needed when a video position
      table is mapped and the grids differ.

  Returns:
    (params, report): params is a new nested dict with the target's structure, key order,
    shapes and dtypes, every leaf a numpy array; report is a `MappingReport`.

  Raises:
    MappingError: a mapped path is missing (in the source: the message lists the source's
      top-level keys; likewise for the target), target subtrees overlap, a target leaf under a
      mapped subtree has no source leaf at its path, shapes differ anywhere other than a
      position table, or a video table must be resampled without the grids or does not fit
      them.
    ValueError: a malformed grid.
  """
  source_grid = _check_grid("source_grid", source_grid)
  target_grid = _check_grid("target_grid", target_grid)
  src_flat = flatten(source)
  tgt_flat = flatten(target)

  optional = {_normalise_path(s[1:], "source") for s in mapping if s.startswith(OPTIONAL)}
  pairs = [
    (_normalise_path(s.removeprefix(OPTIONAL), "source"), _normalise_path(t, "target"))
    for s, t in mapping.items()
  ]
  # An optional subtree the checkpoint lacks maps nothing: its targets keep their fresh init.
  pairs = [(s, t) for s, t in pairs if s not in optional or _select(src_flat, s)]
  for i, (_, a) in enumerate(pairs):
    for _, b in pairs[i + 1 :]:
      if _overlaps(a, b):
        raise MappingError(
          f"Target subtrees {a or '<root>'!r} and {b or '<root>'!r} overlap: "
          "a target leaf may be mapped only once."
        )

  values: dict[str, np.ndarray] = {}
  records: dict[str, LeafReport] = {}
  used: set[str] = set()
  for src_path, tgt_path in pairs:
    src_sub = _select(src_flat, src_path)
    if not src_sub:
      raise MappingError(
        f"Source subtree {src_path!r} is not in the source params; its "
        f"top-level keys are {_top_level(src_flat)}."
      )
    tgt_sub = _select(tgt_flat, tgt_path)
    if not tgt_sub:
      raise MappingError(
        f"Target subtree {tgt_path!r} is not in the target params; its "
        f"top-level keys are {_top_level(tgt_flat)}."
      )
    for rel, target_leaf in tgt_sub.items():
      target_path, source_path = _join(tgt_path, rel), _join(src_path, rel)
      if rel not in src_sub:
        raise _missing_leaf_error(target_path, source_path, rel, src_sub, src_path)
      values[target_path], records[target_path] = _map_leaf(
        target_path, source_path, src_sub[rel], target_leaf, source_grid, target_grid
      )
      used.add(source_path)

  out, leaves = {}, {}
  for path, leaf in tgt_flat.items():  # The target's order, for the tree and the report.
    if path in records:
      out[path], leaves[path] = values[path], records[path]
    else:
      out[path] = np.array(leaf, dtype=_dtype(leaf))
      leaves[path] = LeafReport(INITIALISED, _shape(leaf))
  unused = {path: _shape(leaf) for path, leaf in sorted(src_flat.items()) if path not in used}
  return unflatten(out), MappingReport(leaves, unused)


def _group(path: str) -> str:
  """The first two path components, with digit runs of the second replaced by "*".

  Numbered siblings (block_1 .. block_12, layer_0 .. layer_11, grouping_6 ...) then share one
  line of the report, which keeps it short for deep models.
  """
  parts = path.split("/")
  if len(parts) > 1:
    parts[1] = re.sub(r"\d+", "*", parts[1])
  return "/".join(parts[:2])


def _aggregate(
  items: Iterable[tuple[str, tuple[int, ...], str]],
) -> dict[str, tuple[set[str], dict[str, list[int]]]]:
  """{group: (distinct subtrees, {status: [leaves, params]})}, in first-seen order."""
  groups: dict[str, tuple[set[str], dict[str, list[int]]]] = {}
  for path, shape, status in items:
    names, counts = groups.setdefault(_group(path), (set(), {}))
    names.add("/".join(path.split("/")[:2]))
    count = counts.setdefault(status, [0, 0])
    count[0] += 1
    count[1] += _size(shape)
  return groups


def _leaves(n: int) -> str:
  return f"{n} leaf" if n == 1 else f"{n} leaves"


def format_report(report: MappingReport) -> str:
  """A short human-readable table of `report` (no trailing newline).

  Lines: a header; per category (loaded, resampled, initialised, and unused source leaves) the
  number of leaves and of parameters; one line per target subtree, aggregated by the first two
  path components (numbered siblings merged, e.g. "video_encoder/block_* (x12)"), with the
  leaves and parameters per status; each resampled leaf with its shapes and how; the unused
  source leaves, aggregated the same way. About 25 lines for the full S-ViLM model.
  """
  totals = report.totals()
  n_leaves = len(report.leaves)
  n_params = sum(_size(leaf.shape) for leaf in report.leaves.values())
  lines = [f"Parameter mapping: {_leaves(n_leaves)}, {n_params:,} params in the target"]
  for category in (*STATUSES, "unused"):
    count, size = totals[category]
    label = "unused (source)" if category == "unused" else category
    lines.append(f"  {label:<16}{_leaves(count):>12}  {size:>14,} params")

  def table(groups: dict[str, tuple[set[str], dict[str, list[int]]]]) -> list[str]:
    rows = []
    for group, (names, counts) in groups.items():
      name = f"{group} (x{len(names)})" if len(names) > 1 else next(iter(names))
      count = sum(c[0] for c in counts.values())
      size = sum(c[1] for c in counts.values())
      statuses = [s for s in (*STATUSES, "unused") if s in counts]
      how = (
        statuses[0]
        if len(statuses) == 1
        else ", ".join(f"{s} {_leaves(counts[s][0])}" for s in statuses)
      )
      rows.append(f"  {name:<40}{_leaves(count):>12}  {size:>14,}  {how}")
    return rows

  lines.append("By target subtree:")
  lines += table(_aggregate((p, leaf.shape, leaf.status) for p, leaf in report.leaves.items()))
  resampled = [(p, leaf) for p, leaf in report.leaves.items() if leaf.status == RESAMPLED]
  if resampled:
    lines.append("Resampled:")
    for path, leaf in resampled:
      lines.append(f"  {path}  {leaf.source_shape} -> {leaf.shape}  ({leaf.detail})")
  if report.unused:
    lines.append("Unused source leaves:")
    lines += table(_aggregate((p, shape, "unused") for p, shape in report.unused.items()))
  return "\n".join(lines)
