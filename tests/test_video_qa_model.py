"""The video QA model: cross-attention against a shared video, what reaches the answer, init."""

from flax import linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from configs import pretrain
from svilm.models import layers
from svilm.models import video_qa


def test_cross_attention_to_a_broadcast_context_equals_a_repeated_one():
  """Keys [B, 1, N, D] (projected once per clip) give what [B, S, N, D] copies give."""
  attention = layers.SelfAttention(num_heads=2)
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 3, 5, 8))  # B=2 clips, S=3 questions
  video = jax.random.normal(jax.random.PRNGKey(1), (2, 1, 7, 8))
  params = attention.init(jax.random.PRNGKey(2), x, train=False, context=video)
  shared = attention.apply(params, x, train=False, context=video)
  repeated = attention.apply(params, x, train=False, context=jnp.repeat(video, 3, axis=1))
  np.testing.assert_allclose(shared, repeated, rtol=1e-6, atol=1e-6)
  # Cross-attention has the parameters of self-attention: a query attending to itself as the
  # context is self-attention.
  np.testing.assert_allclose(
    attention.apply(params, x, train=False, context=x),
    attention.apply(params, x, train=False),
    rtol=1e-6,
  )


def _model_and_inputs():
  config = pretrain.get_config("tiny")
  text = {**config.model.text.to_dict(), "vocab_size": 50, "max_len": 12}
  model = video_qa.VideoQAModel(video=config.model.video.to_dict(), text=text, num_answers=6)
  keys = jax.random.split(jax.random.PRNGKey(0), 3)
  video = jax.random.uniform(keys[0], (2, 8, 64, 64, 3))
  tokens = jax.random.randint(keys[1], (2, 3, 10), 1, 50)
  mask = jnp.ones((2, 3, 10), jnp.int32).at[:, :, 6:].set(0)
  params = nn.meta.unbox(model.init({"params": keys[2]}, video, tokens, mask, train=False))
  return model, params["params"], video, tokens, mask


def test_answers_read_the_question_and_the_video_but_not_padding():
  model, params, video, tokens, mask = _model_and_inputs()
  logits = model.apply({"params": params}, video, tokens, mask, train=False)
  assert logits.shape == (2, 3, 6) and logits.dtype == jnp.float32
  padded = tokens.at[:, :, 8].set(3)
  np.testing.assert_array_equal(
    model.apply({"params": params}, video, padded, mask, train=False), logits
  )
  other_question = model.apply(
    {"params": params}, video, tokens.at[:, 1, 2].add(1), mask, train=False
  )
  assert not np.allclose(other_question[:, 1], logits[:, 1])
  np.testing.assert_array_equal(other_question[:, 0], logits[:, 0])  # questions are independent
  other_video = model.apply({"params": params}, video[::-1], tokens, mask, train=False)
  assert not np.allclose(other_video, logits)


def test_encoders_keep_the_dual_encoder_names_and_the_fusion_is_fresh():
  model, params, *_ = _model_and_inputs()
  assert set(params) == {"video_encoder", "text_encoder", "fusion"}
  fusion = params["fusion"]
  assert set(fusion) == {
    "video_proj",
    "video_layernorm",
    "layer_0",
    "layer_1",
    "answer_hidden",
    "answer_layernorm",
    "answer_logits",
  }
  assert set(fusion["layer_0"]) >= {"self_attention", "cross_attention", "intermediate"}
  # BERT's initialiser: normal with standard deviation 0.02, zero biases.
  kernel = np.asarray(fusion["layer_0"]["intermediate"]["kernel"])
  assert abs(kernel.std() - 0.02) < 0.002
  assert not np.any(fusion["answer_logits"]["bias"])
