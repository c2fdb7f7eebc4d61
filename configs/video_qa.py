r"""Open-ended video QA on the S-ViLM towers with a cross-attention fusion module (task
`video_qa`).

Command (ShapesWorld, from the default pretraining run's workdir W):

  python -m svilm.main --config=configs/video_qa.py --config.init_from=W --workdir=Q

Variants (`--config=configs/video_qa.py:ARG`, comma separated):
  tiny       a seconds-long smoke run (CI): the tiny model and a tiny ShapesWorld.
  msrvtt_qa  MSRVTT-QA from `python -m data_pipelines.readers.video_qa --dataset=msrvtt_qa`
             shards given as --config.data.path (tokenizer.model beside them), test split
             `test`, questions typed by their first word, at the paper's model size (init_from
             a configs/pretrain_paper.py run).
  msvd_qa    MSVD-QA the same way (`--dataset=msvd_qa`).

Data: the default ShapesWorld (the pretraining build, so its cache is shared): 16-frame videos
of 1-3 objects and 1-2 action phases, each with its template questions (count, colour, shape,
action; about 5 per video) and one-word answers. The clip (8 frames 2 apart) covers the whole
video, so every question is answerable from it. Each training step reads 8 questions per clip
(all of them, on ShapesWorld); evaluation answers every question of the held-out split and of
the compositional split (unseen colour-shape pairs), and again with a grey video
(accuracy_blank_video: what the question alone gives).

Answer vocabulary: the 1500 most frequent training answers (MSRVTT-QA practice); the default
ShapesWorld's training questions have 26 distinct answers, so all of them.

Hardware and runtime: a 2-core x86 CPU box (AMD EPYC), 400-465 s alone (600 steps of 32 clips
with up to 8 questions each, start-up, compilation and both evaluations included).

Measured on 2026-12-01 on that machine from the default pretraining run, held-out split (2914
questions), 3 seeds each (mean, standard deviation):
  pretrained     accuracy 0.535 (0.002): count 0.779, colour 0.743, shape 0.353, action 0.390;
                 blank-video control 0.163; compositional 0.417 (shape 0.064)
  random init    accuracy 0.309 (0.039)
  majority answer 0.108 (per type: count 0.354, colour 0.141, shape 0.245, action 0.366)
The whole table and what it shows: docs/tasks.md.
"""

from __future__ import annotations

import ml_collections

from configs import pretrain
from configs import pretrain_paper
from svilm.tasks import video_qa

_VARIANTS = {"tiny", "msrvtt_qa", "msvd_qa"}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variants = set(filter(None, (arg or "").split(",")))
  unknown = variants - _VARIANTS
  if unknown:
    raise ValueError(
      f"Unknown variant(s) {sorted(unknown)} for configs/video_qa.py; known: "
      f"{', '.join(sorted(_VARIANTS))}"
    )
  real = variants & {"msrvtt_qa", "msvd_qa"}
  if len(real) > 1:
    raise ValueError("configs/video_qa.py: give one of :msrvtt_qa and :msvd_qa")
  config = (
    pretrain_paper.paper_config()
    if real
    else pretrain.get_config("tiny" if "tiny" in variants else None)
  )
  config.task = "video_qa"
  # Pretraining-only keys.
  del config["cut_and_paste"]
  del config["loss"]
  config.video_qa = video_qa.default_config()
  config.evals = ml_collections.ConfigDict(
    {
      "heldout": {"type": "heldout", "every_steps": 0},
      "compositional": {"type": "compositional", "every_steps": 0},
    }
  )
  config.video_qa.max_question_len = 12  # ShapesWorld's questions take at most 10 tokens
  config.eval.batch_size = 32
  config.eval.max_clips = 0  # every clip of the split

  config.total_steps = 600
  config.log_every_steps = 50
  config.checkpoint_every_steps = 200
  config.optim.warmup_steps = 50

  if "tiny" in variants:
    config.total_steps = 6
    config.log_every_steps = 2
    config.checkpoint_every_steps = 3
    config.optim.warmup_steps = 2
    config.eval.batch_size = 16
    config.video_qa.fusion_layers = 1
  if real:
    (benchmark,) = real
    config.video_qa.benchmark = benchmark
    config.evals = ml_collections.ConfigDict({"heldout": {"type": "heldout", "every_steps": 0}})
    config.data.eval_split = "test"  # the reader's split names
    config.data.train_flip = True  # (?) questions rarely hinge on left and right
    config.batch_size = 64  # (?)
    config.total_steps = 10_000  # (?)
    config.optim.learning_rate = 5e-5  # (?) finetuning both towers
    config.optim.warmup_steps = 500
    config.eval.batch_size = 32
    config.video_qa.max_question_len = 32
  return config
