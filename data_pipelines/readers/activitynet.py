"""ActivityNet v1.3 temporal action localization to svilm shards: one record per video.

  python -m data_pipelines.readers.activitynet --annotations=activity_net.v1-3.min.json \
      --video_root=videos --output=shards/activitynet --tokenizer_vocab_size=2000

The input is the release's activity_net.v1-3.min.json:

  {"version": "VERSION 1.3", "taxonomy": [...], "database": {"<youtube id>": {"subset":
   "training" | "validation" | "testing", "duration": 123.4, "annotations": [{"segment":
   [12.5, 40.1], "label": "Long jump"}, ...], ...}, ...}}

and the videos under --video_root as v_<id>.mp4 (the official downloader's names) or <id>.mp4,
or the same with .mkv or .webm: the first of v_<id>.mp4, <id>.mp4, v_<id>.mkv, <id>.mkv,
v_<id>.webm, <id>.webm that exists. Written into --output by build_shards.build_entries
(flags, manifest, skip report and resume rules of `python -m data_pipelines.build_shards`):

  train, val, test   the subsets training, validation, testing (--subsets, default
                     training,validation; testing has no annotations), one record per video
                     in file order, the whole video, id the youtube id, source "activitynet".
                     Every segment of the video, in file order, is a segment_start /
                     segment_end in stored frames, segment_action its class id,
                     segment_caption its label, segment_object -1; `action_labels` holds the
                     distinct class ids in order of first segment and `caption` the first
                     segment's label as lower-case words ("Long jump" -> "long jump").
  classes.txt        line k (from 0) is class k: the sorted labels of the whole file (all
                     subsets), so class ids agree across splits and across runs of other
                     subsets.
  ground_truth.json  the converted subsets in the release's format ({"version", "database":
                     {id: {"subset", "duration", "annotations"}}}), only the videos written
                     to the shards, for `python -m svilm.evaluate temporal_localization`;
                     videos of other subsets already in the file are kept.

Frames. Stored frame k samples time k / fps (--fps) and stands for [k / fps, (k + 1) / fps);
a segment [s, e) seconds covers the frames whose interval overlaps it: first = floor(s * fps),
end = max(first + 1, ceil(e * fps)) (products rounded to 6 decimals against float noise),
clipped to the decoded frame count; a segment wholly past the last frame is left out of the
record (it stays in ground_truth.json, which keeps the release's seconds).

Errors. A file that is not JSON or not of this structure (no "database" object, a video that
is not an object, an unknown subset, "annotations" not a list), a label that is not valid
UTF-8, or an OUT/classes.txt of other classes is a ValueError naming the video, raised before
anything is decoded. An annotation without a label string or with a segment that is not
[start, end] numbers with 0 <= start < end skips its video, listed with the reason in
OUT/{split}-skipped.tsv, as is a missing or broken video.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any, Dict, List, Sequence, Tuple

from absl import app
from absl import flags

from data_pipelines import annotations
from data_pipelines import build_shards
from data_pipelines.readers import common

SOURCE = "activitynet"
SPLITS = {"training": "train", "validation": "val", "testing": common.TEST_SPLIT}
DEFAULT_SUBSETS = ("training", "validation")
GROUND_TRUTH = "ground_truth.json"


def read_database(path: str) -> Tuple[str, Dict[str, Dict[str, Any]]]:
  """(version, database) of an activity_net.v1-3.min.json, its structure checked."""
  try:
    data = json.loads(annotations.read_text(path))
  except ValueError as e:
    raise ValueError(f"{path} is not JSON: {e}") from None
  if not isinstance(data, dict) or not isinstance(data.get("database"), dict):
    raise ValueError(f'{path}: expected an ActivityNet v1.3 object {{"database": {{...}}}}')
  for video_id, item in data["database"].items():
    if not isinstance(item, dict):
      raise ValueError(f"{path}: video {video_id}: expected an object, got {item!r}")
    if item.get("subset") not in SPLITS:
      raise ValueError(
        f"{path}: video {video_id}: subset {item.get('subset')!r} is not one of {list(SPLITS)}"
      )
    if not isinstance(item.get("annotations", []), list):
      raise ValueError(f"{path}: video {video_id}: annotations are not a list")
  return str(data.get("version", "")), data["database"]


def read_classes(database: Dict[str, Dict[str, Any]], path: str) -> List[str]:
  """The sorted labels of every subset's annotations (those that are strings)."""
  classes = sorted(
    {
      a["label"]
      for item in database.values()
      for a in item.get("annotations", [])
      if isinstance(a, dict) and isinstance(a.get("label"), str) and a["label"].strip()
    }
  )
  common.check_classes(classes, path)
  return classes


def parse_segment(annotation: Any) -> Tuple[float, float, str]:
  """(start, end, label) of one {"segment": [start, end], "label"} annotation; raises
  ValueError saying what is wrong with it."""
  if not isinstance(annotation, dict):
    raise ValueError(f"{annotation!r} is not an object")
  label, segment = annotation.get("label"), annotation.get("segment")
  if not isinstance(label, str) or not label.strip():
    raise ValueError(f"no label (got {label!r})")
  numbers = isinstance(segment, list) and len(segment) == 2
  numbers = numbers and all(
    isinstance(t, (int, float)) and not isinstance(t, bool) for t in segment
  )
  if not numbers:
    raise ValueError(f"segment {segment!r} is not [start, end] in seconds")
  start, end = float(segment[0]), float(segment[1])
  if not (0 <= start < end and math.isfinite(end)):
    raise ValueError(f"segment {segment!r} is not 0 <= start < end")
  return start, end, label


