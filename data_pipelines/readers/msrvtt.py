"""MSR-VTT to svilm shards: split `train` with every caption of each video, split `test` (1k-A).

  python -m data_pipelines.readers.msrvtt --data_json=msrvtt_data/MSRVTT_data.json \
      --train_list=msrvtt_data/MSRVTT_train.9k.csv \
      --test_csv=msrvtt_data/MSRVTT_JSFUSION_test.csv --video_root=MSRVTT/videos/all \
      --output=shards/msrvtt --tokenizer_vocab_size=8000

The input files, as in the MSR-VTT release and CLIP4Clip's msrvtt_data.zip:

  --data_json   MSRVTT_data.json: {"info": ..., "videos": [{"video_id": "video0", "split":
                "train", ...}, ...], "sentences": [{"caption": "...", "video_id": "video0",
                "sen_id": 0}, ...]}, about 20 sentences for each of 10000 videos.
  --train_list  the training video ids: a CSV with a `video_id` column (MSRVTT_train.9k.csv,
                MSRVTT_train.7k.csv), or a text file with one id per line.
  --test_csv    the 1k-A test split, MSRVTT_JSFUSION_test.csv: header key,vid_key,video_id,
                sentence and one row per test video, e.g.
                ret0,msr7579,video7579,a girl wearing red top and black trouser is putting ...
  --video_root  holds <video_id>.mp4 for every video.

Written into --output by build_shards.build_entries, so flags, manifest, skip report and resume
rules are those of `python -m data_pipelines.build_shards` (docs/data.md):

  train  one record per train-list video, in list order: `captions` holds all its sentences of
         the JSON in file order, `caption` is the first and `nouns` are that caption's.
  test   one record per CSV row, in file order, whose `caption` and only `captions` entry is the
         row's sentence: the 1k-A protocol queries each video with this one sentence, so its
         20 sentences in the JSON are not used.

Record ids are the video ids ("video7579") and the source is "msrvtt". The released videos are
already the clips (the JSON's "start time" / "end time" place them in the YouTube originals),
so each is used whole. Captions are stripped of surrounding whitespace.

Errors. A train-list id without sentences in the JSON, an id listed twice, or a file that is
not in its format is a ValueError naming it, raised before anything is decoded: the files do
not belong together and no skip report would make the output right. A missing or broken video,
or an empty sentence, skips that one video and is listed in OUT/{split}-skipped.tsv as
build_shards does. Each split's manifest holds the SHA-256 of the files the split was read from
(train: the JSON and the list; test: the CSV), so rebuilding into the same --output from other
versions of the files is refused rather than mixed.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import sys
from typing import Any, Dict, List, Optional, Sequence, Tuple

from absl import app
from absl import flags

from data_pipelines import annotations
from data_pipelines import build_shards
from data_pipelines.readers import common

SOURCE = "msrvtt"
TRAIN_SPLIT, TEST_SPLIT = "train", "test"
VIDEO_EXTENSION = ".mp4"


def _csv_rows(text: str, path: str, required: Sequence[str]) -> List[Dict[str, str]]:
  """The rows of a CSV with a header, keys and values stripped; `required` columns checked."""
  reader = csv.DictReader(io.StringIO(text, newline=""))
  columns = [(c or "").strip() for c in reader.fieldnames or ()]
  missing = [c for c in required if c not in columns]
  if missing:
    raise ValueError(f"{path}: CSV header {columns} lacks the column(s) {missing}")
  return [
    {(k or "").strip(): (v or "").strip() if isinstance(v, str) else "" for k, v in row.items()}
    for row in reader
  ]


def _check_ids(ids: Sequence[str], path: str) -> None:
  if not ids:
    raise ValueError(f"{path} lists no videos")
  seen, repeated = set(), []
  for video_id in ids:
    if video_id in seen and video_id not in repeated:
      repeated.append(video_id)
    seen.add(video_id)
  if repeated:
    # Two records with one video_id would make retrieval ground truth ambiguous.
    raise ValueError(f"{path} lists these videos more than once: {common.named(repeated)}")


def read_sentences(data_json: str) -> Dict[str, List[str]]:
  """video_id -> its captions in MSRVTT_data.json, in the order of the `sentences` list."""
  try:
    data = json.loads(annotations.read_text(data_json))
  except ValueError as e:
    raise ValueError(f"{data_json} is not JSON: {e}") from None
  sentences = data.get("sentences") if isinstance(data, dict) else None
  if not isinstance(sentences, list):
    raise ValueError(f"{data_json} is not MSRVTT_data.json: no `sentences` list")
  captions: Dict[str, List[str]] = {}
  for n, item in enumerate(sentences):
    if not isinstance(item, dict) or item.get("video_id") in (None, ""):
      raise ValueError(f"{data_json}: sentences[{n}] has no video_id")
    caption = item.get("caption")
    captions.setdefault(str(item["video_id"]), []).append(
      "" if caption is None else str(caption).strip()
    )
  return captions


def read_video_list(path: str) -> List[str]:
  """The video ids of a train list, in order: a CSV whose header has `video_id`, or plain text.

  A file whose first non-empty line is a comma-separated header naming `video_id` is read as
  CSV (other columns are ignored); any other file as one id per non-empty line.
  """
  text = annotations.read_text(path)
  first = next((line for line in text.splitlines() if line.strip()), "")
  if "video_id" in (c.strip() for c in first.split(",")):
    ids = []
    for n, row in enumerate(_csv_rows(text, path, ["video_id"])):
      if not row.get("video_id"):
        raise ValueError(f"{path}: row {n + 2} has no video_id")
      ids.append(row["video_id"])
  else:
    ids = [line.strip() for line in text.splitlines() if line.strip()]
  _check_ids(ids, path)
  return ids


def read_test_csv(path: str) -> List[Tuple[str, str]]:
  """(video_id, sentence) of each row of an MSRVTT_JSFUSION_test.csv, in file order."""
  rows = _csv_rows(annotations.read_text(path), path, ["video_id", "sentence"])
  pairs = []
  for n, row in enumerate(rows):
    if not row["video_id"]:
      raise ValueError(f"{path}: row {n + 2} has no video_id")
    pairs.append((row["video_id"], row["sentence"]))
  _check_ids([video_id for video_id, _ in pairs], path)
  return pairs


def _entry(video_id: str, captions: Sequence[str]) -> annotations.Entry:
  try:
    video_id.encode("utf-8")
    error = annotations.captions_error(captions)
  except UnicodeEncodeError:  # a lone surrogate from a byte that is not UTF-8
    error = "video id is not valid UTF-8"
  return annotations.Entry(
    video=video_id + VIDEO_EXTENSION,
    caption=captions[0],
    start=None,
    end=None,
    id=video_id,
    error=error,
    captions=tuple(captions),
  )


def train_entries(
  sentences: Dict[str, List[str]], video_ids: Sequence[str], where: str = "the train list"
) -> List[annotations.Entry]:
  """One entry per id of `video_ids` with all its sentences; raises on ids without any."""
  missing = [v for v in video_ids if not sentences.get(v)]
  if missing:
    raise ValueError(
      f"{where}: {len(missing)} video(s) have no sentences in MSRVTT_data.json: {common.named(missing)}"
    )
  return [_entry(v, sentences[v]) for v in video_ids]


def jsfusion_test_entries(pairs: Sequence[Tuple[str, str]]) -> List[annotations.Entry]:
  """One entry per (video_id, sentence) of the 1k-A CSV, the sentence its only caption."""
  return [_entry(video_id, [sentence]) for video_id, sentence in pairs]


def _sha256(*paths: str) -> str:
  """One digest of several files: SHA-256 of their SHA-256s in order."""
  hashes = "\n".join(build_shards.file_sha256(p) for p in paths)
  return hashlib.sha256(hashes.encode("ascii")).hexdigest()


def build_msrvtt(
  data_json: Optional[str],
  train_list: Optional[str],
  test_csv: Optional[str],
  video_root: str,
  output_dir: str,
  *,
  tokenizer_vocab_size: int = 0,
  **knobs: Any,
) -> Dict[str, Dict[str, Any]]:
  """Writes the `train` (from data_json + train_list) and `test` (from test_csv) shards.

  A split whose file is None is not built (data_json is needed for train only). `knobs` are
  build_shards.build_entries' num_shards, fps, short_side, max_frames, jpeg_quality, workers
  and max_skipped_fraction, the same for both splits; a tokenizer (tokenizer_vocab_size > 0)
  is trained on the train split's captions and nouns only. Every file is read and checked
  before any video is decoded. Returns {split: build_entries' summary} for the splits built
  (clips, skipped, total, ok, line, ...). Raises ValueError as the module docstring says, and
  as build_entries does.
  """
  if train_list is None and test_csv is None:
    raise ValueError("give a train list, a test CSV or both")
  if train_list is not None and data_json is None:
    raise ValueError("the train split needs MSRVTT_data.json (data_json)")
  splits = []  # (split, entries, sha256 of the files they came from)
  if train_list is not None:
    entries = train_entries(read_sentences(data_json), read_video_list(train_list), train_list)
    splits.append((TRAIN_SPLIT, entries, _sha256(data_json, train_list)))
  if test_csv is not None:
    splits.append((TEST_SPLIT, jsfusion_test_entries(read_test_csv(test_csv)), _sha256(test_csv)))
  summaries = {}
  for split, entries, digest in splits:
    summaries[split] = build_shards.build_entries(
      entries,
      video_root,
      output_dir,
      source=SOURCE,
      annotations_sha256=digest,
      split=split,
      tokenizer_vocab_size=tokenizer_vocab_size if split == TRAIN_SPLIT else 0,
      **knobs,
    )
  return summaries


def _define_flags() -> None:
  # Defined only when run as a program, so importing this module adds no flags.
  flags.DEFINE_string("data_json", None, "MSRVTT_data.json (needed with --train_list).")
  flags.DEFINE_string(
    "train_list",
    None,
    "Training video ids: CSV with a video_id column "
    "(MSRVTT_train.9k.csv) or one id per line. Unset: no train split.",
  )
  flags.DEFINE_string("test_csv", None, "MSRVTT_JSFUSION_test.csv (1k-A). Unset: no test split.")
  flags.DEFINE_string("video_root", None, "Directory holding <video_id>.mp4.")
  flags.DEFINE_string("output", None, "Output directory for shards, manifests and reports.")
  build_shards.define_build_flags("a split's videos")
  flags.mark_flags_as_required(["video_root", "output"])


def main(argv: Sequence[str]) -> None:
  del argv
  f = flags.FLAGS
  summaries = build_msrvtt(
    f.data_json, f.train_list, f.test_csv, f.video_root, f.output, **build_shards.build_knobs()
  )
  for split, summary in summaries.items():
    print(f"{split}: {summary['line']}")
  failed = [split for split, summary in summaries.items() if not summary["ok"]]
  if failed:
    print(
      f"msrvtt: more than --max_skipped_fraction={f.max_skipped_fraction} of the videos "
      f"of {', '.join(failed)} were skipped",
      file=sys.stderr,
    )
    sys.exit(1)


if __name__ == "__main__":
  _define_flags()
  app.run(main)
