"""Reads video-caption annotation files into a flat list of clip entries for build_shards.

The format follows the file's extension (full examples in docs/data.md):

  .csv    a header row, then one clip per row. Columns: the video file relative to
          --video_root (the first of VIDEO_COLUMNS: `video`, `path`, `video_path`, `filename`);
          the caption (the first of CAPTION_COLUMNS: `caption`, `text`, `sentence`, `name`);
          optional `start`, `end` (seconds, empty = the video's start / end) and `id`.
          `video_column` / `caption_column` name other columns. WebVid's own CSV (`videoid`,
          `name`, `page_dir`) is read too, as video `{page_dir}/{videoid}.mp4` with id
          `videoid`.
  .jsonl  one JSON object per line with the same keys.
  .json   ActivityNet Captions: {video_id: {"duration": d, "timestamps": [[s, e], ...],
          "sentences": [...]}}; every timed sentence is one clip of `{video_id}.EXT` where EXT
          is the first of .mp4, .mkv, .webm that exists under video_root (.mp4 if none does).

A row that cannot be used (no caption, a caption that is not valid UTF-8, bad times, a line
that is not JSON) still gives an entry, with `error` saying why, so the builder lists it in its
skip report and the clip numbering (and thus the shard of every later clip) does not depend on
which rows are bad. Bytes that are not UTF-8 are kept as surrogate escapes while reading and
flagged afterwards, so one bad caption cannot stop the whole file.

Video ids: the `id` column when given, else the video path (ActivityNet: `{video_id}#{k}` for
its k-th sentence); an id that occurs more than once becomes `{id}#{k}` for its k-th occurrence.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import io
import json
import os
import re
from typing import Any, Dict, List, Optional, Sequence, Tuple

FORMATS = (".csv", ".jsonl", ".json")
ACTIVITYNET_EXTENSIONS = (".mp4", ".mkv", ".webm")
# The column names real collections use, in the order they are looked for.
VIDEO_COLUMNS = ("video", "path", "video_path", "filename")
CAPTION_COLUMNS = ("caption", "text", "sentence", "name")
_SURROGATE_RE = re.compile("[\udc80-\udcff]")


@dataclasses.dataclass(frozen=True)
class Entry:
  """One clip to convert: `video` relative to the video root, times in seconds (None: open).

  `captions` holds every caption of a video that has several (e.g. MSR-VTT's 20 per video),
  with captions[0] == caption; the files read here have one caption per entry and leave it
  empty, which the schema stores as no `captions` field at all (unchanged bytes).

  `action_labels` (0-based class ids) and `qa` ((question, answer) pairs in annotation order)
  are the records' `action_labels` and `qa_question` / `qa_answer`; the files read here have
  neither. An entry with labels or QA pairs may have an empty caption (QA datasets have none):
  build_shards skips an entry for an empty caption only when it has neither.

  `segments` are the timed actions of a temporal localization dataset (ActivityNet v1.3):
  (start, end, class id, label) per segment, in seconds from the video's start with
  0 <= start < end, written as the records' segment_* fields in frames (build_shards). None
  (every other entry) writes no segments; a tuple, even an empty one (a test video without
  annotations), marks a video of such a dataset, which is kept without caption or labels.
  """

  video: str
  caption: str
  start: Optional[float]
  end: Optional[float]
  id: str
  error: str = ""  # non-empty: the entry is skipped for this reason
  captions: Tuple[str, ...] = ()
  action_labels: Tuple[int, ...] = ()
  qa: Tuple[Tuple[str, str], ...] = ()
  segments: Optional[Tuple[Tuple[float, float, int, str], ...]] = None


def _first(row: Dict[str, Any], *keys: str) -> Any:
  for key in keys:
    if row.get(key) not in (None, ""):
      return row[key]
  return None


def _seconds(value: Any, name: str) -> Optional[float]:
  if value is None or (isinstance(value, str) and not value.strip()):
    return None
  try:
    seconds = float(value)
  except (TypeError, ValueError):
    raise ValueError(f"{name} {value!r} is not a number") from None
  if not seconds >= 0:  # also rejects NaN
    raise ValueError(f"{name} {value!r} is negative or not finite")
  return seconds


def _entry(row: Dict[str, Any], where: str, columns: Tuple[str, str] = ("", "")) -> Entry:
  """An Entry from a CSV or JSONL row (string keys, values as read); `columns` are the
  (video, caption) column names the user gave ("" = the usual names)."""
  video_column, caption_column = columns
  video = _first(row, *((video_column,) if video_column else VIDEO_COLUMNS))
  if video is None and _first(row, "videoid") is not None:  # WebVid
    page_dir = _first(row, "page_dir")
    video = f"{row['videoid']}.mp4" if page_dir is None else f"{page_dir}/{row['videoid']}.mp4"
  video = "" if video is None else str(video)
  caption = _first(row, *((caption_column,) if caption_column else CAPTION_COLUMNS))
  caption = "" if caption is None else str(caption)
  identity = str(_first(row, "id", "videoid") or video or where)
  error = ""
  start = end = None
  try:
    start, end = _seconds(row.get("start"), "start"), _seconds(row.get("end"), "end")
    if start is not None and end is not None and end <= start:
      raise ValueError(f"end {end} <= start {start}")
  except ValueError as e:
    error = f"bad annotation: {e}"
  if not video:
    error = error or f"bad annotation: {where} has no video column"
  elif _SURROGATE_RE.search(video):
    error = error or "video path is not valid UTF-8"
  if not error:
    error = caption_error(caption)
  return Entry(video, caption, start, end, identity, error)


def caption_error(caption: str) -> str:
  """Why `caption` cannot be trained on ("" if it can): the skip reason for its entry."""
  if _SURROGATE_RE.search(caption):
    return "caption is not valid UTF-8"
  if not caption.strip():
    return "empty caption"
  return ""


def captions_error(captions: Sequence[str]) -> str:
  """caption_error of the first bad caption of a multi-caption entry, naming which one.

  One bad caption skips the whole video rather than being dropped, so that `captions` always
  holds every caption of the annotation, in order.
  """
  for k, caption in enumerate(captions):
    error = caption_error(caption)
    if error:
      return error if len(captions) == 1 else f"{error} (caption {k} of {len(captions)})"
  return "" if captions else "empty caption"


def read_text(path: str) -> str:
  """The file at `path` as text, undecodable bytes kept as lone surrogates.

  surrogateescape: one bad byte must not stop the whole file; caption_error flags the field
  it lands in, so only that entry is skipped.
  """
  with open(path, "rb") as f:
    data = f.read()
  return data.decode("utf-8-sig", errors="surrogateescape")


def _read_csv(text: str, columns: Tuple[str, str]) -> List[Entry]:
  reader = csv.DictReader(io.StringIO(text, newline=""))
  header = {c.strip() for c in reader.fieldnames or ()}
  video_column, caption_column = columns
  videos = {video_column} if video_column else {*VIDEO_COLUMNS, "videoid"}
  captions = {caption_column} if caption_column else set(CAPTION_COLUMNS)
  for kind, names, given in (
    ("video", videos, video_column),
    ("caption", captions, caption_column),
  ):
    if not header & names:
      wanted = repr(given) if given else f"one of {', '.join(sorted(names))}"
      raise ValueError(
        f"CSV header {sorted(header)} has no {kind} column ({wanted}); name yours with "
        f"--{kind}_column=NAME"
      )
  return [
    _entry({(k or "").strip(): v for k, v in row.items()}, f"row {n + 2}", columns)
    for n, row in enumerate(reader)
  ]


def _read_jsonl(text: str, columns: Tuple[str, str]) -> List[Entry]:
  entries = []
  for n, line in enumerate(text.splitlines()):
    if not line.strip():
      continue
    try:
      row = json.loads(line)
      if not isinstance(row, dict):
        raise ValueError("not a JSON object")
    except ValueError as e:
      entries.append(
        Entry("", "", None, None, f"line {n + 1}", f"bad annotation: line {n + 1}: {e}")
      )
      continue
    entries.append(_entry(row, f"line {n + 1}", columns))
  return entries


def _activitynet_video(video_id: str, video_root: Optional[str]) -> str:
  for ext in ACTIVITYNET_EXTENSIONS:
    if video_root and os.path.exists(os.path.join(video_root, video_id + ext)):
      return video_id + ext
  return video_id + ACTIVITYNET_EXTENSIONS[0]


def _read_activitynet(text: str, video_root: Optional[str]) -> List[Entry]:
  data = json.loads(text)
  if not isinstance(data, dict):
    raise ValueError("an ActivityNet Captions file is a JSON object {video_id: {...}}")
  entries = []
  for video_id, item in data.items():
    video = _activitynet_video(video_id, video_root)
    timestamps, sentences = item.get("timestamps", []), item.get("sentences", [])
    for k, sentence in enumerate(sentences):
      identity = f"{video_id}#{k}"
      caption = str(sentence).strip()
      error = "" if k < len(timestamps) else "bad annotation: sentence without timestamp"
      start = end = None
      if not error:
        try:
          start, end = (_seconds(t, name) for t, name in zip(timestamps[k], ("start", "end")))
          if start is None or end is None or end <= start:
            raise ValueError(f"timestamp {timestamps[k]} is not [start, end) with end > start")
        except (ValueError, TypeError) as e:
          error = f"bad annotation: {e}"
      entries.append(Entry(video, caption, start, end, identity, error or caption_error(caption)))
  return entries


def _unique_ids(entries: List[Entry]) -> List[Entry]:
  counts = collections.Counter(e.id for e in entries)
  seen: Dict[str, int] = collections.defaultdict(int)
  out = []
  for e in entries:
    if counts[e.id] > 1:
      seen[e.id] += 1
      e = dataclasses.replace(e, id=f"{e.id}#{seen[e.id] - 1}")
    out.append(e)
  return out


def read_annotations(
  path: str, video_root: Optional[str] = None, *, video_column: str = "", caption_column: str = ""
) -> List[Entry]:
  """All clip entries of the annotation file at `path`, in file order.

  `video_root` is only used to pick the extension of ActivityNet videos; `video_column` and
  `caption_column` name the CSV/JSONL columns when they are not among the usual names
  (VIDEO_COLUMNS, CAPTION_COLUMNS). Raises ValueError for
  an unknown extension, a CSV header without the needed columns, or an ActivityNet file that is
  not a JSON object; problems of single rows go into Entry.error instead.
  """
  ext = os.path.splitext(path)[1].lower()
  if ext not in FORMATS:
    raise ValueError(f"{path}: unknown annotation format {ext!r}; expected one of {FORMATS}")
  text = read_text(path)
  columns = (video_column, caption_column)
  if ext == ".csv":
    entries = _read_csv(text, columns)
  elif ext == ".jsonl":
    entries = _read_jsonl(text, columns)
  else:
    entries = _read_activitynet(text, video_root)
  return _unique_ids(entries)
