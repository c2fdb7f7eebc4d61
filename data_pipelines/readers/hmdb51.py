"""HMDB51 to svilm shards: splits `train` and `test` of one of its three official splits.

  python -m data_pipelines.readers.hmdb51 --annotations=testTrainMulti_7030_splits \
      --split_number=1 --video_root=hmdb51 --output=shards/hmdb51_1 --tokenizer_vocab_size=2000

The input files, as in the release's test_train_splits.rar (its split_readme.txt defines the
flags) and hmdb51_org.rar:

  --annotations  testTrainMulti_7030_splits/, holding <class>_test_split<N>.txt for each class
                 and N = 1, 2, 3: one line per video of the class, "<video>.avi <flag>" (the
                 released lines end in a blank), flag 1 = train, 2 = test, 0 = not used.
  --video_root   one folder per class holding its videos: <video_root>/<class>/<video>.avi
                 (each per-class .rar of hmdb51_org.rar unpacked into a folder of its name).

The classes are the <class> parts of the split-N file names, sorted alphabetically (Python's
string order: "climb" before "climb_stairs"), which gives the 0-based class ids. Written into
--output by build_shards.build_entries, so flags, manifest, skip report and resume rules are
those of `python -m data_pipelines.build_shards` (docs/data.md):

  train, test   one record per video flagged 1 (train) or 2 (test), the whole video, classes in
                order and each file's lines in order: `action_labels` is [k], k the class id;
                `caption` is the class name as words ("brush_hair" -> "brush hair") and `nouns`
                come from it (common.class_caption; the label is what the task reads).
  classes.txt   line k (from 0) is the name of class k.

Record ids are the file names without extension and the source is "hmdb51"; videos flagged 0
are not written. These shards are for the action recognition task.

Errors. No split-N file in --annotations, a line that is not "<video> <flag>" with flag 0, 1 or
2, a video listed twice (in one file or in two), or an OUT/classes.txt of other classes is a
ValueError naming it, raised before anything is decoded. A missing or broken video skips that
one video and is listed in OUT/{split}-skipped.tsv. Both splits' manifests hold the SHA-256 of
the split-N files (names and contents), so rebuilding into the same --output from another split
number is refused, not mixed.
"""

from __future__ import annotations

import os
import re
from typing import Any, Dict, List, Sequence, Tuple

from absl import app
from absl import flags

from data_pipelines import annotations
from data_pipelines import build_shards
from data_pipelines.readers import common

SOURCE = "hmdb51"
TRAIN_SPLIT, TEST_SPLIT = common.TRAIN_SPLIT, common.TEST_SPLIT
_SPLIT_FILE = re.compile(r"(?P<name>.+)_test_split(?P<number>[0-9]+)\.txt")
_FLAGS = {"1": TRAIN_SPLIT, "2": TEST_SPLIT, "0": None}


def split_files(annotations_dir: str, split_number: int) -> Dict[str, str]:
  """{class: path of its <class>_test_split<split_number>.txt}, classes sorted by name."""
  found = {}
  for name in os.listdir(annotations_dir):
    match = _SPLIT_FILE.fullmatch(name)
    if match and int(match["number"]) == split_number:
      found[match["name"]] = os.path.join(annotations_dir, name)
  if not found:
    raise ValueError(f"{annotations_dir} holds no <class>_test_split{split_number}.txt files")
  common.check_classes(list(found), annotations_dir)
  return dict(sorted(found.items()))


def read_split(files: Dict[str, str]) -> Dict[str, List[Tuple[str, int]]]:
  """{"train": [(video path, class id)], "test": [...]} from the split files of `files`
  (class id = position in `files`), classes in order and each file's lines in order."""
  videos: Dict[str, List[Tuple[str, int]]] = {TRAIN_SPLIT: [], TEST_SPLIT: []}
  first: Dict[str, str] = {}  # video -> where it was first listed
  for k, (name, path) in enumerate(files.items()):
    for n, fields in common.table_lines(path):
      if len(fields) != 2 or fields[1] not in _FLAGS:
        raise ValueError(
          f"{path}:{n}: expected '<video>.avi <flag>' with flag 0 (unused), 1 (train) or "
          f"2 (test), got {fields}"
        )
      video, split = fields[0], _FLAGS[fields[1]]
      if video in first:
        raise ValueError(f"{path}:{n}: {video} was already listed at {first[video]}")
      first[video] = f"{os.path.basename(path)}:{n}"
      if split is not None:
        videos[split].append((f"{name}/{video}", k))
  return videos


def build_hmdb51(
  annotations_dir: str,
  split_number: int,
  video_root: str,
  output_dir: str,
  *,
  tokenizer_vocab_size: int = 0,
  **knobs: Any,
) -> Dict[str, Dict[str, Any]]:
  """Writes the `train` and `test` shards of split `split_number` and OUT/classes.txt.

  `knobs` are build_entries' num_shards, fps, short_side, max_frames, jpeg_quality, workers
  and max_skipped_fraction, the same for both splits; a tokenizer (tokenizer_vocab_size > 0)
  is trained on the train split only. Returns {split: build_entries' summary}. Raises
  ValueError as the module docstring says (before decoding anything) and as build_entries
  does; FileNotFoundError for a missing --annotations directory.
  """
  files = split_files(annotations_dir, split_number)
  classes = list(files)
  digest = common.files_sha256(list(files.values()))
  splits = []
  for split, videos in read_split(files).items():
    entries: List[annotations.Entry] = [
      common.action_entry(video, classes[k], k) for video, k in videos
    ]
    if not entries:
      raise ValueError(f"no video of split {split_number} is flagged for {split}")
    splits.append((split, entries, digest))
  return common.build_splits(
    splits,
    video_root,
    output_dir,
    source=SOURCE,
    classes=classes,
    tokenizer_vocab_size=tokenizer_vocab_size,
    **knobs,
  )


def main(argv: Sequence[str]) -> None:
  del argv
  f = flags.FLAGS
  common.run_reader(
    SOURCE,
    lambda: build_hmdb51(
      f.annotations, f.split_number, f.video_root, f.output, **build_shards.build_knobs()
    ),
    f.max_skipped_fraction,
  )


if __name__ == "__main__":
  common.define_action_flags(
    "HMDB51",
    "testTrainMulti_7030_splits/: <class>_test_split<N>.txt files.",
    "The videos: <video_root>/<class>/<video>.avi.",
  )
  app.run(main)
