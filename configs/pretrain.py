r"""S-ViLM pretraining on the embedded ShapesWorld data: the default, CPU-sized recipe.

Command (from the repository root; builds ShapesWorld on first use, no downloads):

  python -m svilm.main --config=configs/pretrain.py --workdir=/tmp/svilm_pretrain

Hardware and runtime: a 2-core x86 CPU box (no accelerator): about 8.5 minutes in all
(ShapesWorld build ~15-25 s on first use, compilation ~15 s, 2400 steps at ~5-7 steps/s,
evaluation ~10 s).

Measured on 2026-11-30 on a 2-core AMD EPYC box with the current code (WORKDIR/
eval_results.json; 512 held-out clips, 461 of them with pairwise-distinct captions; metrics
defined in docs/losses_and_metrics.md):
  retrieval/t2v_R@1            0.106  (chance 1/461 = 0.0022: 48x)   v2t_R@1 0.141
  retrieval/t2v_R@10           0.514                                  t2v_MdR 10
  temporal_grouping/accuracy   0.888  (random-foreground baseline 0.508)
  grounding/pointing_acc       0.582  (random-group baseline 0.140: 4.2x)
The run is deterministic for a given machine, code and library versions, but chaotic: the
same recipe with functions that differ only by float rounding (~1e-7) lands elsewhere. On
that machine the code before the one-l2_normalize change gave t2v_R@1 0.115, temporal 0.892,
pointing 0.534; on the machine of earlier sessions (2026-11-23) the tubelet embedding as a
convolution, GELU through erfc and the erf form gave t2v_R@1 0.098, 0.074 and 0.052,
temporal 0.885, 0.852 and 0.833, pointing 0.456, 0.583 and 0.567. Read differences of that
size as noise. docs/pretraining.md has the ablations behind the defaults.

Variants (`--config=configs/pretrain.py:ARG`, comma separated):
  tiny   a seconds-long smoke run (what CI and the tests use): 64 ShapesWorld train clips,
         a 2-layer model, 6 steps.
"""

from __future__ import annotations

import ml_collections

