"""Converts real videos with captions into svilm shards (data_pipelines/schema.py).

  python -m data_pipelines.build_shards --input=captions.csv --video_root=videos \
      --output=shards --split=train --tokenizer_vocab_size=2000

For each annotation entry (data_pipelines/annotations.py, in file order) the video is decoded
with PyAV, cut to [start, end) when given, sampled at --fps (for sample time start + k/fps the
frame whose timestamp is nearest, ties to the earlier one), resized so that its short side is
--short_side and JPEG-encoded; its noun phrases come from data_pipelines/nouns.py. Entry i goes
to shard i mod num_shards, so the bytes of every shard depend only on the annotations, the videos
and the settings, never on --workers. Written into --output:

  {split}-{i:05d}-of-{n:05d}.tfrecord   the shards (renamed into place once complete)
  {split}-manifest.json                 settings, per-shard counts and skips; written after
                                        every shard, so a rerun knows which shards are done
  {split}-skipped.tsv                   index, video_id, video, reason of every skipped entry
  tokenizer.model                       with --tokenizer_vocab_size > 0: SentencePiece model
                                        trained on the split's kept captions and nouns (and
                                        the questions and answers of entries with QA pairs)

A bad entry (missing, empty, truncated or undecodable file, no video stream, no frame in its
span, non-UTF-8 caption, an empty caption on an entry without action labels, QA pairs or
segments, a path leaving --video_root) is skipped and reported, never fatal; the command exits
with status 1 only when more than --max_skipped_fraction of the entries were skipped. Rerunning
into the same --output skips finished shards (no decoding) and redoes unfinished ones; other
settings than the manifest's are an error naming them.

`build` reads one annotation file; `build_entries` is the same build for entries made in memory
by a dataset reader (data_pipelines/readers/), e.g. videos with several captions each, or
with class labels, question-answer pairs or timed action segments.
"""

from __future__ import annotations

from concurrent import futures
import dataclasses
import hashlib
import io
import json
import math
import multiprocessing
import os
import sys
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

from absl import app
from absl import flags
from absl import logging
from PIL import Image

from data_pipelines import annotations
from data_pipelines import nouns as nouns_lib
from data_pipelines import tokenizer as tokenizer_lib

# Bump when a change here changes the bytes written for the same settings and inputs.
BUILDER_VERSION = 1
# data_pipelines.schema.SCHEMA_VERSION (a test keeps them equal): importing schema imports
# TensorFlow, seconds that a rerun over finished shards should not spend.
SCHEMA_VERSION = 1
TOKENIZER = "tokenizer.model"
_SKIP_COLUMNS = ("index", "video_id", "video", "reason")


class SkipClip(Exception):
  """An entry that cannot be converted; str(error) is the reason for the skip report."""


def shard_names(split: str, num_shards: int) -> List[str]:
  return [f"{split}-{i:05d}-of-{num_shards:05d}.tfrecord" for i in range(num_shards)]


def resolve_video(video_root: str, video: str) -> str:
  """The file of `video` (relative to video_root); raises SkipClip when it is unusable.

  The check is lexical: absolute paths and paths whose normal form starts with ".." are
  refused, while symlinks inside video_root may point anywhere.
  """
  norm = os.path.normpath(video)
  if (
    os.path.isabs(video) or video.startswith("~") or norm == ".." or norm.startswith(".." + os.sep)
  ):
    raise SkipClip("path escapes video_root")
  path = os.path.join(video_root, norm)
  if not os.path.exists(path):
    raise SkipClip("missing file")
  if not os.path.isfile(path):
    raise SkipClip("not a regular file")
  if os.path.getsize(path) == 0:
    raise SkipClip("empty file")
  return path


def resize_short_side(image: Image.Image, short_side: int) -> Image.Image:
  """`image` scaled (bicubic) so that min(width, height) == short_side, aspect kept."""
  width, height = image.size
  if width <= height:
    size = (short_side, max(1, round(height * short_side / width)))
  else:
    size = (max(1, round(width * short_side / height)), short_side)
  return image if size == image.size else image.resize(size, Image.Resampling.BICUBIC)


def _jpeg(frame, short_side: int, quality: int) -> Tuple[bytes, int, int]:
  image = resize_short_side(frame.to_image(), short_side)
  buffer = io.BytesIO()
  image.save(buffer, format="JPEG", quality=quality)
  return buffer.getvalue(), image.height, image.width