def video_file(video_id: str, video_root: str) -> str:
  """The video of `video_id` under video_root (see the module doc); v_<id>.mp4 if none is."""
  for ext in annotations.ACTIVITYNET_EXTENSIONS:
    for name in (f"v_{video_id}{ext}", f"{video_id}{ext}"):
      if os.path.exists(os.path.join(video_root, name)):
        return name
  return f"v_{video_id}{annotations.ACTIVITYNET_EXTENSIONS[0]}"


def video_entry(
  video_id: str, item: Dict[str, Any], classes: Sequence[str], video_root: str
) -> annotations.Entry:
  """The whole-video entry of one database item with all its segments (see the module doc)."""
  index = {name: k for k, name in enumerate(classes)}
  segments, error = [], ""
  for n, annotation in enumerate(item.get("annotations", [])):
    try:
      start, end, label = parse_segment(annotation)
    except ValueError as e:
      error = error or f"bad annotation {n} of video {video_id}: {e}"
      continue
    segments.append((start, end, index[label], label))
  if not common.valid_utf8(video_id):
    error = error or "video id is not valid UTF-8"
  return annotations.Entry(
    video=video_file(video_id, video_root),
    caption=common.class_caption(segments[0][3]) if segments else "",
    start=None,
    end=None,
    id=video_id,
    error=error,
    action_labels=tuple(dict.fromkeys(k for _, _, k, _ in segments)),
    segments=tuple(segments),
  )


def _skipped_indices(summary: Dict[str, Any]) -> set:
  """Indices of the entries build_entries skipped, from its manifest."""
  with open(summary["manifest_path"]) as f:
    shards = json.load(f)["shards"]
  return {row[0] for info in shards.values() for row in info["skipped"]}


def write_ground_truth(
  output_dir: str,
  version: str,
  database: Dict[str, Dict[str, Any]],
  built: Dict[str, Tuple[List[str], Dict[str, Any]]],
) -> str:
  """OUT/ground_truth.json: for each subset of `built` ({subset: (video ids in entry order,
  build_entries' summary)}) the videos not skipped; other subsets of an existing file kept."""
  path = os.path.join(output_dir, GROUND_TRUTH)
  kept = {}
  if os.path.exists(path):
    with open(path) as f:
      old = json.load(f).get("database", {})
    kept = {v: item for v, item in old.items() if item.get("subset") not in built}
  for subset, (ids, summary) in built.items():
    skipped = _skipped_indices(summary)
    for i, video_id in enumerate(ids):
      if i not in skipped:
        item = database[video_id]
        kept[video_id] = dict(
          subset=subset,
          **({"duration": item["duration"]} if "duration" in item else {}),
          annotations=[
            dict(segment=a["segment"], label=a["label"]) for a in item.get("annotations", [])
          ],
        )
  tmp_path = os.path.join(output_dir, ".tmp-" + GROUND_TRUTH)
  with open(tmp_path, "w") as f:
    json.dump(dict(version=version, database=kept), f)
  os.replace(tmp_path, path)
  return path


def build_activitynet(
  annotations_path: str,
  video_root: str,
  output_dir: str,
  *,
  subsets: Sequence[str] = DEFAULT_SUBSETS,
  tokenizer_vocab_size: int = 0,
  **knobs: Any,
) -> Dict[str, Dict[str, Any]]:
  """Writes the splits of `subsets`, OUT/classes.txt and OUT/ground_truth.json.

  `knobs` are build_entries' num_shards, fps, short_side, max_frames, jpeg_quality, workers and
  max_skipped_fraction, the same for every split; a tokenizer (tokenizer_vocab_size > 0) is
  trained on split `train` only. Returns {split: build_entries' summary}. Raises ValueError as
  the module docstring says (before decoding anything) and as build_entries does;
  FileNotFoundError for a missing file.
  """
  unknown = [s for s in subsets if s not in SPLITS]
  if unknown or not subsets or len(set(subsets)) != len(subsets):
    raise ValueError(f"subsets {list(subsets)}: expected some of {list(SPLITS)}, each once")
  version, database = read_database(annotations_path)
  classes = read_classes(database, annotations_path)
  digest = common.files_sha256([annotations_path])
  ids = {s: [v for v, item in database.items() if item["subset"] == s] for s in subsets}
  empty = [s for s in subsets if not ids[s]]
  if empty:
    raise ValueError(f"{annotations_path} has no videos in subset {', '.join(empty)}")
  splits = [
    (SPLITS[s], [video_entry(v, database[v], classes, video_root) for v in ids[s]], digest)
    for s in subsets
  ]
  summaries = common.build_splits(
    splits,
    video_root,
    output_dir,
    source=SOURCE,
    classes=classes,
    tokenizer_vocab_size=tokenizer_vocab_size,
    **knobs,
  )
  built = {s: (ids[s], summaries[SPLITS[s]]) for s in subsets}
  write_ground_truth(output_dir, version, database, built)
  return summaries


def main(argv: Sequence[str]) -> None:
  del argv
  f = flags.FLAGS
  common.run_reader(
    SOURCE,
    lambda: build_activitynet(
      f.annotations, f.video_root, f.output, subsets=f.subsets, **build_shards.build_knobs()
    ),
    f.max_skipped_fraction,
  )


if __name__ == "__main__":
  flags.DEFINE_string("annotations", None, "activity_net.v1-3.min.json.")
  flags.DEFINE_list(
    "subsets", list(DEFAULT_SUBSETS), "Subsets to build: training, validation, testing."
  )
  flags.DEFINE_string("video_root", None, "Directory of v_<id>.mp4 (or <id>.mp4, .mkv, .webm).")
  flags.DEFINE_string("output", None, "Output directory: shards, classes.txt, ground_truth.json.")
  build_shards.define_build_flags("a split's videos")
  flags.mark_flags_as_required(["annotations", "video_root", "output"])
  app.run(main)
