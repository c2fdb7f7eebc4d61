"""--compile_only: compiles the real step for the configured mesh and reports memory/FLOPs."""

import os

import pytest

from configs import pretrain
from configs import retrieval as retrieval_config
from data_pipelines import tokenizer as tokenizer_lib
from svilm import compile_check
from svilm import configuration
from svilm import data_setup
from svilm.trainers import trainer
from tests.conftest import run_main


def test_fsdp_shards_the_state_not_the_activations_and_flops_ignore_scan_and_remat():
  config = pretrain.get_config("tiny")
  config.model.text.vocab_size = 128
  config.batch_size = 32
  plain = configuration.finalize(
    config.copy_and_resolve_references(), num_devices=8, process_count=1, vocab_size=128
  )
  config.model.update(dict(scan_layers=True, remat="full"))
  dp = compile_train_step_of(config)
  config.mesh.update(dict(data=1, fsdp=-1))
  fsdp = compile_train_step_of(config)
  # Params and both Adam moments split 8 ways (a few small arrays stay whole; the 4-clip batch
  # slice is the same in both).
  assert fsdp["arguments"] < 0.25 * dp["arguments"], (fsdp["arguments"], dp["arguments"])
  # ... while each device still holds only its 4 clips' activations. Without the batch pin on
  # the token stream (svilm/models/layers.py TOKEN_AXES) XLA gathered the batch: 2.7x here, 8x
  # at paper scale.
  assert fsdp["temporaries"] < 1.5 * dp["temporaries"], (fsdp["temporaries"], dp["temporaries"])
  # XLA counts a scanned loop body once; model FLOPs come from the unrolled step, the same as
  # those of the plain (unscanned, no remat) config.
  plain_flops = compile_check.model_flops_per_step(plain)
  assert fsdp["flops_per_step"] == dp["flops_per_step"] == plain_flops


def compile_train_step_of(config):
  return compile_check.compile_train_step(config.copy_and_resolve_references())


def test_vocabulary_size_comes_from_the_tokenizer_the_run_would_read(tiny, tmp_path):
  shapesworld = os.path.join(data_setup.shapesworld_path(tiny), "tokenizer.model")
  assert data_setup.vocab_size(tiny) == tokenizer_lib.Tokenizer(shapesworld).vocab_size
  tiny.data.path = str(tmp_path)  # shards without a tokenizer.model beside them
  with pytest.raises(configuration.ConfigError, match="--config.model.text.vocab_size=N"):
    data_setup.vocab_size(tiny)
  tiny.model.text.vocab_size = 77
  assert data_setup.vocab_size(tiny) == 77


def test_compile_only_runs_the_shipped_tiny_config_as_written(shapesworld_cache, one_device_env):
  result = run_main(
    "--config=configs/pretrain.py:tiny",
    "--compile_only",
    f"--config.data.shapesworld_dir={shapesworld_cache}",
    env=one_device_env,
    timeout=600,
  )
  assert result.returncode == 0, result.stderr[-3000:]
  assert "per device peak (XLA estimate):" in result.stdout
  assert "model FLOPs per step:" in result.stdout


def test_paper_config_compiles_on_the_cpu_without_data(one_device_env):
  # The shard and tokenizer paths do not exist: --compile_only never reads them. One device:
  # the mesh is the 8-device tests' business, and its compile takes a third longer.
  result = run_main(
    "--config=configs/pretrain_paper.py:data=/nonexistent,tokenizer=/nonexistent.model",
    "--compile_only",
    "--config.model.text.vocab_size=30522",
    "--config.batch_size=8",
    env=one_device_env,
    timeout=900,
  )
  assert result.returncode == 0, result.stderr[-3000:]
  assert "per device peak (XLA estimate):" in result.stdout
  assert "219.0M parameters" in result.stdout  # ViT-B video + BERT-base text towers


def test_a_bad_config_fails_before_any_data_is_built(tmp_path):
  # retrieval:msrvtt reads the user's shards; without data.path it must say so at once, not
  # after building a 224-pixel ShapesWorld to learn the vocabulary size.
  config = retrieval_config.get_config("msrvtt")
  config.data.shapesworld_dir = str(tmp_path)
  with pytest.raises(configuration.ConfigError, match="--config.data.path=SHARD_DIR"):
    trainer.setup(config)
  assert os.listdir(tmp_path) == []