def decode_clip(
  path: str,
  *,
  start: Optional[float],
  end: Optional[float],
  fps: float,
  short_side: int,
  max_frames: int = 0,
  jpeg_quality: int = 90,
) -> Tuple[List[bytes], int, int]:
  """Samples [start, end) of the video at `path` at `fps`: (JPEG frames, height, width).

  Times are seconds from the video stream's start time (start None: 0; end None: the end of
  the last frame, i.e. its timestamp plus the previous frame interval). Sample k is at
  start + k / fps for every such time < end (the first `max_frames` when max_frames > 0) and is
  the decoded frame with the nearest timestamp. Raises SkipClip when the file does not open or
  decode, has no video stream, or no frame in the span.
  """
  import av  # pylint: disable=g-import-not-at-top

  try:
    container = av.open(path)
  except Exception as e:  # pylint: disable=broad-except  (PyAV raises many kinds)
    raise SkipClip(f"cannot decode: {e}") from None
  with container:
    if not container.streams.video:
      raise SkipClip("no video stream")
    stream = container.streams.video[0]
    time_base = float(stream.time_base)
    origin = float(stream.start_time * stream.time_base) if stream.start_time else 0.0
    begin = origin + (start or 0.0)
    stop = origin + end if end is not None else float("inf")
    frames: List[bytes] = []
    size = (0, 0)
    last: Tuple[Optional[float], bytes] = (None, b"")  # a frame picked twice is encoded once

    def take(picked):
      nonlocal last, size
      if last[0] != picked[0]:
        data, height, width = _jpeg(picked[1], short_side, jpeg_quality)
        last, size = (picked[0], data), (height, width)
      frames.append(last[1])

    def target() -> Optional[float]:
      t = begin + len(frames) / fps
      return None if (max_frames and len(frames) >= max_frames) or t >= stop else t

    previous, interval = None, None
    try:
      if start:
        container.seek(int(begin / time_base), stream=stream, backward=True)
      for frame in container.decode(stream):
        if frame.time is None or (previous and frame.time <= previous[0]):
          continue  # no timestamp, or out of order: nearest-by-time cannot place it
        current = (float(frame.time), frame)
        while (t := target()) is not None and current[0] >= t:
          near_previous = previous is not None and t - previous[0] <= current[0] - t
          take(previous if near_previous else current)
        if previous is not None:
          interval = current[0] - previous[0]
        previous = current
        if target() is None:
          break
      if previous is not None:
        # Past the last frame: it covers times up to its timestamp plus one frame interval.
        rate = float(stream.average_rate) if stream.average_rate else fps
        end_of_video = previous[0] + (interval or 1.0 / rate)
        while (t := target()) is not None and t < end_of_video:
          take(previous)
    except Exception as e:  # pylint: disable=broad-except
      raise SkipClip(f"cannot decode: {e}") from None
  if not frames:
    span = f"[{start or 0:g}, {'end' if end is None else f'{end:g}'})"
    raise SkipClip(f"no frames in {span} s")
  return frames, size[0], size[1]


def segment_frames(
  segments: Sequence[Sequence[Any]], offset: float, fps: float, num_frames: int
) -> List[Tuple[int, int, int, str]]:
  """(first, end, class id, label) in stored frames of each (start, end, class id, label)
  segment in seconds: the frames whose sampling interval [k / fps, (k + 1) / fps) after
  `offset` (the clip's start) overlaps the segment, i.e. first = floor((start - offset) * fps)
  and end = max(first + 1, ceil((end - offset) * fps)), each product rounded to 6 decimals
  first (so 0.7 s at 10 fps is 7, not 8), then clipped to [0, num_frames]. A segment wholly
  outside the stored frames (before the clip or past the last frame, e.g. cut by max_frames)
  is left out."""
  out = []
  for start, end, class_id, label in segments:
    first = max(0, math.floor(round((start - offset) * fps, 6)))
    last = min(num_frames, max(first + 1, math.ceil(round((end - offset) * fps, 6))))
    if end > offset and first < last:
      out.append((first, last, class_id, label))
  return out


