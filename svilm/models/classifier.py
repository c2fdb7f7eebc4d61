"""A video classifier on the S-ViLM video tower: pooled features and a linear head.

features = the video encoder's `clip_features` [N_t, D] (each the mean of one temporal
           position's H_p x W_p spatial tokens, the features the retrieval embedding is
           projected from), pooled over time by `temporal_pooling`:
             "concat"  the N_t positions side by side, [N_t * D]: a linear head can then weigh
                       early against late positions, which actions defined by their direction
                       in time need (move left / right, grow / shrink, appear / disappear are
                       each other's reversal, and a mean over time cannot tell them apart);
             "mean"    their mean, [D]: the usual linear-probe protocol (?).
logits   = head(features): one Dense layer, [B, num_classes].

The encoder keeps its S-ViLM parameter names (`video_encoder/...`), so a pretraining
checkpoint maps onto it one to one (the action-recognition task's init_from_map). With
`encoder_train=False` the encoder runs in inference mode (no dropout, no Gumbel noise in its
grouping blocks) while the head trains: the linear probe of a frozen encoder, whose features
are then a fixed function of the clip.
"""

from __future__ import annotations

from typing import Any

from flax import linen as nn
import jax.numpy as jnp

from svilm.models import layers
from svilm.models import video_encoder

Array = Any


def pool_clip_features(clip_features: Array, pooling: str) -> Array:
  """clip_features [B, N_t, D] -> [B, N_t * D] ("concat") or [B, D] ("mean"), float32."""
  clip_features = clip_features.astype(jnp.float32)
  if pooling == "mean":
    return jnp.mean(clip_features, axis=1)
  if pooling == "concat":
    return clip_features.reshape(clip_features.shape[0], -1)
  raise ValueError(f"pooling={pooling!r}: use 'concat' or 'mean'")


class PooledVideoFeatures(nn.Module):
  """video [B, T, H, W, 3] -> the frozen encoder's pooled features (float32), in inference
  mode: what svilm/extract_features.py writes for each window. Same parameter names as the
  classifier's encoder (`video_encoder/...`), so a pretraining checkpoint maps one to one."""

  video: dict
  pooling: str = "mean"
  dtype: Any = jnp.float32

  def setup(self):
    self.video_encoder = video_encoder.VideoEncoder(**{"dtype": self.dtype, **dict(self.video)})

  def __call__(self, video: Array) -> Array:
    _, inter = self.video_encoder(video, train=False)
    return pool_clip_features(inter["clip_features"], self.pooling)


class VideoClassifier(nn.Module):
  """video [B, T, H, W, 3] -> logits [B, num_classes] (float32)."""

  video: dict
  num_classes: int
  temporal_pooling: str = "concat"
  dtype: Any = jnp.float32

  def setup(self):
    self.video_encoder = video_encoder.VideoEncoder(**{"dtype": self.dtype, **dict(self.video)})
    self.head = layers.dense(self.num_classes, ("embed", None), self.dtype, name="head")

  def features(self, video: Array, *, train: bool) -> Array:
    """[B, N_t * D] ("concat") or [B, D] ("mean") pooled video features (float32)."""
    _, inter = self.video_encoder(video, train=train)
    return pool_clip_features(inter["clip_features"], self.temporal_pooling)

  def __call__(self, video: Array, *, train: bool, encoder_train: bool | None = None) -> Array:
    encoder_train = train if encoder_train is None else encoder_train
    features = self.features(video, train=encoder_train)
    return self.head(features.astype(self.dtype)).astype(jnp.float32)
