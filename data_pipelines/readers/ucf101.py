"""UCF101 to svilm shards: splits `train` and `test` of one of its three official splits.

  python -m data_pipelines.readers.ucf101 --annotations=ucfTrainTestlist --split_number=1 \
      --video_root=UCF-101 --output=shards/ucf101_1 --tokenizer_vocab_size=2000

The input files, as in the release's UCF101TrainTestSplits-RecognitionTask.zip (its folder
ucfTrainTestlist/; the released files end their lines in CRLF, which is read like LF):

  classInd.txt     one class per line, "1 ApplyEyeMakeup": its 1-based id and its name, which
                   is also its folder under --video_root. The ids are 1..N, each once.
  trainlist0N.txt  one training video per line, "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1":
                   the video relative to --video_root and its 1-based class id, which must be
                   that of the folder.
  testlist0N.txt   one test video per line, "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi": the
                   class is the folder's (a second column, if there is one, must agree).
  --video_root     UCF-101/ as unpacked from UCF101.rar: <class>/<video>.avi.

N is --split_number (1, 2 or 3 in the release). Written into --output by
build_shards.build_entries, so flags, manifest, skip report and resume rules are those of
`python -m data_pipelines.build_shards` (docs/data.md):

  train, test   one record per listed video, in list order, the whole video: `action_labels`
                is [k], k the 0-based class id (classInd id - 1); `caption` is the class name
                as lower-case words ("ApplyEyeMakeup" -> "apply eye makeup", "YoYo" -> "yo
                yo") and `nouns` come from it. The label is what the action recognition task
                reads; the caption lets a text tower read the record too (e.g. zero-shot
                classification by retrieval) and puts the class names into the tokenizer.
  classes.txt   line k (from 0) is the name of class k, as written in classInd.txt.

Record ids are the file names without extension ("v_ApplyEyeMakeup_g08_c01") and the source
is "ucf101". These shards are for the action recognition task; pretraining on them would train
on 101 distinct captions.

Errors. A line not in its file's format, class ids that are not 1..N, a repeated class name, a
label outside 1..N or not the folder's class, a folder that is not a class, a video listed twice
(also once in each list), or an OUT/classes.txt of other classes is a ValueError naming it,
raised before anything is decoded. A missing or broken video skips that one video and is listed
in OUT/{split}-skipped.tsv. Each split's manifest holds the SHA-256 of classInd.txt and of its
list, so rebuilding into the same --output from another split number is refused, not mixed.
"""

from __future__ import annotations

import os
from typing import Any, Dict, List, Sequence, Tuple

from absl import app
from absl import flags

from data_pipelines import annotations
from data_pipelines import build_shards
from data_pipelines.readers import common

SOURCE = "ucf101"
TRAIN_SPLIT, TEST_SPLIT = common.TRAIN_SPLIT, common.TEST_SPLIT


# ---------------------------------------------------------------------------------------------
# UCF101's files.


def read_class_index(path: str) -> List[str]:
  """The class names of a classInd.txt ("1 ApplyEyeMakeup" lines): class k (0-based) at [k]."""
  names: Dict[int, str] = {}
  for n, fields in common.table_lines(path):
    if len(fields) != 2 or not fields[0].isdigit():
      raise ValueError(f"{path}:{n}: expected 'ID NAME' (e.g. '1 ApplyEyeMakeup'), got {fields}")
    class_id, name = int(fields[0]), fields[1]
    if class_id in names:
      raise ValueError(f"{path}:{n}: class id {class_id} is given twice")
    names[class_id] = name
  if not names:
    raise ValueError(f"{path} lists no classes")
  missing = sorted(set(range(1, len(names) + 1)) - set(names))
  if missing:
    raise ValueError(
      f"{path}: the class ids must be 1..{len(names)}, but {common.named([str(k) for k in missing])} "
      "are missing"
    )
  classes = [names[k] for k in range(1, len(names) + 1)]
  common.check_classes(classes, path)
  return classes


def read_video_list(path: str, classes: Sequence[str], labelled: bool) -> List[Tuple[str, int]]:
  """(video, 0-based class) of each line of a trainlist0N.txt (`labelled`: "CLASS/VIDEO.avi
  ID" lines) or testlist0N.txt ("CLASS/VIDEO.avi", an ID optional), in file order."""
  index = {name: k for k, name in enumerate(classes)}
  videos = []
  for n, fields in common.table_lines(path):
    form = "'CLASS/VIDEO.avi ID'" if labelled else "'CLASS/VIDEO.avi' (or with ' ID')"
    if len(fields) not in ((2,) if labelled else (1, 2)) or "/" not in fields[0]:
      raise ValueError(f"{path}:{n}: expected {form}, got {fields}")
    video, folder = fields[0], fields[0].split("/")[0]
    if folder not in index:
      raise ValueError(f"{path}:{n}: {video}: folder {folder!r} is not a class of classInd.txt")
    k = index[folder]
    if len(fields) == 2:
      if not fields[1].isdigit() or not 1 <= int(fields[1]) <= len(classes):
        raise ValueError(f"{path}:{n}: {video}: label {fields[1]} is not in 1..{len(classes)}")
      if int(fields[1]) != k + 1:
        raise ValueError(
          f"{path}:{n}: {video}: label {fields[1]} ({classes[int(fields[1]) - 1]}) is not its "
          f"folder's class {k + 1} ({folder})"
        )
    videos.append((video, k))
  if not videos:
    raise ValueError(f"{path} lists no videos")
  return videos


def ucf101_entries(
  videos: Sequence[Tuple[str, int]], classes: Sequence[str]
) -> List[annotations.Entry]:
  """One entry per (video, class) with its label and class caption (see the module doc)."""
  return [common.action_entry(video, classes[k], k) for video, k in videos]


def build_ucf101(
  annotations_dir: str,
  split_number: int,
  video_root: str,
  output_dir: str,
  *,
  tokenizer_vocab_size: int = 0,
  **knobs: Any,
) -> Dict[str, Dict[str, Any]]:
  """Writes the `train` and `test` shards of split `split_number` and OUT/classes.txt.

  `annotations_dir` holds classInd.txt, trainlist0N.txt and testlist0N.txt. `knobs` are
  build_entries' num_shards, fps, short_side, max_frames, jpeg_quality, workers and
  max_skipped_fraction, the same for both splits; a tokenizer (tokenizer_vocab_size > 0) is
  trained on the train split only. Returns {split: build_entries' summary}. Raises ValueError
  as the module docstring says (before decoding anything) and as build_entries does;
  FileNotFoundError for a missing file.
  """
  if split_number < 1:
    raise ValueError(f"split_number must be >= 1, got {split_number}")
  class_index = os.path.join(annotations_dir, "classInd.txt")
  classes = read_class_index(class_index)
  splits = []
  for split, prefix, labelled in (
    (TRAIN_SPLIT, "trainlist", True),
    (TEST_SPLIT, "testlist", False),
  ):
    path = os.path.join(annotations_dir, f"{prefix}{split_number:02d}.txt")
    entries = ucf101_entries(read_video_list(path, classes, labelled), classes)
    splits.append((split, entries, common.files_sha256([class_index, path])))
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
    lambda: build_ucf101(
      f.annotations, f.split_number, f.video_root, f.output, **build_shards.build_knobs()
    ),
    f.max_skipped_fraction,
  )


if __name__ == "__main__":
  common.define_action_flags(
    "UCF101",
    "ucfTrainTestlist/: classInd.txt, trainlist0N.txt, testlist0N.txt.",
    "UCF-101/: <class>/<video>.avi.",
  )
  app.run(main)