def _write_shard(task: Dict[str, Any]) -> Dict[str, Any]:
  """Writes one shard (a worker task of plain values); returns its manifest section."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  from data_pipelines import schema  # pylint: disable=g-import-not-at-top

  settings, name = task["settings"], task["name"]
  tmp_path = os.path.join(task["output_dir"], f".tmp-{name}")
  clips = frames = 0
  skipped = []
  with tf.io.TFRecordWriter(tmp_path) as writer:
    for index, entry, phrases in task["items"]:
      try:
        if entry["error"]:
          raise SkipClip(entry["error"])
        # A record needs some text or a label; a localization video (segments not None) is
        # kept without: a test video has neither.
        if not (
          entry["caption"].strip()
          or entry["action_labels"]
          or entry["qa"]
          or entry["segments"] is not None
        ):
          raise SkipClip("empty caption")
        path = resolve_video(task["video_root"], entry["video"])
        jpegs, height, width = decode_clip(
          path,
          start=entry["start"],
          end=entry["end"],
          fps=settings["fps"],
          short_side=settings["short_side"],
          max_frames=settings["max_frames"],
          jpeg_quality=settings["jpeg_quality"],
        )
      except SkipClip as e:
        skipped.append([index, entry["id"], entry["video"], str(e)])
        continue
      segments = segment_frames(
        entry["segments"] or (), entry["start"] or 0.0, settings["fps"], len(jpegs)
      )
      record = schema.VideoRecord(
        video_id=entry["id"],
        frames=jpegs,
        caption=entry["caption"],
        height=height,
        width=width,
        fps=settings["fps"],
        source=settings["source"],
        captions=entry["captions"],
        nouns=phrases,
        noun_object=[-1] * len(phrases),
        # Always-written lists of the schema: empty ones give the bytes they always had.
        action_labels=entry["action_labels"],
        qa_question=[question for question, _ in entry["qa"]],
        qa_answer=[answer for _, answer in entry["qa"]],
        segment_start=[first for first, _, _, _ in segments],
        segment_end=[end for _, end, _, _ in segments],
        segment_caption=[label for _, _, _, label in segments],
        segment_action=[class_id for _, _, class_id, _ in segments],
        segment_object=[-1] * len(segments),
      )
      # deterministic=True sorts the context map keys, otherwise the bytes vary by process.
      writer.write(schema.to_sequence_example(record).SerializeToString(deterministic=True))
      clips, frames = clips + 1, frames + len(jpegs)
  final = os.path.join(task["output_dir"], name)
  os.replace(tmp_path, final)
  return dict(name=name, clips=clips, frames=frames, bytes=os.path.getsize(final), skipped=skipped)


def _valid_segment(segment: Sequence[Any]) -> bool:
  if len(segment) != 4:
    return False
  start, end, class_id, label = segment
  numbers = all(isinstance(t, (int, float)) and not isinstance(t, bool) for t in (start, end))
  return (
    numbers
    and 0 <= start < end < math.inf
    and isinstance(class_id, int)
    and not isinstance(class_id, bool)
    and class_id >= 0
    and isinstance(label, str)
  )


def _write_json(path: str, value: Any) -> None:
  tmp_path = os.path.join(os.path.dirname(path), ".tmp-" + os.path.basename(path))
  with open(tmp_path, "w") as f:
    json.dump(value, f, indent=1, sort_keys=True)
  os.replace(tmp_path, path)


def _write_skipped(path: str, skipped: Sequence[Sequence[Any]]) -> None:
  tmp_path = os.path.join(os.path.dirname(path), ".tmp-" + os.path.basename(path))
  # backslashreplace: a non-UTF-8 path or id is shown escaped instead of failing the report.
  with open(tmp_path, "w", encoding="utf-8", errors="backslashreplace") as f:
    for row in [_SKIP_COLUMNS, *skipped]:
      f.write("\t".join(" ".join(str(v).split()) for v in row) + "\n")
  os.replace(tmp_path, path)


def file_sha256(path: str) -> str:
  """SHA-256 (hex) of the file at `path`: how a manifest recognises its annotations."""
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()


def _settings(source: str, annotations_sha256: str, knobs: Dict[str, Any]) -> Dict[str, Any]:
  """Everything the output bytes depend on besides the videos: the manifest's `settings`."""
  return dict(
    knobs,
    schema_version=SCHEMA_VERSION,
    builder_version=BUILDER_VERSION,
    source=source,
    annotations_sha256=annotations_sha256,
    nouns_backend="spacy" if nouns_lib.spacy_available() else "rules",
  )


def _check_knobs(
  num_shards: int, fps: float, short_side: int, max_frames: int, workers: int, jpeg_quality: int
) -> None:
  if num_shards < 1 or fps <= 0 or short_side < 1 or max_frames < 0 or workers < 1:
    raise ValueError(
      "need num_shards >= 1, fps > 0, short_side >= 1, max_frames >= 0, workers >= 1"
    )
  if not 1 <= jpeg_quality <= 100:
    raise ValueError(f"jpeg_quality must be in [1, 100], got {jpeg_quality}")


