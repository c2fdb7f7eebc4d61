"""A video classifier on the S-ViLM video tower: pooled features and a linear head.

features = mean over the N_t temporal positions of the video encoder's `clip_features` (each
already the mean of its H_p x W_p spatial tokens), so the head sees the same pooled backbone
features the retrieval embedding is projected from, before that projection.
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


class VideoClassifier(nn.Module):
  """video [B, T, H, W, 3] -> logits [B, num_classes] (float32)."""

  video: dict
  num_classes: int
  dtype: Any = jnp.float32

  def setup(self):
    self.video_encoder = video_encoder.VideoEncoder(**{"dtype": self.dtype, **dict(self.video)})
    self.head = layers.dense(self.num_classes, ("embed", None), self.dtype, name="head")

  def features(self, video: Array, *, train: bool) -> Array:
    """[B, D] pooled video features (float32)."""
    _, inter = self.video_encoder(video, train=train)
    return jnp.mean(inter["clip_features"].astype(jnp.float32), axis=1)

  def __call__(self, video: Array, *, train: bool, encoder_train: bool | None = None) -> Array:
    encoder_train = train if encoder_train is None else encoder_train
    features = self.features(video, train=encoder_train)
    return self.head(features.astype(self.dtype)).astype(jnp.float32)
