r"""S-ViLM pretraining at paper scale (Xiong et al., ICLR 2024) on the user's own shards.

Command (a directory of `train-*.tfrecord` / `val-*.tfrecord` shards built with
`python -m data_pipelines.build_shards`, a tokenizer from `python -m data_pipelines.tokenizer`;
both arguments are required; `--config.data.eval_path=GLOB` points evaluation elsewhere):

  python -m svilm.main \
    --config=configs/pretrain_paper.py:data=gs://BUCKET/videocc_anet,tokenizer=gs://BUCKET/spm.model \
    --workdir=gs://BUCKET/runs/svilm_paper

Model: ViT-B/2x16x16 video encoder over 32 frames at 224 px (16 x 14 x 14 = 3136 tokens),
32 group tokens updated after layers 6, 9 and 12, a 12-layer BERT-base-sized text encoder and a
256-d joint space. Values marked (?) are not given in the paper and are config options.

Hardware and runtime: meant for a TPU pod slice or a multi-node GPU cluster; it has not yet been
run at full scale by this project. `--compile_only` (8 fake CPU devices, 2026-11-23): about
1.5 GiB per clip per device (185 GiB at 128 clips per device, 12.1 GiB at 8), so batch 1024
wants 64+ accelerators, or `optim.grad_accum_steps` on fewer (docs/pretraining.md). The paper's reported results after pretraining on
VideoCC3M + ActivityNet Captions are MSR-VTT zero-shot text-to-video R@1 28.6 (finetuned 38.4);
see docs/tasks.md. `--config.total_steps=...` etc. override anything here.
"""

from __future__ import annotations

import ml_collections

from configs import pretrain

_USAGE = (
  "configs/pretrain_paper.py needs real data: pass "
  "--config=configs/pretrain_paper.py:data=SHARD_DIR,tokenizer=SPM.model "
  "(build shards with `python -m data_pipelines.build_shards` and a tokenizer with "
  "`python -m data_pipelines.tokenizer`)"
)


def _parse(arg: str | None) -> dict:
  values = {}
  for item in filter(None, (arg or "").split(",")):
    key, sep, value = item.partition("=")
    if not sep or key not in ("data", "tokenizer"):
      raise ValueError(f"Unknown argument {item!r}. {_USAGE}")
    values[key] = value
  if not values.get("data") or not values.get("tokenizer"):
    raise ValueError(_USAGE)
  return values


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = _parse(arg)
  config = paper_config()
  config.data.path = args["data"]
  config.data.tokenizer = args["tokenizer"]
  return config


def paper_config() -> ml_collections.ConfigDict:
  """The paper-scale recipe without data paths (finetuning configs start from it)."""
  config = pretrain.get_config()
  config.total_steps = 100_000  # (?) the paper does not give its schedule
  config.batch_size = 1024  # (?)
  config.log_every_steps = 100
  config.checkpoint_every_steps = 2000
  config.data.num_frames = 32
  config.data.frame_stride = 2  # (?)
  config.data.resolution = 224
  config.data.max_text_len = 32
  config.data.max_noun_len = 16
  config.data.shuffle_buffer = 10_000
  config.data.train_crop_area = (0.5, 1.0)  # (?)
  config.data.train_flip = True  # (?) web captions rarely say left/right
  config.model.video = ml_collections.ConfigDict(
    dict(
      patch_size=(2, 16, 16),
      width=768,
      depth=12,
      num_heads=12,
      mlp_dim=3072,
      dropout=0.0,
      pos_embedding="joint",
      num_groups=32,
      grouping_layers=(6, 9, 12),
      hard_assignment=True,
      gumbel_noise=True,
      gumbel_temperature=1.0,
      # 3136 tokens per clip: the whole [12, 3136, 3136] float32 attention logits are 0.47 GB
      # per clip and layer; in 8 chunks of 392 queries the recipe fits 16 GiB chips
      # (docs/pretraining.md, "Fitting the paper recipe on a v5e-64").
      attention_query_chunk=392,
    )
  )
  config.model.text = ml_collections.ConfigDict(
    dict(vocab_size=-1, width=768, depth=12, num_heads=12, mlp_dim=3072, max_len=-1, dropout=0.1)
  )
  # Fitting 32-frame ViT-B clips: bf16 compute (f32 parameters), every transformer block
  # recomputed in the backward pass, scanned layers (fast compiles), and FSDP over all devices
  # (parameters and Adam moments sharded). `--compile_only` prints what this needs per device.
  config.model.dtype = "bfloat16"
  config.model.remat = "full"
  config.model.scan_layers = True
  config.mesh.data = 1
  config.mesh.fsdp = -1
  config.optim.learning_rate = 1e-4  # (?)
  config.optim.warmup_steps = 5000  # (?)
  config.eval.batch_size = 256
  config.eval.max_clips = 1024
  return config
