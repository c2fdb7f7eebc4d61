r"""Text-video retrieval: finetune a pretrained S-ViLM dual encoder (task `retrieval`).

Command (ShapesWorld, from the default pretraining run's workdir W):

  python -m svilm.main --config=configs/retrieval.py --config.init_from=W --workdir=F

Zero-shot number of the same checkpoint (evaluates the loaded weights, no training):

  python -m svilm.main --config=configs/retrieval.py --config.init_from=W \
      --config.total_steps=0 --workdir=F0

Hardware and runtime: a 2-core x86 CPU box (AMD EPYC), 3 min 20 s alone (600 steps at ~135
examples/s, start-up and evaluation included); 6-10 min while other jobs share the cores.

Measured on 2026-11-30 on that machine from the default pretraining run (whose own zero-shot
t2v R@1 there is 0.115), on 461 held-out clips with distinct captions (chance R@1 0.0022):
  retrieval/t2v_R@1   zero-shot 0.115;  finetuned 0.143 / 0.141 / 0.139 (seeds 0, 1, 2;
                      mean 0.141, std 0.002);  same recipe from random init 0.069 / 0.046 /
                      0.082 (mean 0.066, std 0.019)
  retrieval/t2v_MdR   zero-shot 9;  finetuned 7 / 8 / 7;  random init 13 / 18 / 13
  empty-query control (retrieval.empty_query_control): t2v R@1 0.0022 = 1/461 exactly
Training is chaotic on this hardware (docs/tasks.md): compare runs made on one machine.

Data: the held-out split of the pretraining ShapesWorld (same generator settings, so the same
cached build), captions deduplicated as in pretraining's evaluation (`retrieval.
distinct_captions`). Metrics: `retrieval/t2v_R@1` ... (svilm/evaluators/retrieval_eval.py).

Variants (`--config=configs/retrieval.py:ARG`, comma separated):
  tiny     a seconds-long smoke run (CI): the tiny model and ShapesWorld of pretrain.py:tiny.
  msrvtt   MSR-VTT 1k-A at the paper's model size: shards from
           `python -m data_pipelines.readers.msrvtt` given as --config.data.path (with
           tokenizer.model beside them, or --config.data.tokenizer), init_from a checkpoint of
           configs/pretrain_paper.py. Every one of the 1000 test clips is scored.
"""

from __future__ import annotations

import ml_collections

from configs import pretrain
from configs import pretrain_paper
from svilm.tasks import retrieval

_VARIANTS = {"tiny", "msrvtt"}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variants = set(filter(None, (arg or "").split(",")))
  unknown = variants - _VARIANTS
  if unknown:
    raise ValueError(
      f"Unknown variant(s) {sorted(unknown)} for configs/retrieval.py; known: "
      f"{', '.join(sorted(_VARIANTS))}"
    )
  if "msrvtt" in variants:
    config = pretrain_paper.paper_config()
  else:
    config = pretrain.get_config("tiny" if "tiny" in variants else None)
  config.task = "retrieval"
  # Pretraining-only keys: retrieval has no cut-and-paste and one loss.
  del config["cut_and_paste"]
  del config["loss"]
  config.retrieval = retrieval.default_config()
  config.evals = ml_collections.ConfigDict({"retrieval": {"type": "retrieval", "every_steps": 0}})

  # Finetuning: a short schedule at a lower peak rate than pretraining's 1e-3.
  config.total_steps = 600
  config.log_every_steps = 50
  config.checkpoint_every_steps = 200
  config.optim.learning_rate = 2e-4
  config.optim.warmup_steps = 50
  config.eval.max_clips = 0  # the whole held-out split

  if "tiny" in variants:
    config.total_steps = 6
    config.log_every_steps = 2
    config.checkpoint_every_steps = 3
    config.optim.warmup_steps = 2
  if "msrvtt" in variants:
    config.retrieval.benchmark = "msrvtt"
    config.retrieval.distinct_captions = False
    config.data.eval_split = "test"  # the 1k-A split the reader writes
    config.data.num_frames = 12  # (?) CLIP4Clip-style finetuning uses 12 frames
    config.batch_size = 128
    config.total_steps = 5000  # (?) about 5 epochs of MSR-VTT 9k x 1 caption
    config.optim.learning_rate = 1e-5  # (?)
    config.optim.warmup_steps = 500
    config.eval.max_clips = 0  # all 1000 (the last of 4 batches is padded)
  return config