def build(
  input_path: str,
  video_root: str,
  output_dir: str,
  *,
  split: str = "train",
  num_shards: int = 8,
  fps: float = 8.0,
  short_side: int = 128,
  max_frames: int = 0,
  jpeg_quality: int = 90,
  workers: int = 1,
  max_skipped_fraction: float = 0.1,
  tokenizer_vocab_size: int = 0,
  video_column: str = "",
  caption_column: str = "",
) -> Dict[str, Any]:
  """Converts the entries of `input_path` into `split` shards in `output_dir` (resumable).

  The source name is the file's stem and the manifest records its SHA-256; the rest is
  `build_entries`, whose summary this returns. Raises ValueError as build_entries does, and
  for an unreadable or empty annotation file.
  """
  _check_knobs(num_shards, fps, short_side, max_frames, workers, jpeg_quality)
  entries = annotations.read_annotations(
    input_path, video_root, video_column=video_column, caption_column=caption_column
  )
  if not entries:
    raise ValueError(f"{input_path} holds no entries")
  return build_entries(
    entries,
    video_root,
    output_dir,
    source=os.path.splitext(os.path.basename(input_path))[0],
    annotations_sha256=file_sha256(input_path),
    split=split,
    num_shards=num_shards,
    fps=fps,
    short_side=short_side,
    max_frames=max_frames,
    jpeg_quality=jpeg_quality,
    workers=workers,
    max_skipped_fraction=max_skipped_fraction,
    tokenizer_vocab_size=tokenizer_vocab_size,
  )