from data_pipelines.shapesworld import build as shapesworld_build
from svilm import sharding


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Returns the default pretraining config; `arg` selects variants (see module docstring)."""
  variants = set(filter(None, (arg or "").split(",")))
  unknown = variants - {"tiny"}
  if unknown:
    raise ValueError(f"Unknown variant(s) {sorted(unknown)} for configs/pretrain.py; known: tiny")

  config = ml_collections.ConfigDict()
  config.task = "pretrain"  # the registry name (svilm/tasks/__init__.py)
  config.seed = 0
  config.total_steps = 2400
  config.batch_size = 32  # global, over all devices and hosts
  config.log_every_steps = 50
  config.checkpoint_every_steps = 400
  config.keep_checkpoints = 3
  # Checkpoints are written by Orbax in a background thread while training goes on; the next
  # save (and the end of training) waits for the previous one, at most this long.
  config.async_checkpointing = True
  config.checkpoint_timeout_secs = 600
  # Evaluators, by name: each a `type` of the task (svilm/tasks/pretrain.py evaluator_types)
  # and a cadence `every_steps` (0: only at the end; every evaluator also runs at the end).
  # Their metrics go to WORKDIR/eval_results.json and TensorBoard as "<group>/<metric>".
  config.evals = ml_collections.ConfigDict({"heldout": {"type": "heldout", "every_steps": 0}})
  # Start from another run's parameters (finetuning): a workdir, its checkpoints/ directory or
  # one step's directory (newest step unless named). Only parameters are read; a checkpoint
  # in --workdir still wins (a rerun resumes). init_from_map: "ckpt_subtree:model_subtree,..."
  # ("" = the task's own map; docs/design.md).
  config.init_from = ""
  config.init_from_map = ""

  config.data = ml_collections.ConfigDict()
  # Shard directory or glob of TFRecord files in the svilm schema; "" = ShapesWorld, built on
  # first use under data.shapesworld_dir (and reused afterwards).
  config.data.path = ""
  # With several comma-separated datasets in data.path: their sampling weights, comma
  # separated ("" = equal), e.g. "0.7,0.3" for the paper's VideoCC + ActivityNet mixture.
  config.data.mixture_weights = ""
  # Held-out shards for evaluation; "" = the eval_split files of data.path (a directory).
  config.data.eval_path = ""
  config.data.shapesworld_dir = "~/.cache/svilm/shapesworld"
  config.data.shapesworld = shapesworld_build.default_config()
  config.data.tokenizer = ""  # sentencepiece model; "" = tokenizer.model beside the data
  config.data.train_split = "train"
  config.data.eval_split = "val"
  config.data.num_frames = 8
  config.data.frame_stride = 2
  config.data.resolution = 64
  config.data.max_text_len = 24
  config.data.num_nouns = 2  # K noun phrases per caption
  config.data.max_noun_len = 12
  config.data.noun_prompt = "a video of a {}"  # prompt template for noun embeddings (?)
  config.data.shuffle_buffer = 2048
  # How hosts share the training stream (docs/pretraining.md, "Multi-host input"):
  #   files   each host reads its own disjoint subset of the shard files (reading scales
  #           with the hosts; the batch composition depends on the number of hosts);
  #   stream  every host reads the same record stream and decodes only its slice of each
  #           global batch: the global batches, and so training, do not depend on the number
  #           of hosts (exact elastic restarts), at the cost of each host reading every record.
  config.data.host_split = "files"
  # Training augmentation (evaluation always takes the centre square). ShapesWorld keeps the
  # whole frame and never flips: its captions say "left" and "right".
  config.data.train_crop_area = (1.0, 1.0)  # random resized crop when min < 1
  config.data.train_crop_aspect_ratio = (0.75, 4 / 3)
  config.data.train_flip = False
  config.data.normalization = "unit"  # or "imagenet"

  config.model = ml_collections.ConfigDict()
  config.model.embed_dim = 256  # joint space (?)
  # Memory and speed (docs/pretraining.md, "Scaling up"). Parameters are always float32.
  config.model.dtype = "float32"  # compute dtype: "float32" or "bfloat16"
  config.model.remat = "none"  # transformer blocks: "none", "full" or "dots"
  config.model.scan_layers = False  # nn.scan over consecutive blocks (checkpoint layout!)
  config.model.temperature_init = 0.07
  config.model.learn_temperature = True
  # Captions and prompted nouns through the text tower in one call (the same outputs), or two.
  # One call pads the nouns to the caption length (12 -> 24 tokens here): 50% more text-tower
  # tokens, and the default train step ran 11% slower on the 2-core CPU (docs/benchmarks.md),
  # so two calls stay the default; one call is there for hardware where call count matters.
  config.model.text_one_call = False
  config.model.video = ml_collections.ConfigDict(
    dict(
      patch_size=(2, 16, 16),  # tubelet t, h, w (?)
      width=128,
      depth=4,
      num_heads=4,
      mlp_dim=512,
      dropout=0.0,
      pos_embedding="joint",
      num_groups=8,
      grouping_layers=(2, 3, 4),  # paper: after layers 6, 9 and 12 of 12
      hard_assignment=True,
      gumbel_noise=True,
      gumbel_temperature=1.0,
      attention_query_chunk=0,  # > 0: attention memory bounded by chunks of queries
    )
  )
  config.model.text = ml_collections.ConfigDict(
    dict(
      vocab_size=-1,  # -1: taken from the tokenizer at start-up
      width=128,
      depth=2,
      num_heads=4,
      mlp_dim=512,
      max_len=-1,
      dropout=0.0,
    )
  )

  config.loss = ml_collections.ConfigDict()
  config.loss.contrast_weight = 1.0
  config.loss.temporal_weight = 1.0
  config.loss.grounding_weight = 1.0
  config.loss.video_pooling = "foreground"  # or "all" (?)
  config.loss.temporal_temperature = 0.1  # (?)
  config.loss.temporal_kind = "mse"  # or "bce" (?)
  config.loss.grounding_assign_temperature = 0.1  # tau_g (?)
  # Under cut-and-paste, clip j whose background came from clip i holds part of what caption
  # i's nouns name: drop those (noun of caption i, clip j) pairs from L_grounding's negatives.
  # False keeps them, as the paper's formula does (docs/losses_and_metrics.md).
  config.loss.grounding_exclude_background = True

  config.cut_and_paste = ml_collections.ConfigDict()
  config.cut_and_paste.enabled = True
  config.cut_and_paste.min_span = 1  # in temporal token positions
  config.cut_and_paste.max_span = -1  # -1: num_positions - 1
  # Where a clip's background comes from: "local", the other clips on the same device (no
  # video crosses devices; each device's share of the batch and micro-batch needs >= 2
  # clips), or "global", the whole batch (all-gathers the video batch to every device).
  config.cut_and_paste.background = "local"

  config.optim = ml_collections.ConfigDict()
  config.optim.learning_rate = 1e-3
  config.optim.warmup_steps = 100
  config.optim.end_learning_rate_ratio = 0.01
  config.optim.weight_decay = 0.05
  config.optim.b1 = 0.9
  config.optim.b2 = 0.98
  config.optim.grad_clip_norm = 1.0
  # Micro-batches per step: gradients of batch_size / grad_accum_steps examples at a time are
  # averaged. Contrastive and grounding negatives and cut-and-paste backgrounds then come from
  # the micro-batch, not the whole batch (the loss is the mean of micro-batch losses).
  config.optim.grad_accum_steps = 1
  # Comma-separated regular expressions over "/"-joined parameter paths (a pattern matching a
  # prefix freezes the whole subtree, e.g. "video_encoder"). Frozen parameters get no gradient
  # and no optimizer state; a pattern matching nothing is an error.
  config.optim.freeze = ""

  config.eval = ml_collections.ConfigDict()
  config.eval.batch_size = 64
  config.eval.max_clips = 512  # held-out clips read (0: the whole split)
  config.eval.seed = 1234  # cut-and-paste and random baselines in eval
  # Figures of the first clips at each evaluation (grounding maps, cut-and-paste similarity;
  # svilm/evaluators/figures.py), to TensorBoard and WORKDIR/figures/; 0: none.
  config.eval.num_figures = 4

  # Device mesh (data, fsdp, model) and the logical-axis rules that place parameters on it;
  # one size may be -1 (the remaining devices). See svilm/sharding.py and docs/pretraining.md.
  #   data parallel    data=-1                  (the default)
  #   FSDP             fsdp=-1 (data=1)         parameters + optimizer state sharded
  #   DP x TP          data=-1, model=2         heads / MLP / vocabulary split in 2
  config.mesh = ml_collections.ConfigDict()
  config.mesh.data = -1
  config.mesh.fsdp = 1
  config.mesh.model = 1
  config.mesh.rules = sharding.DEFAULT_RULES

  if "tiny" in variants:
    config.total_steps = 6
    config.batch_size = 8
    config.log_every_steps = 2
    config.checkpoint_every_steps = 3
    config.data.shapesworld.num_train = 64
    config.data.shapesworld.num_val = 32
    config.data.shapesworld.num_compositional = 8
    config.data.shapesworld.num_shards_train = 2
    config.data.shuffle_buffer = 64
    config.model.video.depth = 2
    config.model.video.grouping_layers = (1, 2)
    config.model.text.depth = 1
    config.optim.warmup_steps = 2
    config.eval.batch_size = 16
    config.eval.max_clips = 32
    # 8 clips on the tests' 8 fake devices is one per device: no local background to draw,
    # and the tests compare sharded with single-device runs, which global draws keep equal.
    config.cut_and_paste.background = "global"
  return config
