"""MSRVTT-QA and MSVD-QA to svilm shards: splits `train`, `val` and `test`, one record per video.

  python -m data_pipelines.readers.video_qa --dataset=msrvtt_qa --annotations=msrvtt_qa \
      --video_root=MSRVTT/videos/all --output=shards/msrvtt_qa --tokenizer_vocab_size=8000
  python -m data_pipelines.readers.video_qa --dataset=msvd_qa --annotations=msvd_qa \
      --video_root=YouTubeClips --output=shards/msvd_qa --tokenizer_vocab_size=4000

The input files, as released by Xu et al. 2017 (github.com/xudejing/video-question-answering)
and read by e.g. HCRN (thaolmk54/hcrn-videoqa, preprocess/datautils/msrvtt_qa.py and
msvd_qa.py) and Just Ask (antoyang/just-ask, preproc/preproc_msrvttqa.py and
preproc_msvdqa.py):

  --annotations       a directory holding {train,val,test}_qa.json: each a JSON list of
                      question objects, {"question": "what is a man doing?", "answer": "cook",
                      "video_id": 7010, "id": 0} (MSRVTT-QA also has "category_id"; other keys
                      are ignored). `video_id` is an integer; `id`, when present, is unique in
                      the file.
  --video_root        MSRVTT-QA: video<video_id>.mp4 (MSR-VTT's videos). MSVD-QA:
                      <clip>.avi (MSVD's YouTubeClips), or vid<video_id>.avi if only that exists.
  --youtube_mapping   MSVD-QA only (default: <annotations>/youtube_mapping.txt): one line per
                      clip, "<clip> vid<video_id>", e.g. "-4wsuPCjDBc_5_15 vid1".

Written into --output by build_shards.build_entries, so flags, manifest, skip report and resume
rules are those of `python -m data_pipelines.build_shards` (docs/data.md):

  train, val, test   one record per video, in the order of its first question in the file,
                     the whole video: `qa_question` / `qa_answer` hold all its questions and
                     answers in file order (stripped of surrounding blanks). `caption` is ""
                     and `nouns` empty: these datasets have no captions, so the shards are for
                     the video QA task, not for pretraining (build_shards keeps an entry with
                     QA pairs despite its empty caption, and validate.py accepts it).

Record ids: MSRVTT-QA "video<video_id>" (MSR-VTT's own ids), MSVD-QA the clip name; sources
"msrvtt_qa" and "msvd_qa". The tokenizer (--tokenizer_vocab_size) is trained on the train
split's questions and answers.

Errors. A file that is not such a JSON list, an object without a string question and answer or
an integer video_id, a repeated `id`, a malformed or repeated mapping line, a video_id without
a mapping line, or a video in two splits is a ValueError naming it, raised before anything is
decoded. A missing or broken video, or an empty or non-UTF-8 question or answer, skips that
video (all its questions) and is listed in OUT/{split}-skipped.tsv. Each split's manifest holds
the SHA-256 of its JSON file (and of the mapping for MSVD-QA).
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

from absl import app
from absl import flags

from data_pipelines import annotations
from data_pipelines import build_shards
from data_pipelines.readers import common

DATASETS = ("msrvtt_qa", "msvd_qa")
SPLITS = ("train", "val", "test")
MAPPING = "youtube_mapping.txt"

# (video_id, question, answer) of one question object.
Question = Tuple[int, str, str]


def read_qa_json(path: str) -> List[Question]:
  """(video_id, question, answer) of each object of an MSRVTT-QA / MSVD-QA file, in order."""
  try:
    data = json.loads(annotations.read_text(path))
  except ValueError as e:
    raise ValueError(f"{path} is not JSON: {e}") from None
  if not isinstance(data, list):
    raise ValueError(f"{path} is not a JSON list of questions")
  questions, ids = [], {}
  for n, item in enumerate(data):
    where = f"{path}: question {n}"
    if not isinstance(item, dict):
      raise ValueError(f"{where} is not a JSON object")
    video_id = item.get("video_id")
    if not isinstance(video_id, int) or isinstance(video_id, bool):
      raise ValueError(f"{where} has no integer video_id (got {video_id!r})")
    for key in ("question", "answer"):
      if not isinstance(item.get(key), str):
        raise ValueError(f"{where} has no string {key!r} (got {item.get(key)!r})")
    if "id" in item:
      key = json.dumps(item["id"])
      if key in ids:
        raise ValueError(f"{where} repeats id {key} of question {ids[key]}")
      ids[key] = n
    questions.append((video_id, item["question"].strip(), item["answer"].strip()))
  return questions


def read_youtube_mapping(path: str) -> Dict[int, str]:
  """{video_id: clip name} of an MSVD youtube_mapping.txt ("<clip> vid<video_id>" lines)."""
  clips: Dict[int, str] = {}
  seen = set()
  for n, fields in common.table_lines(path):
    if len(fields) != 2 or not fields[1].startswith("vid") or not fields[1][3:].isdigit():
      raise ValueError(f"{path}:{n}: expected '<clip> vid<id>', got {fields}")
    clip, video_id = fields[0], int(fields[1][3:])
    if video_id in clips or clip in seen:
      raise ValueError(f"{path}:{n}: {clip} or vid{video_id} is mapped twice")
    clips[video_id] = clip
    seen.add(clip)
  return clips


def qa_error(pairs: Sequence[Tuple[str, str]]) -> str:
  """Why the video of these (question, answer) pairs is skipped ("" if it is not)."""
  for k, pair in enumerate(pairs):
    for kind, text in zip(("question", "answer"), pair):
      if not common.valid_utf8(text):
        return f"{kind} is not valid UTF-8 (pair {k} of {len(pairs)})"
      if not text:
        return f"empty {kind} (pair {k} of {len(pairs)})"
  return ""


def qa_entries(
  questions: Sequence[Question], videos: Dict[int, Tuple[str, str]]
) -> List[annotations.Entry]:
  """One entry per video, in order of its first question, with all its (question, answer)
  pairs in order; `videos` maps each video_id to (record id, video file)."""
  pairs: Dict[int, List[Tuple[str, str]]] = {}
  for video_id, question, answer in questions:
    pairs.setdefault(video_id, []).append((question, answer))
  entries = []
  for video_id, qa in pairs.items():
    record_id, video = videos[video_id]
    entries.append(
      annotations.Entry(
        video=video,
        caption="",
        start=None,
        end=None,
        id=record_id,
        error=qa_error(qa) or ("" if common.valid_utf8(video) else "video path is not valid UTF-8"),
        qa=tuple(qa),
      )
    )
  return entries


def _msvd_video(clip: str, video_id: int, video_root: str) -> str:
  for name in (f"{clip}.avi", f"vid{video_id}.avi"):
    if os.path.exists(os.path.join(video_root, name)):
      return name
  return f"{clip}.avi"


def build_video_qa(
  dataset: str,
  annotations_dir: str,
  video_root: str,
  output_dir: str,
  *,
  splits: Sequence[str] = SPLITS,
  youtube_mapping: Optional[str] = None,
  tokenizer_vocab_size: int = 0,
  **knobs: Any,
) -> Dict[str, Dict[str, Any]]:
  """Writes the `splits` of `dataset` ("msrvtt_qa" or "msvd_qa") from {split}_qa.json files.

  `youtube_mapping` (MSVD-QA; default annotations_dir/youtube_mapping.txt) maps video ids to
  clip names. `knobs` are build_entries' num_shards, fps, short_side, max_frames,
  jpeg_quality, workers and max_skipped_fraction, the same for every split; a tokenizer
  (tokenizer_vocab_size > 0) is trained on split `train` only. Every file is read and checked
  before any video is decoded. Returns {split: build_entries' summary}. Raises ValueError as
  the module docstring says and as build_entries does; FileNotFoundError for a missing file.
  """
  if dataset not in DATASETS:
    raise ValueError(f"unknown dataset {dataset!r}; expected one of {DATASETS}")
  unknown = [s for s in splits if s not in SPLITS]
  if unknown or not splits:
    raise ValueError(f"splits {list(splits)}: expected some of {SPLITS}")
  mapping_path, clips = None, {}
  if dataset == "msvd_qa":
    mapping_path = youtube_mapping or os.path.join(annotations_dir, MAPPING)
    clips = read_youtube_mapping(mapping_path)
  built = []
  for split in splits:
    path = os.path.join(annotations_dir, f"{split}_qa.json")
    questions = read_qa_json(path)
    if not questions:
      raise ValueError(f"{path} holds no questions")
    ids = list(dict.fromkeys(video_id for video_id, _, _ in questions))
    if dataset == "msrvtt_qa":
      videos = {v: (f"video{v}", f"video{v}.mp4") for v in ids}
    else:
      unmapped = [str(v) for v in ids if v not in clips]
      if unmapped:
        raise ValueError(
          f"{path}: these video_ids have no line in {mapping_path}: {common.named(unmapped)}"
        )
      videos = {v: (clips[v], _msvd_video(clips[v], v, video_root)) for v in ids}
    digest = common.files_sha256([path] + ([mapping_path] if mapping_path else []))
    built.append((split, qa_entries(questions, videos), digest))
  return common.build_splits(
    built,
    video_root,
    output_dir,
    source=dataset,
    tokenizer_vocab_size=tokenizer_vocab_size,
    **knobs,
  )


def _define_flags() -> None:
  # Defined only when run as a program, so importing this module adds no flags.
  flags.DEFINE_enum("dataset", None, DATASETS, "Which dataset's files these are.")
  flags.DEFINE_string("annotations", None, "Directory holding {train,val,test}_qa.json.")
  flags.DEFINE_string(
    "youtube_mapping", None, "MSVD-QA's youtube_mapping.txt (default: in --annotations)."
  )
  flags.DEFINE_list("splits", list(SPLITS), "The splits to build (each reads {split}_qa.json).")
  flags.DEFINE_string("video_root", None, "Directory holding the videos (see the module doc).")
  flags.DEFINE_string("output", None, "Output directory for shards, manifests and reports.")
  build_shards.define_build_flags("a split's videos")
  flags.mark_flags_as_required(["dataset", "annotations", "video_root", "output"])


def main(argv: Sequence[str]) -> None:
  del argv
  f = flags.FLAGS
  common.run_reader(
    f.dataset,
    lambda: build_video_qa(
      f.dataset,
      f.annotations,
      f.video_root,
      f.output,
      splits=f.splits,
      youtube_mapping=f.youtube_mapping,
      **build_shards.build_knobs(),
    ),
    f.max_skipped_fraction,
  )


if __name__ == "__main__":
  _define_flags()
  app.run(main)
