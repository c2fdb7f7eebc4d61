"""Readers of public datasets' own annotation files into svilm shards.

Each module turns one dataset's release files into in-memory `annotations.Entry` lists and
hands them to `build_shards.build_entries`, so decoding, sharding, the resume manifest and the
skip report are those of `python -m data_pipelines.build_shards` (docs/data.md):

  msrvtt       MSR-VTT: train with every caption of each video, and the 1k-A test split
  ucf101       UCF101 action recognition: a label per video, official splits 1-3, classes.txt
  hmdb51       HMDB51 action recognition: the same from its per-class split files
  video_qa     MSRVTT-QA and MSVD-QA: each video's question-answer pairs
  activitynet  ActivityNet v1.3 action localization: each video's segments, ground_truth.json
  common       what the readers of labelled and QA datasets share
"""
