"""The on-disk format of extracted video features: one place for it (writer and readers).

`python -m svilm.extract_features` writes a feature directory that needs no svilm code to read:

  settings.json        how the features were made (encoder, checkpoint, windows, pooling); a
                       rerun with other settings is refused instead of mixing two feature sets
  <split>/<file>.npy   float32 [num_windows, D] per video, window k in row k (numpy .npy)
  index.json           {"format": FORMAT, "feature_dim": D, "classes": [names],
                        "videos": {video_id: {"split", "file" (relative), "fps", "num_frames",
                        "duration" (seconds), "windows": [[t0, t1], ...] (seconds, one per
                        row: the span the window's frames were sampled from)}}}
  ground_truth.json    the videos' action segments in ActivityNet v1.3's format,
                       {"version", "database": {video_id: {"subset", "duration",
                       "annotations": [{"segment": [t0, t1], "label"}]}}}, subsets named as
                       ActivityNet names them (SUBSETS)

index.json and ground_truth.json are written last, so a directory with index.json is complete;
a .npy file exists only once its video is complete (written under a temporary name, then
renamed), which is what lets an interrupted extraction resume.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from typing import Any

import numpy as np

FORMAT = "svilm.features/1"
SETTINGS, INDEX, GROUND_TRUTH = "settings.json", "index.json", "ground_truth.json"
# Our split names -> ActivityNet's subset names (what ground_truth.json and --subset use).
SUBSETS = {"train": "training", "val": "validation", "test": "testing"}
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def subset_of(split: str) -> str:
  return SUBSETS.get(split, split)


def video_file(split: str, video_id: str) -> str:
  """The .npy path of a video, relative to the feature directory. Ids with characters that are
  unsafe in file names ("/", "#", spaces) get them replaced and a hash of the id appended, so
  two ids never share a file."""
  name = _UNSAFE.sub("_", video_id)
  if name != video_id or name.startswith("."):
    name = f"{name}-{hashlib.sha256(video_id.encode()).hexdigest()[:8]}"
  return os.path.join(split, name + ".npy")


def window_starts(num_frames: int, window: int, stride: int) -> np.ndarray:
  """First frame of each window: 0, stride, ... until a window reaches the last frame (the
  last window may run past the video; its missing frames repeat the last one)."""
  count = 1 if num_frames <= window else -(-(num_frames - window) // stride) + 1
  return np.arange(count) * stride


def read_index(directory: str) -> dict[str, Any]:
  """index.json of a feature directory, checked; a missing or foreign one is a ValueError that
  says how to make it."""
  path = os.path.join(directory, INDEX)
  if not os.path.exists(path):
    raise ValueError(
      f"{directory} has no {INDEX}: it is not a finished feature directory (run "
      f"`python -m svilm.extract_features --output={directory} ...`; an interrupted run "
      "resumes)"
    )
  with open(path) as f:
    index = json.load(f)
  if index.get("format") != FORMAT:
    raise ValueError(f"{path} has format {index.get('format')!r}, expected {FORMAT!r}")
  return index


def read_ground_truth(directory: str, path: str = "") -> dict[str, Any]:
  """The "database" of `path` (default: the directory's ground_truth.json)."""
  path = path or os.path.join(directory, GROUND_TRUTH)
  with open(path) as f:
    return json.load(f)["database"]


def load_split(directory: str, index: dict, split: str) -> list[dict[str, Any]]:
  """The videos of `split`, in video-id order: {"video_id", "features" [N, D], "windows"
  [N, 2], "duration"}; an error names the split when it has none."""
  videos = []
  for video_id in sorted(index["videos"]):
    entry = index["videos"][video_id]
    if entry["split"] != split:
      continue
    features = np.load(os.path.join(directory, entry["file"]))
    windows = np.asarray(entry["windows"], np.float64)
    if features.shape != (len(windows), index["feature_dim"]):
      raise ValueError(
        f"{entry['file']}: features of shape {features.shape}, index.json says "
        f"({len(windows)}, {index['feature_dim']})"
      )
    videos.append(
      dict(video_id=video_id, features=features, windows=windows, duration=entry["duration"])
    )
  if not videos:
    splits = sorted({v["split"] for v in index["videos"].values()})
    raise ValueError(f"the features in {directory} have no {split!r} split (it has: {splits})")
  return videos


def resample(features: np.ndarray, windows: np.ndarray, duration: float, num_steps: int):
  """[N, D] window features -> [num_steps, D] on a uniform grid over [0, duration]: step i
  (centred at (i + 0.5) / num_steps * duration) interpolates linearly between the windows
  whose centres enclose it (the first / last window beyond them). Fixed-length inputs, as
  BMN, G-TAD and ActionFormer feed ActivityNet videos of every length to one head."""
  centres = windows.mean(axis=1)
  steps = (np.arange(num_steps) + 0.5) / num_steps * duration
  return np.stack(
    [np.interp(steps, centres, features[:, d]) for d in range(features.shape[1])], axis=1
  ).astype(np.float32)


def write_json_atomic(path: str, value: Any) -> None:
  """JSON written under a temporary name and renamed: readers never see half a file."""
  temporary = path + ".tmp"
  with open(temporary, "w") as f:
    json.dump(value, f, indent=1, sort_keys=True)
    f.write("\n")
  os.replace(temporary, path)


def write_npy_atomic(path: str, array: np.ndarray) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  temporary = path + ".tmp.npy"
  np.save(temporary, array)
  os.replace(temporary, path)