def build_entries(
  entries: Sequence[annotations.Entry],
  video_root: str,
  output_dir: str,
  *,
  source: str,
  annotations_sha256: str,
  split: str = "train",
  num_shards: int = 8,
  fps: float = 8.0,
  short_side: int = 128,
  max_frames: int = 0,
  jpeg_quality: int = 90,
  workers: int = 1,
  max_skipped_fraction: float = 0.1,
  tokenizer_vocab_size: int = 0,
) -> Dict[str, Any]:
  """Converts `entries` (in order) into `split` shards in `output_dir` (resumable).

  `source` is the records' dataset name and `annotations_sha256` identifies the annotations
  the entries came from: both go into the manifest's settings, so a rerun on other annotations
  is refused instead of mixing two versions of a dataset. An entry with `captions` stores them
  all (captions[0] must be its caption); its nouns are those of `caption`, and with a
  tokenizer every caption is training text. An entry's `action_labels` and `qa` pairs are
  stored as the record's `action_labels` and `qa_question` / `qa_answer`; its questions and
  answers are tokenizer training text too. An entry's `segments` (seconds) become the record's
  segment_start / segment_end in stored frames (`segment_frames`), segment_action (class id),
  segment_caption (label) and segment_object (-1); without segments these lists stay empty, so
  such records keep their bytes. Such an entry may have an empty caption (QA datasets have
  none; its record then has caption "" and no nouns); an entry with neither labels, QA pairs
  nor segments (not None) is skipped for an empty caption.

  Returns a summary: clips, frames, skipped, total (entries), num_shards, shards_written (this
  call; 0 when everything was already done), skipped_fraction, ok (skipped_fraction <=
  max_skipped_fraction), skipped_path, manifest_path, tokenizer_path (or None) and line (the
  one-line report the CLI prints). Raises ValueError on bad arguments, no entries, an entry
  whose caption is not its captions[0], a label that is not an int >= 0, a QA pair that is
  not two strings, a segment that is not (0 <= start < end, class id >= 0, label), a manifest with other settings, or a tokenizer.model not made by this
  split.
  """
  _check_knobs(num_shards, fps, short_side, max_frames, workers, jpeg_quality)
  if not entries:
    raise ValueError(f"no entries for the {source} {split} split")
  for e in entries:
    if e.captions and e.captions[0] != e.caption:
      raise ValueError(
        f"entry {e.id!r}: caption {e.caption!r} is not captions[0] {e.captions[0]!r}"
      )
    if not all(isinstance(k, int) and not isinstance(k, bool) and k >= 0 for k in e.action_labels):
      raise ValueError(f"entry {e.id!r}: action_labels {e.action_labels!r} are not ints >= 0")
    if not all(len(p) == 2 and all(isinstance(t, str) for t in p) for p in e.qa):
      raise ValueError(f"entry {e.id!r}: qa {e.qa!r} is not (question, answer) string pairs")
    if not all(_valid_segment(s) for s in e.segments or ()):
      raise ValueError(
        f"entry {e.id!r}: segments {e.segments!r} are not (start, end, class id >= 0, label) "
        "with 0 <= start < end seconds"
      )
  settings = _settings(
    source,
    annotations_sha256,
    dict(
      num_shards=num_shards,
      fps=float(fps),
      short_side=short_side,
      max_frames=max_frames,
      jpeg_quality=jpeg_quality,
    ),
  )
  os.makedirs(output_dir, exist_ok=True)
  manifest_path = os.path.join(output_dir, f"{split}-manifest.json")
  manifest = dict(split=split, settings=settings, shards={}, tokenizer=None, complete=False)
  if os.path.exists(manifest_path):
    with open(manifest_path) as f:
      manifest = json.load(f)
    old = manifest.get("settings", {})
    differ = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
    if differ:
      raise ValueError(
        f"{output_dir} holds {split} shards built with other settings (differ "
        f"in: {differ}); use another --output or delete its {split}-* files"
      )
  tokenizer_path = os.path.join(output_dir, TOKENIZER)
  if tokenizer_vocab_size > 0 and os.path.exists(tokenizer_path) and not manifest["tokenizer"]:
    raise ValueError(
      f"{tokenizer_path} exists but was not trained by this {split} build; "
      "remove it or pass --tokenizer_vocab_size=0 (e.g. for the val split)"
    )
  for name in os.listdir(output_dir):  # temporary files of a killed run
    if name.startswith(f".tmp-{split}-"):
      os.remove(os.path.join(output_dir, name))
  names = shard_names(split, num_shards)
  shards = {
    n: info
    for n, info in manifest["shards"].items()
    if n in names
    and os.path.exists(os.path.join(output_dir, n))
    and os.path.getsize(os.path.join(output_dir, n)) == info["bytes"]
  }
  manifest.update(shards=shards, complete=False)
  phrases = [[] if e.error else nouns_lib.extract_nouns(e.caption) for e in entries]
  tasks = [
    dict(
      output_dir=output_dir,
      video_root=video_root,
      settings=settings,
      name=name,
      items=[
        (i, dataclasses.asdict(entries[i]), phrases[i])
        for i in range(shard, len(entries), num_shards)
      ],
    )
    for shard, name in enumerate(names)
    if name not in shards
  ]

  def record(info):
    done = info.pop("name")
    shards[done] = info
    _write_json(manifest_path, manifest)  # after every shard: what a rerun may skip
    logging.info(
      "%s: %d clips, %d skipped (%d/%d shards)",
      done,
      info["clips"],
      len(info["skipped"]),
      len(shards),
      num_shards,
    )

  start_time = time.time()
  if workers > 1 and len(tasks) > 1:
    # spawn, not fork: the caller may already run TF or JAX threads, which fork can deadlock.
    context = multiprocessing.get_context("spawn")
    with futures.ProcessPoolExecutor(min(workers, len(tasks)), mp_context=context) as pool:
      for future in futures.as_completed([pool.submit(_write_shard, t) for t in tasks]):
        record(future.result())
  else:
    for task in tasks:
      record(_write_shard(task))

  skipped = sorted(row for info in shards.values() for row in info["skipped"])
  skipped_path = os.path.join(output_dir, f"{split}-skipped.tsv")
  _write_skipped(skipped_path, skipped)
  if tokenizer_vocab_size > 0 and not (
    manifest["tokenizer"] == dict(path=TOKENIZER, vocab_size=tokenizer_vocab_size)
    and os.path.exists(tokenizer_path)
  ):
    skipped_indices = {row[0] for row in skipped}
    texts = [
      text
      for i, e in enumerate(entries)
      if i not in skipped_indices
      for text in [*(e.captions or [e.caption]), *phrases[i], *(t for pair in e.qa for t in pair)]
    ]
    tokenizer_lib.train_tokenizer(texts, tokenizer_path, tokenizer_vocab_size)
    manifest["tokenizer"] = dict(path=TOKENIZER, vocab_size=tokenizer_vocab_size)
  clips = sum(info["clips"] for info in shards.values())
  frames = sum(info["frames"] for info in shards.values())
  manifest.update(
    complete=True,
    counts=dict(clips=clips, frames=frames, skipped=len(skipped), entries=len(entries)),
  )
  _write_json(manifest_path, manifest)
  fraction = len(skipped) / len(entries)
  line = (
    f"build_shards: wrote {clips} clips in {num_shards} shards; skipped {len(skipped)} "
    f"of {len(entries)} ({100 * fraction:.1f}%) -> {skipped_path}"
  )
  logging.info("%s (%d shards written in %.1f s)", line, len(tasks), time.time() - start_time)
  return dict(
    clips=clips,
    frames=frames,
    skipped=len(skipped),
    total=len(entries),
    num_shards=num_shards,
    shards_written=len(tasks),
    skipped_fraction=fraction,
    ok=fraction <= max_skipped_fraction,
    skipped_path=skipped_path,
    manifest_path=manifest_path,
    tokenizer_path=tokenizer_path if manifest["tokenizer"] else None,
    line=line,
  )


