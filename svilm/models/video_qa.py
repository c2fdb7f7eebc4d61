"""Open-ended video QA on the S-ViLM towers: a cross-attention fusion module and an answer
classifier over a closed answer vocabulary.

  question    the text encoder's final hidden states of each question, [B, S, L, D_t]
              (S questions per clip share one pass of the video encoder);
  video       the video encoder's final tokens, [B, N_t * H_p * W_p, D_v], followed by its M
              group tokens when video_context="tokens_and_groups" (the default (?): the
              groups summarise the clip's objects, which most questions are about; "tokens"
              leaves them out), projected to D_t and LayerNormed (`video_proj`);
  fusion      `num_layers` FusionLayers, the multimodal encoder of ALPRO / UMT: post-LN BERT
              blocks (as the text encoder's) with a cross-attention sublayer between the
              self-attention and the MLP, whose queries are the question tokens and whose keys
              and values are the video tokens;
  answer      the fused state of the question's first token ([CLS]) -> Dense(D_t) -> GELU ->
              LayerNorm -> Dense(num_answers): logits over the answer vocabulary (the VQA
              classifier of ALPRO and BLIP (?)).

Initialisation. The encoders keep SViLM's parameter names (`video_encoder/...`,
`text_encoder/...`), so a pretraining checkpoint loads onto them one to one (the video_qa
task's init_from_map). S-ViLM is a dual encoder with no cross-modal layers, so nothing in a
pretraining checkpoint fits the fusion module: it starts fresh (`fusion/...`), every kernel
drawn from BERT's initialiser (normal, std 0.02), biases zero, LayerNorm scale one and bias
zero. (ALPRO copies BERT's upper layers into its fusion layers' self-attention and MLP; the
cross-attention, which is what fusion adds, starts fresh there too.)
"""

from __future__ import annotations

from typing import Any

from flax import linen as nn
import jax.numpy as jnp

from svilm.models import layers
from svilm.models import text_encoder
from svilm.models import video_encoder

Array = Any
VIDEO_CONTEXTS = ("tokens_and_groups", "tokens")
_INIT = text_encoder.BERT_INIT
_EPS = text_encoder.BERT_LN_EPS


class FusionLayer(nn.Module):
  """x = LN(x + SelfAttn(x)); x = LN(x + CrossAttn(x, video)); x = LN(x + MLP(x)).

  x [..., L, D] question tokens; mask a boolean attention mask broadcastable to
  [..., heads, L, L]; video [..., N, D], its leading dims broadcast against x's.
  """

  num_heads: int
  mlp_dim: int
  dropout: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: Array, mask: Array, video: Array, *, train: bool) -> Array:
    def sublayer(y: Array, x: Array, name: str) -> Array:
      y = nn.Dropout(self.dropout)(y, deterministic=not train)
      return layers.layer_norm(self.dtype, name=f"{name}_layernorm", epsilon=_EPS)(x + y)

    def attention(name: str) -> layers.SelfAttention:
      return layers.SelfAttention(
        self.num_heads, self.dropout, self.dtype, kernel_init=_INIT, name=name
      )

    x = sublayer(attention("self_attention")(x, mask, train=train), x, "self_attention")
    y = attention("cross_attention")(x, None, train=train, context=video)
    x = sublayer(y, x, "cross_attention")
    d = x.shape[-1]
    y = layers.dense(
      self.mlp_dim, ("embed", "mlp"), self.dtype, name="intermediate", kernel_init=_INIT
    )(x)
    y = layers.dense(d, ("mlp", "embed"), self.dtype, name="output", kernel_init=_INIT)(
      layers.gelu(y)
    )
    return sublayer(y, x, "output")


class QAFusion(nn.Module):
  """Everything the video_qa task adds to the two towers: video projection, fusion layers and
  the answer classifier (module docstring)."""

  num_answers: int
  num_layers: int
  num_heads: int
  mlp_dim: int
  dropout: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, question: Array, question_mask: Array, video: Array, *, train: bool) -> Array:
    """question [B, S, L, D_t], question_mask [B, S, L], video [B, N, D_v] -> [B, S, K]."""
    width = question.shape[-1]
    video = layers.dense(width, ("embed", None), self.dtype, name="video_proj", kernel_init=_INIT)(
      video
    )
    video = layers.layer_norm(self.dtype, name="video_layernorm", epsilon=_EPS)(video)
    video = video[:, None]  # [B, 1, N, D]: projected once per clip, shared by its S questions
    mask = layers.padding_to_attention_mask(question_mask)  # [B, S, 1, 1, L]
    x = question.astype(self.dtype)
    for i in range(self.num_layers):
      x = FusionLayer(self.num_heads, self.mlp_dim, self.dropout, self.dtype, name=f"layer_{i}")(
        x, mask, video, train=train
      )
    y = layers.dense(width, ("embed", "mlp"), self.dtype, name="answer_hidden", kernel_init=_INIT)(
      x[..., 0, :]
    )
    y = layers.gelu(y)
    y = layers.layer_norm(self.dtype, name="answer_layernorm", epsilon=_EPS)(y)
    logits = layers.dense(
      self.num_answers, ("mlp", None), self.dtype, name="answer_logits", kernel_init=_INIT
    )(y)
    return logits.astype(jnp.float32)


class VideoQAModel(nn.Module):
  """(video [B, T, H, W, 3], question tokens and mask [B, S, L]) -> answer logits [B, S, K]."""

  video: dict
  text: dict
  num_answers: int
  num_fusion_layers: int = 2
  video_context: str = "tokens_and_groups"
  fusion_dropout: float = 0.0
  dtype: Any = jnp.float32

  def setup(self):
    if self.video_context not in VIDEO_CONTEXTS:
      raise ValueError(f"video_context={self.video_context!r}: use one of {VIDEO_CONTEXTS}")
    self.video_encoder = video_encoder.VideoEncoder(**{"dtype": self.dtype, **dict(self.video)})
    self.text_encoder = text_encoder.TextEncoder(**{"dtype": self.dtype, **dict(self.text)})
    self.fusion = QAFusion(
      num_answers=self.num_answers,
      num_layers=self.num_fusion_layers,
      num_heads=self.text_encoder.num_heads,
      mlp_dim=self.text_encoder.mlp_dim,
      dropout=self.fusion_dropout,
      dtype=self.dtype,
    )

  def video_tokens(self, video: Array, *, train: bool) -> Array:
    """[B, N (+ M), D_v]: the video encoder's final tokens (and group tokens)."""
    tokens, inter = self.video_encoder(video, train=train)
    tokens = tokens.reshape(tokens.shape[0], -1, tokens.shape[-1])
    if self.video_context == "tokens_and_groups":
      tokens = jnp.concatenate([tokens, inter["group_tokens"].astype(tokens.dtype)], axis=1)
    return tokens

  def __call__(
    self, video: Array, question_tokens: Array, question_mask: Array, *, train: bool
  ) -> Array:
    context = self.video_tokens(video, train=train)
    _, inter = self.text_encoder(question_tokens, question_mask, train=train)
    return self.fusion(inter["tokens"], question_mask, context, train=train)
