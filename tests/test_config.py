"""Config loading: locked keys, derived values, and impossible settings rejected by name."""

import pytest

from configs import pretrain
from configs import pretrain_paper
from svilm import configuration
from tests.conftest import run_main


def _finalize(config, num_devices=8, vocab_size=100):
  return configuration.finalize(
    config, num_devices=num_devices, process_count=1, vocab_size=vocab_size
  )


def test_derived_values_are_filled_in_one_place():
  config = _finalize(pretrain.get_config())
  assert config.model.text.vocab_size == 100
  assert config.model.text.max_len == max(config.data.max_text_len, config.data.max_noun_len)
  assert config.cut_and_paste.max_span == config.data.num_frames // 2 - 1  # N_t - 1
  with pytest.raises(AttributeError):
    config.model.text.new_key = 1  # finalized configs stay locked


@pytest.mark.parametrize(
  "key, value, message",
  [
    ("batch_size", 12, "batch_size=12 is not divisible by the 8 batch shards"),
    (
      "optim.grad_accum_steps",
      3,
      "batch_size=32 is not divisible by "
      "optim.grad_accum_steps=3 micro-batches x the 8 batch shards",
    ),
    ("model.dtype", "float16", "model.dtype='float16'"),
    ("model.remat", "some", "model.remat='some'"),
    ("data.host_split", "hosts", "data.host_split"),
    ("mesh.model", 3, "mesh.model=3: 8 devices are not divisible by 3"),
    ("model.video.grouping_layers", (2, 7), "model.video.grouping_layers"),
    ("cut_and_paste.max_span", 4, "cut_and_paste.min_span=1 / max_span=4"),
    ("data.num_frames", 7, "data.num_frames=7 is not divisible"),
    ("data.resolution", 72, "data.resolution=72"),
    ("loss.temporal_kind", "l1", "loss.temporal_kind"),
    ("data.noun_prompt", "a video", "data.noun_prompt"),
  ],
)
def test_impossible_settings_fail_naming_the_key(key, value, message):
  config = pretrain.get_config()
  *parents, leaf = key.split(".")
  node = config
  for parent in parents:
    node = node[parent]
  node[leaf] = value
  with pytest.raises(
    configuration.ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")
  ):
    _finalize(config)


def test_temporal_loss_without_cut_and_paste_is_rejected():
  config = pretrain.get_config()
  config.cut_and_paste.enabled = False
  with pytest.raises(configuration.ConfigError, match="loss.temporal_weight"):
    _finalize(config)
  config.loss.temporal_weight = 0.0
  _finalize(config)


def test_paper_config_needs_data_and_tokenizer():
  with pytest.raises(ValueError, match="needs real data"):
    pretrain_paper.get_config()
  with pytest.raises(ValueError, match="Unknown argument"):
    pretrain_paper.get_config("dat=/x,tokenizer=/y")
  config = pretrain_paper.get_config("data=/shards,tokenizer=/spm.model")
  assert config.data.path == "/shards" and config.model.video.grouping_layers == (6, 9, 12)
  assert config.model.video.num_groups == 32 and config.data.num_frames == 32


def _main(*args):
  return run_main(*args, timeout=120)


def test_main_rejects_a_misspelt_key_by_name(tmp_path):
  result = _main("--config=configs/pretrain.py", f"--workdir={tmp_path}", "--config.totl_steps=1")
  assert result.returncode != 0
  assert "totl_steps" in result.stderr and "Unknown config key" in result.stderr
  assert not (tmp_path / "checkpoints").exists()


def test_main_paper_config_without_data_says_what_to_pass(tmp_path):
  result = _main("--config=configs/pretrain_paper.py", f"--workdir={tmp_path}")
  assert result.returncode != 0
  assert "configs/pretrain_paper.py:data=SHARD_DIR,tokenizer=SPM.model" in result.stderr


def test_an_unknown_task_fails_naming_the_registered_ones():
  config = pretrain.get_config()
  config.task = "pretrian"
  with pytest.raises(
    configuration.ConfigError, match="config.task='pretrian'.*pretrain, retrieval"
  ):
    _finalize(config)


def test_task_checks_belong_to_the_task():
  from configs import retrieval

  config = retrieval.get_config()
  assert "cut_and_paste" not in config and "loss" not in config  # pretraining's own keys
  _finalize(config)
  config = retrieval.get_config("msrvtt")
  with pytest.raises(configuration.ConfigError, match="--config.data.path=SHARD_DIR"):
    _finalize(config)
  config.data.path = "/shards"
  _finalize(config)
  with pytest.raises(ValueError, match="Unknown variant.*msrvt"):
    retrieval.get_config("msrvt")


@pytest.mark.parametrize(
  "name, variant",
  [
    ("action_recognition", ""),
    ("action_recognition", "finetune"),
    ("action_recognition", "ucf101"),
    ("action_recognition", "hmdb51,finetune"),
    ("video_qa", ""),
    ("video_qa", "msrvtt_qa"),
    ("video_qa", "msvd_qa"),
    ("temporal_localization", ""),
    ("temporal_localization", "activitynet"),
  ],
)
def test_every_downstream_variant_finalizes(name, variant):
  """The variants CI does not train: each passes its task's checks (the real-data ones once
  given their shards) at 8 devices."""
  import importlib

  module = importlib.import_module(f"configs.{name}")
  config = module.get_config(variant)
  if config[name].benchmark != "shapesworld":
    with pytest.raises(configuration.ConfigError, match="--config.data.path=SHARD_DIR"):
      _finalize(config.copy_and_resolve_references())
    config.data.path = "/shards"
  finalized = _finalize(config)
  assert finalized.task == name
  with pytest.raises(ValueError, match="Unknown variant"):
    module.get_config("tinyy")


def test_a_malformed_init_from_map_names_the_format():
  from svilm import tasks
  from svilm.trainers import trainer

  config = pretrain.get_config()
  config.init_from_map = "video_encoder"
  with pytest.raises(configuration.ConfigError, match="checkpoint_subtree:model_subtree"):
    trainer.init_from_map(config, tasks.get("pretrain"))
  config.init_from_map = "video_encoder:video_encoder, text_encoder:text_encoder"
  assert trainer.init_from_map(config, tasks.get("pretrain")) == {
    "video_encoder": "video_encoder",
    "text_encoder": "text_encoder",
  }