def define_build_flags(what: str = "the entries") -> None:
  """The decoding and sharding flags every shard builder shares (build_shards, the readers of
  public benchmarks under data_pipelines/readers/); `build_knobs` reads them back."""
  flags.DEFINE_integer("num_shards", 8, "Number of shards per split; entry i goes to shard i % n.")
  flags.DEFINE_float("fps", 8.0, "Frames per second to sample.")
  flags.DEFINE_integer("short_side", 128, "Short side of the stored frames, in pixels.")
  flags.DEFINE_integer("max_frames", 0, "Keep at most this many frames per clip (0: all).")
  flags.DEFINE_integer("jpeg_quality", 90, "JPEG quality of the stored frames (1-100).")
  flags.DEFINE_integer("workers", 1, "Processes, one shard each at a time (spawned).")
  flags.DEFINE_float(
    "max_skipped_fraction", 0.1, f"Exit with status 1 when a larger fraction of {what} is skipped."
  )
  flags.DEFINE_integer(
    "tokenizer_vocab_size",
    0,
    "> 0: train OUT/tokenizer.model with this vocabulary on the training captions and nouns "
    "(and questions and answers, for QA datasets).",
  )


def build_knobs() -> Dict[str, Any]:
  """The values of `define_build_flags`' flags, as keyword arguments of `build_entries`."""
  names = (
    "num_shards",
    "fps",
    "short_side",
    "max_frames",
    "jpeg_quality",
    "workers",
    "max_skipped_fraction",
    "tokenizer_vocab_size",
  )
  return {name: getattr(flags.FLAGS, name) for name in names}


def _define_flags() -> None:
  # Defined only when run as a program, so importing this module adds no flags.
  flags.DEFINE_string("input", None, "Annotation file: .csv, .jsonl or ActivityNet .json.")
  flags.DEFINE_string(
    "video_root",
    None,
    "Directory the annotation's video paths are "
    "relative to (default: the annotation file's directory).",
  )
  flags.DEFINE_string("output", None, "Output directory for shards, manifest and report.")
  flags.DEFINE_string("split", "train", "Split name: the shard file prefix.")
  flags.DEFINE_string(
    "video_column",
    "",
    "CSV/JSONL column of the video path, if not one of " + ", ".join(annotations.VIDEO_COLUMNS),
  )
  flags.DEFINE_string(
    "caption_column",
    "",
    "CSV/JSONL column of the caption, if not one of " + ", ".join(annotations.CAPTION_COLUMNS),
  )
  define_build_flags()
  flags.mark_flags_as_required(["input", "output"])


def main(argv: Sequence[str]) -> None:
  del argv
  f = flags.FLAGS
  try:
    summary = build(
      f.input,
      f.video_root or os.path.dirname(os.path.abspath(f.input)),
      f.output,
      split=f.split,
      video_column=f.video_column,
      caption_column=f.caption_column,
      **build_knobs(),
    )
  except (ValueError, FileNotFoundError) as e:  # the annotation file or a knob: say which
    sys.exit(f"FATAL build_shards: {e}")
  print(summary["line"])
  if not summary["ok"]:
    # The shards are written and usable; the status tells a script that too much was lost.
    sys.exit(
      f"FATAL build_shards: {summary['skipped_fraction']:.1%} of the entries were skipped, more "
      f"than --max_skipped_fraction={f.max_skipped_fraction}; the shards of the rest are "
      f"written. See why in {summary['skipped_path']}, or raise --max_skipped_fraction"
    )


if __name__ == "__main__":
  _define_flags()
  app.run(main)
