"""The video_qa task's data side: the answer vocabulary from the training shards, the split scan
that the evaluator aligns its predictions with, and the errors of shards without questions.
(The task trains, resumes and evaluates in tests/test_tasks.py.)"""

import os

import numpy as np
import pytest
import tensorflow as tf

from configs import video_qa as video_qa_config
from data_pipelines import input_pipeline
from data_pipelines import ops
from data_pipelines import schema
from svilm import configuration
from svilm import data_setup
from svilm.evaluators import video_qa
from svilm.evaluators import video_qa_eval
from svilm.tasks import base
from svilm.tasks import video_qa as video_qa_task


def _config(shapesworld_cache):
  config = video_qa_config.get_config("tiny")
  config.data.shapesworld_dir = shapesworld_cache
  return config


def test_the_scan_reads_questions_in_the_evaluation_pipelines_order(shapesworld_cache):
  sources = data_setup.prepare(_config(shapesworld_cache))
  files = sources.eval_files
  assert len(files) >= 2  # the order across interleaved files is what could go wrong
  qa = video_qa_eval.read_qa(files)
  vocabulary = sorted({a for _, answers in qa for a in answers})
  most = max(len(questions) for questions, _ in qa)
  ds = input_pipeline.make_dataset_from_ops(
    files, example_ops=[ops.Questions(vocabulary, most)], batch_size=5, train=False
  )
  read = []
  for batch in input_pipeline.as_numpy(ds):
    for row in np.flatnonzero(batch["valid"]):
      real = batch["answer_valid"][row] == 1
      read.append(([q.decode() for q in batch["question"][row][real]], batch["answer"][row][real]))
  assert [questions for questions, _ in read] == [questions for questions, _ in qa]
  for (_, ids), (_, answers) in zip(read, qa):
    np.testing.assert_array_equal(ids, video_qa.answer_ids(answers, vocabulary))
  assert video_qa_eval.read_qa(files, max_records=3) == qa[:3]


def test_vocabulary_is_the_training_splits_most_frequent_answers(shapesworld_cache):
  config = _config(shapesworld_cache)
  config.video_qa.num_answers = 4
  config.video_qa.question_types = "shapesworld"
  sources = data_setup.prepare(config)
  task = video_qa_task.VideoQATask()
  vocabulary = task.vocabulary(config, base.DataContext(sources=sources, tokenizer=None))
  train = video_qa_eval.read_qa(sources.train_files[0])
  answers = [a for _, record in train for a in record]
  assert vocabulary.answers == video_qa.answer_vocabulary(answers, 4)
  assert len(vocabulary.answers) == 4
  assert set(vocabulary.majority_by_type) == {"count", "colour", "shape", "action"}
  # A count question's most frequent answer is a number word.
  count = vocabulary.majority_by_type["count"]
  assert count == -1 or vocabulary.answers[count] in ("one", "two", "three")


def test_training_shards_without_questions_are_a_config_error(tmp_path):
  path = os.path.join(tmp_path, "train-00000-of-00001.tfrecord")
  record = schema.VideoRecord(
    video_id="v0", frames=[b"not decoded"], caption="a red circle", height=8, width=8
  )
  with tf.io.TFRecordWriter(path) as writer:
    writer.write(schema.to_sequence_example(record).SerializeToString())
  config = video_qa_config.get_config("tiny")
  sources = data_setup.DataSources(
    train_files=[[path]], train_weights=None, eval_files=[path], tokenizer_path=""
  )
  task = video_qa_task.VideoQATask()
  with pytest.raises(configuration.ConfigError, match="hold no questions"):
    task.vocabulary(config, base.DataContext(sources=sources, tokenizer=None))


def test_config_errors_name_their_key(shapesworld_cache):
  task = video_qa_task.VideoQATask()
  for key, value, message in (
    ("benchmark", "tgif_qa", "video_qa.benchmark"),
    ("num_answers", 1, "video_qa.num_answers"),
    ("train_questions", 0, "video_qa.train_questions"),
    ("video_context", "groups", "video_qa.video_context"),
    ("max_question_len", 99, "model.text.max_len"),
  ):
    config = _config(shapesworld_cache)
    config.video_qa[key] = value
    with pytest.raises(configuration.ConfigError, match=message):
      task.validate_config(config, vocab_size=128)
  config = _config(shapesworld_cache)
  config.video_qa.benchmark = "msrvtt_qa"
  with pytest.raises(configuration.ConfigError, match="data.path"):
    task.validate_config(config, vocab_size=128)
