"""What the readers of labelled and QA datasets share (ucf101.py, hmdb51.py, video_qa.py).

Annotation tables, class names and their captions, OUT/classes.txt, the split loop over
`build_shards.build_entries` (with its check that no video is listed twice) and the CLI's end
(report lines, one FATAL line, exit status).
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from absl import flags

from data_pipelines import annotations
from data_pipelines import build_shards

TRAIN_SPLIT, TEST_SPLIT = "train", "test"
CLASSES = "classes.txt"
_MAX_NAMED = 10  # items named in one error message


def named(items: Sequence[str]) -> str:
  """The first few of `items`, comma separated, for an error message."""
  more = f" and {len(items) - _MAX_NAMED} more" if len(items) > _MAX_NAMED else ""
  return ", ".join(items[:_MAX_NAMED]) + more


def table_lines(path: str) -> List[Tuple[int, List[str]]]:
  """(1-based line number, whitespace-separated fields) of each non-blank line of `path`.

  CRLF and trailing blanks (as in the UCF101 and HMDB51 lists) are read like plain line ends.
  """
  return [
    (n + 1, line.split())
    for n, line in enumerate(annotations.read_text(path).splitlines())
    if line.strip()
  ]


def check_classes(classes: Sequence[str], where: str) -> None:
  """Raises ValueError for a repeated or non-UTF-8 class name."""
  repeated = sorted({c for c in classes if classes.count(c) > 1})
  if repeated:
    raise ValueError(f"{where}: these classes are named more than once: {named(repeated)}")
  for name in classes:
    if not valid_utf8(name):
      raise ValueError(f"{where}: class name {name!r} is not valid UTF-8")


def valid_utf8(text: str) -> bool:
  """False for text holding lone surrogates (bytes read_text could not decode)."""
  try:
    text.encode("utf-8")
  except UnicodeEncodeError:
    return False
  return True


def class_caption(name: str) -> str:
  """A class name as lower-case words: "ApplyEyeMakeup" -> "apply eye makeup", "YoYo" ->
  "yo yo", "brush_hair" -> "brush hair" (a word starts at each capital that follows a lower-case
  letter or digit, and at each underscore)."""
  spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", name.replace("_", " "))
  return " ".join(spaced.split()).lower()


def action_entry(video: str, class_name: str, label: int) -> annotations.Entry:
  """The entry of one whole labelled video: id = its file name without extension."""
  return annotations.Entry(
    video=video,
    caption=class_caption(class_name),
    start=None,
    end=None,
    id=os.path.splitext(os.path.basename(video))[0],
    error="" if valid_utf8(video) else "video path is not valid UTF-8",
    action_labels=(label,),
  )


def files_sha256(paths: Sequence[str]) -> str:
  """One digest of several files: SHA-256 over their base names and SHA-256s, in order (the
  names count: HMDB51's class names are its file names)."""
  lines = "".join(f"{os.path.basename(p)}\t{build_shards.file_sha256(p)}\n" for p in paths)
  return hashlib.sha256(lines.encode("utf-8", "backslashreplace")).hexdigest()


def write_classes(output_dir: str, classes: Sequence[str]) -> str:
  """Writes OUT/classes.txt (line k: class k); raises ValueError if one of other classes is
  there. Returns its path."""
  path = os.path.join(output_dir, CLASSES)
  text = "".join(f"{name}\n" for name in classes)
  if os.path.exists(path):
    with open(path, encoding="utf-8") as f:
      old = f.read()
    if old != text:
      raise ValueError(
        f"{path} lists other classes than these annotations ({len(old.splitlines())} "
        f"against {len(classes)}); use another --output"
      )
    return path
  os.makedirs(output_dir, exist_ok=True)
  tmp_path = os.path.join(output_dir, ".tmp-" + CLASSES)
  with open(tmp_path, "w", encoding="utf-8") as f:
    f.write(text)
  os.replace(tmp_path, path)
  return path


def build_splits(
  splits: Sequence[Tuple[str, Sequence[annotations.Entry], str]],
  video_root: str,
  output_dir: str,
  *,
  source: str,
  classes: Optional[Sequence[str]] = None,
  tokenizer_vocab_size: int = 0,
  **knobs: Any,
) -> Dict[str, Dict[str, Any]]:
  """build_entries for each (split, entries, annotations_sha256), after OUT/classes.txt.

  Checks first that no record id occurs twice, within a split or across splits (the same video
  in train and test would leak). The tokenizer, if asked for, is trained on split `train`.
  Returns {split: build_entries' summary}.
  """
  seen: Dict[str, str] = {}
  repeated = []
  for split, entries, _ in splits:
    for e in entries:
      if e.id in seen:
        repeated.append(f"{e.id} ({seen[e.id]} and {split})")
      seen.setdefault(e.id, split)
  if repeated:
    raise ValueError(f"these videos are listed more than once: {named(repeated)}")
  if classes is not None:
    write_classes(output_dir, classes)
  return {
    split: build_shards.build_entries(
      entries,
      video_root,
      output_dir,
      source=source,
      annotations_sha256=digest,
      split=split,
      tokenizer_vocab_size=tokenizer_vocab_size if split == TRAIN_SPLIT else 0,
      **knobs,
    )
    for split, entries, digest in splits
  }


def run_reader(
  tool: str, build: Callable[[], Dict[str, Dict[str, Any]]], max_skipped_fraction: float
) -> None:
  """The CLI's end: prints each split's report line; a bad file, a bad flag or too many skipped
  videos is one `FATAL {tool}: ...` line on stderr and exit status 1."""
  try:
    summaries = build()
  except (ValueError, OSError) as e:  # the annotation files or a flag: say which
    sys.exit(f"FATAL {tool}: {e}")
  for split, summary in summaries.items():
    print(f"{split}: {summary['line']}")
  failed = {s: v for s, v in summaries.items() if not v["ok"]}
  if failed:
    # The shards are written and usable; the status tells a script that too much was lost.
    lost = " and ".join(f"{v['skipped_fraction']:.1%} of the {s} videos" for s, v in failed.items())
    reports = ", ".join(v["skipped_path"] for v in failed.values())
    sys.exit(
      f"FATAL {tool}: {lost} were skipped, more than --max_skipped_fraction="
      f"{max_skipped_fraction}; the shards of the rest are written. See why in "
      f"{reports}, or raise --max_skipped_fraction"
    )


def define_action_flags(dataset: str, annotations_help: str, video_root_help: str) -> None:
  """The flags of the action readers: --annotations, --split_number, --video_root, --output
  and build_shards' decoding flags."""
  flags.DEFINE_string("annotations", None, annotations_help)
  flags.DEFINE_integer("split_number", 1, f"Which of {dataset}'s official splits (1, 2 or 3).")
  flags.DEFINE_string("video_root", None, video_root_help)
  flags.DEFINE_string("output", None, "Output directory for shards, classes.txt and reports.")
  build_shards.define_build_flags("a split's videos")
  flags.mark_flags_as_required(["annotations", "video_root", "output"])
