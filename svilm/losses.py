"""The S-ViLM pretraining losses and the cut-and-paste input construction.

Pure jax.numpy functions (no Flax modules), jit-able, with static shapes. The
model produces the embeddings; these functions only turn them into scalars:

  total = w_contrast * L_contrast + w_temporal * L_temporal + w_grounding * L_grounding

* `contrastive_loss`: symmetric InfoNCE between clip and caption embeddings.
* `cut_and_paste`: builds the mixed clips and the foreground mask that
  `temporal_grouping_loss` is trained against.
* `temporal_grouping_loss`: intra-clip foreground/background grouping L_temporal.
* `spatial_grounding_loss`: inter-clip noun-to-group-token grounding L_grounding.
* `total_loss`: the weighted sum.

The term names, the same everywhere: 'contrast', 'temporal', 'grounding'. They are the
keys of `total_loss`'s terms, the logged metrics `loss/<term>`, the config weights
`loss.<term>_weight`, and the formulas' subscripts (docs/losses_and_metrics.md).
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import optax

from svilm.models import layers

# Guards divisions by norms and counts; small enough not to move real values.
_EPS = 1e-12


def contrastive_loss(
  video_emb: jax.Array, text_emb: jax.Array, logit_scale: jax.Array | float
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Symmetric InfoNCE over the batch (the CLIP loss).

  logits[i, j] = logit_scale * <video_emb[i], text_emb[j]>
  L = ( mean_i CE(logits[i, :], i) + mean_j CE(logits[:, j], j) ) / 2
  with CE(l, y) = logsumexp(l) - l[y].

  The negatives of clip i are all other captions of the arrays passed in, and
  vice versa. Under `jax.jit` with a batch sharded over devices and hosts the
  arrays are global, so this is the global-batch loss of the method (XLA
  inserts the all-gathers); do not call it per device inside `shard_map`/`pmap`
  unless a per-device negative set is what you want.

  Args:
    video_emb: [B, E] clip embeddings, assumed L2-normalised.
    text_emb: [B, E] caption embeddings, assumed L2-normalised; row i is the
      caption of clip i.
    logit_scale: scalar multiplier (1 / temperature), already exponentiated
      and clipped by the caller if it is learnable.

  Returns:
    (loss, metrics) with metrics 'v2t_accuracy' (fraction of clips whose
    highest-scoring caption is their own, argmax ties -> lowest index) and
    't2v_accuracy' (the same for captions).
  """
  if video_emb.shape != text_emb.shape or video_emb.ndim != 2:
    raise ValueError(
      f"video_emb and text_emb must both be [B, E], got {video_emb.shape} and {text_emb.shape}."
    )
  logits = logit_scale * video_emb @ text_emb.T  # [B_video, B_text]
  labels = jnp.arange(logits.shape[0])
  diag = jnp.diagonal(logits)
  v2t = jax.nn.logsumexp(logits, axis=1) - diag
  t2v = jax.nn.logsumexp(logits, axis=0) - diag
  loss = (jnp.mean(v2t) + jnp.mean(t2v)) / 2
  metrics = {
    "v2t_accuracy": jnp.mean(jnp.argmax(logits, axis=1) == labels),
    "t2v_accuracy": jnp.mean(jnp.argmax(logits, axis=0) == labels),
  }
  return loss, metrics


def cut_and_paste(
  rng: jax.Array,
  video: jax.Array,
  num_positions: int,
  min_span: int,
  max_span: int,
  num_groups: int = 1,
) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Pastes a foreground span of each clip onto another clip of the batch.

  Temporal positions are the tubelet positions of the video encoder: with
  P = num_positions the T frames split into P equal runs, position k owning
  frames [k*T/P, (k+1)*T/P). The batch splits into G = num_groups runs of
  b = B / G consecutive clips (G = the data-parallel shards: each device's
  clips; G = 1: the whole batch). For each clip i of run g, independently:
    j_i   ~ uniform over the other clips of run g  (background clip)
    len_i ~ uniform over {min_span..max_span}  (inclusive)
    s_i   ~ uniform over {0..P-len_i}          (inclusive)
    fg_mask[i, k] = 1 if s_i <= k < s_i + len_i else 0
    mixed[i, frames of k] = video[i] if fg_mask[i, k] else video[j_i]
  The caption of mixed clip i stays caption i. Because max_span <= P-1 every
  clip keeps at least one background and one foreground position, so the
  centres of `temporal_grouping_loss` are always defined.

  With G equal to the batch's data-parallel shards, every background comes
  from the device that holds the clip: the gather is a per-shard gather along
  the run axis, so XLA moves no video between devices. Drawing from the whole
  batch (G = 1) all-gathers it to every device, B x T x H x W x C per device
  per step, which does not shrink with more devices. G = 1 draws exactly as
  before this option existed (same random numbers, same clips).

  Args:
    rng: a jax PRNG key.
    video: [B, T, H, W, C], B / num_groups >= 2, T divisible by num_positions.
    num_positions: P, the number of temporal token positions.
    min_span: shortest foreground span in positions, >= 1.
    max_span: longest foreground span in positions, <= P - 1.
    num_groups: G, the runs backgrounds are drawn within; divides B.

  Returns:
    (mixed [B, T, H, W, C] same dtype as video, fg_mask [B, P] float32,
    background [B] int32: j_i, the clip each background came from).

  Raises:
    ValueError (at trace time) for B / G < 2 or G not dividing B, T not
    divisible by P, or spans outside 1 <= min_span <= max_span <= P - 1.
  """
  if video.ndim != 5:
    raise ValueError(f"video must be [B, T, H, W, C], got {video.shape}.")
  batch, frames = video.shape[:2]
  if num_groups < 1 or batch % num_groups or batch // num_groups < 2:
    raise ValueError(
      f"cut_and_paste draws backgrounds within {num_groups} runs of the batch of {batch}: "
      "each needs at least 2 clips (a background must come from another clip) and the "
      "runs must divide the batch. With local backgrounds (cut_and_paste.background="
      "'local') that is >= 2 clips per data-parallel shard and micro-batch: raise "
      "batch_size, or use cut_and_paste.background='global'."
    )
  if num_positions < 2 or frames % num_positions:
    raise ValueError(
      f"num_positions={num_positions} must be >= 2 and divide the number of frames T={frames}."
    )
  if not 1 <= min_span:
    raise ValueError(f"min_span={min_span} must be >= 1.")
  if not min_span <= max_span:
    raise ValueError(f"min_span={min_span} must be <= max_span={max_span}.")
  if not max_span <= num_positions - 1:
    raise ValueError(
      f"max_span={max_span} must be <= num_positions - 1 = "
      f"{num_positions - 1} so at least one background position remains."
    )

  rng_bg, rng_len, rng_start = jax.random.split(rng, 3)
  run = batch // num_groups
  # Offset in [1, b-1] from i within its run: uniform over the run's other clips.
  offset = jax.random.randint(rng_bg, (batch,), 1, run)
  within = (jnp.arange(batch) % run + offset) % run  # [B]: the background's place in the run
  length = jax.random.randint(rng_len, (batch,), min_span, max_span + 1)
  # randint's maxval broadcasts, so each clip gets its own start range.
  start = jax.random.randint(rng_start, (batch,), 0, num_positions - length + 1)
  pos = jnp.arange(num_positions)[None, :]
  fg = (pos >= start[:, None]) & (pos < (start + length)[:, None])  # [B, P]
  frame_fg = jnp.repeat(fg, frames // num_positions, axis=1)  # [B, T]
  # [G, b, ...] gathered along b with G as a batch dimension: with the batch sharded over G
  # devices, each gathers from its own clips only.
  runs = video.reshape(num_groups, run, *video.shape[1:])
  index = within.reshape(num_groups, run, *([1] * (video.ndim - 1)))
  backgrounds = jnp.take_along_axis(runs, index, axis=1).reshape(video.shape)
  mixed = jnp.where(frame_fg[:, :, None, None, None], video, backgrounds)
  background = (jnp.arange(batch) // run) * run + within
  return mixed, fg.astype(jnp.float32), background.astype(jnp.int32)


def background_exclusions(background: jax.Array) -> jax.Array:
  """[B, B] bool, True at (caption i, clip j) when clip j's cut-and-paste background is clip i
  (background[j] == i): the pairs `spatial_grounding_loss(exclude=...)` drops."""
  return background[None, :] == jnp.arange(background.shape[0])[:, None]


def temporal_grouping_logits(
  clip_features: jax.Array, fg_mask: jax.Array, temperature: float
) -> jax.Array:
  """Foreground-vs-background logit d^k of every temporal position.

  f = sum_k m^k z^k / sum_k m^k, b = sum_k (1-m^k) z^k / sum_k (1-m^k)
  d^k = (cos(z^k, f) - cos(z^k, b)) / temperature, so that
  p^k = softmax({cos(z^k,f), cos(z^k,b)} / temperature)[f] = sigmoid(d^k).

  Args:
    clip_features: [B, P, D] z^k, mean of the video tokens at position k.
    fg_mask: [B, P] m^k in {0, 1}.
    temperature: tau > 0.

  Returns:
    [B, P] float32 logits d^k. An empty foreground (or background) set gives a
    zero centre whose cosine with everything is 0: finite, but meaningless.
  """
  z = clip_features.astype(jnp.float32)
  m = fg_mask.astype(jnp.float32)[..., None]  # [B, P, 1]
  fg_centre = jnp.sum(m * z, 1) / jnp.maximum(jnp.sum(m, 1), _EPS)
  bg_centre = jnp.sum((1 - m) * z, 1) / jnp.maximum(jnp.sum(1 - m, 1), _EPS)
  zn = layers.l2_normalize(z)
  cos_f = jnp.einsum("bpd,bd->bp", zn, layers.l2_normalize(fg_centre))
  cos_b = jnp.einsum("bpd,bd->bp", zn, layers.l2_normalize(bg_centre))
  return (cos_f - cos_b) / temperature


def temporal_grouping_loss(
  clip_features: jax.Array,
  fg_mask: jax.Array,
  temperature: float = 0.1,
  kind: str = "mse",
) -> jax.Array:
  """Intra-clip temporal grouping loss L_temporal.

  With d^k from `temporal_grouping_logits` and p^k = sigmoid(d^k):
    kind='mse': L_temporal = mean over clips b and positions k of (p^k - m^k)^2
    kind='bce': L_temporal = mean over b, k of
                -[m^k log p^k + (1-m^k) log(1-p^k)]
                = m^k softplus(-d^k) + (1-m^k) softplus(d^k)   (stable form)
  Gradients flow through the centres f and b as well as through z^k.

  Args:
    clip_features: [B, P, D] per-position clip features z^k.
    fg_mask: [B, P] foreground mask m from `cut_and_paste`.
    temperature: tau; default 0.1 is unconfirmed in the paper.
    kind: 'mse' (the default; the paper's form is unconfirmed) or 'bce'.

  Returns:
    Scalar float32 loss. If a clip has no foreground (or no background)
    position, the empty centre is the zero vector with cosine 0 to every z^k;
    the loss stays finite. `cut_and_paste` never produces such a clip.
  """
  if kind not in ("mse", "bce"):
    raise ValueError(f"kind must be 'mse' or 'bce', got {kind!r}.")
  if clip_features.shape[:2] != fg_mask.shape:
    raise ValueError(
      f"clip_features {clip_features.shape} [B, P, D] does not match "
      f"fg_mask {fg_mask.shape} [B, P]."
    )
  d = temporal_grouping_logits(clip_features, fg_mask, temperature)
  m = fg_mask.astype(jnp.float32)
  if kind == "mse":
    return jnp.mean(jnp.square(jax.nn.sigmoid(d) - m))
  return jnp.mean(m * jax.nn.softplus(-d) + (1 - m) * jax.nn.softplus(d))


def spatial_grounding_loss(
  noun_emb: jax.Array,
  noun_valid: jax.Array,
  group_emb: jax.Array,
  assign_temperature: float,
  logit_scale: jax.Array | float,
  exclude: jax.Array | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Inter-clip spatial grounding loss L_grounding.

  For noun k of caption i and clip j, with c_m = cos(n_ik, g_jm):
    a_m = softmax_m(c_m / assign_temperature)           over the M groups
    s(n_ik, v_j) = sum_m a_m c_m
    logits[i, k, j] = logit_scale * s(n_ik, v_j)
    L_grounding = sum_{i,k} valid_ik * CE(logits[i, k, :], i) / sum_{i,k} valid_ik
  i.e. InfoNCE over the clips of the batch (global under jit, as in
  `contrastive_loss`) with clip i as the positive of its own nouns. Padded
  nouns contribute nothing; with no valid noun at all the loss is 0 (not NaN)
  and its gradient is 0. Group tokens that match no noun receive no direct
  penalty: nothing in the formula pushes them anywhere.

  `exclude[i, j]` drops clip j from the negatives of caption i's nouns (its
  logit leaves the softmax; the positive j = i is never dropped). Under
  cut-and-paste, clip j whose background came from clip i holds part of what
  noun k of caption i names, so it is no negative for it:
  exclude[i, j] = (background[j] == i) removes those false negatives.

  Args:
    noun_emb: [B, K, E] noun phrase embeddings, L2-normalised.
    noun_valid: [B, K] 1 for real nouns, 0 for padding (bool or number).
    group_emb: [B, M, E] final group token embeddings, L2-normalised.
    assign_temperature: tau_g of the soft region assignment (unconfirmed in
      the paper; no value is given).
    logit_scale: scalar 1 / temperature of the InfoNCE.
    exclude: optional [B, B] bool, caption i x clip j pairs that are not
      negatives (see above); None keeps every pair.

  Returns:
    (loss, metrics) with 'noun_accuracy' = fraction of valid nouns whose own
    clip scores highest (argmax ties -> lowest index; 0 with no valid noun)
    and 'num_valid_nouns'.
  """
  if noun_emb.shape[:2] != noun_valid.shape:
    raise ValueError(
      f"noun_emb {noun_emb.shape} and noun_valid {noun_valid.shape} differ in [B, K]."
    )
  if noun_emb.shape[0] != group_emb.shape[0]:
    raise ValueError(f"noun_emb batch {noun_emb.shape[0]} != group_emb batch {group_emb.shape[0]}.")
  cos = jnp.einsum("ike,jme->ikjm", noun_emb, group_emb)  # [B, K, B, M]
  attn = jax.nn.softmax(cos / assign_temperature, axis=-1)
  logits = logit_scale * jnp.sum(attn * cos, axis=-1)  # [B_text, K, B_video]
  batch = noun_emb.shape[0]
  own = jnp.arange(batch)[:, None]  # [B, 1]: target clip of caption i.
  if exclude is not None:
    drop = exclude & (own != jnp.arange(batch)[None, :])  # never the positive
    logits = jnp.where(drop[:, None, :], -jnp.inf, logits)
  positive = jnp.take_along_axis(logits, own[:, :, None], axis=2)[..., 0]
  ce = jax.nn.logsumexp(logits, axis=-1) - positive  # [B, K]
  valid = noun_valid.astype(jnp.float32)
  count = jnp.sum(valid)
  # max(count, 1): the all-padded batch divides 0 by 1 instead of 0 by 0.
  denom = jnp.maximum(count, 1.0)
  loss = jnp.sum(valid * ce) / denom
  correct = (jnp.argmax(logits, axis=-1) == own).astype(jnp.float32)
  metrics = {
    "noun_accuracy": jnp.sum(valid * correct) / denom,
    "num_valid_nouns": count,
  }
  return loss, metrics


def masked_classification_loss(
  logits: jax.Array, labels: jax.Array, valid: jax.Array
) -> tuple[jax.Array, jax.Array]:
  """(loss, accuracy) of logits [..., C] against integer labels [...], over the entries where
  `valid` is true: the mean softmax cross-entropy and the fraction argmax-right (both 0 when
  none is valid). Shared by the downstream classification tasks (action recognition, QA)."""
  labels = jnp.where(valid, labels, 0)
  losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  weights = valid.astype(jnp.float32)
  count = jnp.maximum(jnp.sum(weights), 1.0)
  loss = jnp.sum(losses * weights) / count
  accuracy = jnp.sum((jnp.argmax(logits, -1) == labels) * weights) / count
  return loss, accuracy


def sigmoid_focal_loss(
  logits: jax.Array, targets: jax.Array, alpha: float = 0.25, gamma: float = 2.0
) -> jax.Array:
  """Elementwise focal loss (Lin et al. 2017) of sigmoid logits against 0/1 targets:

  p_t = p if y = 1 else 1 - p, with p = sigmoid(logit)
  FL = -a_t (1 - p_t)^gamma log(p_t), a_t = alpha if y = 1 else 1 - alpha (alpha < 0: a_t = 1)

  log(p_t) is computed as -softplus(-logit) (y = 1) or -softplus(logit) (y = 0): exact for
  large logits, where log(sigmoid) would underflow. The caller sums and normalises.
  """
  targets = targets.astype(jnp.float32)
  p = jax.nn.sigmoid(logits)
  ce = targets * jax.nn.softplus(-logits) + (1 - targets) * jax.nn.softplus(logits)
  p_t = targets * p + (1 - targets) * (1 - p)
  loss = ce * (1 - p_t) ** gamma
  if alpha >= 0:
    loss = (targets * alpha + (1 - targets) * (1 - alpha)) * loss
  return loss


def segment_diou_loss(predicted: jax.Array, target: jax.Array) -> jax.Array:
  """1 - distance-IoU of 1-D segments around a shared point (ActionFormer's regression loss),
  elementwise over [..., 2].

  Both are (distance to the start, distance to the end) >= 0 from one point, so the segments
  are [-p0, p1] and [-t0, t1]; both contain the point, so they always overlap and GIoU would
  equal IoU. DIoU adds the squared distance of the midpoints over the squared hull:
    intersection = min(p0, t0) + min(p1, t1), union = p0 + p1 + t0 + t1 - intersection,
    hull = max(p0, t0) + max(p1, t1), midpoint distance = ((p1 - p0) - (t1 - t0)) / 2,
    loss = 1 - intersection / union + distance^2 / hull^2.
  Identical segments give 0. Zero-length unions and hulls are guarded.
  """
  p0, p1 = predicted[..., 0], predicted[..., 1]
  t0, t1 = target[..., 0], target[..., 1]
  intersection = jnp.minimum(p0, t0) + jnp.minimum(p1, t1)
  union = p0 + p1 + t0 + t1 - intersection
  hull = jnp.maximum(p0, t0) + jnp.maximum(p1, t1)
  distance = ((p1 - p0) - (t1 - t0)) / 2
  return 1.0 - intersection / jnp.maximum(union, _EPS) + distance**2 / jnp.maximum(hull, _EPS) ** 2


def total_loss(
  terms: Mapping[str, jax.Array],
  weights: Mapping[str, float] | None = None,
) -> jax.Array:
  """Weighted sum of the loss terms: total = sum_name weights[name] * terms[name].

  Args:
    terms: name -> scalar loss, e.g. {'contrast': ..., 'temporal': ...,
      'grounding': ...}. Leave a disabled loss out of `terms`.
    weights: name -> weight; a term without a weight gets 1.0 (the method's
      default: equal weights).
      A weight of 0 for a term absent from `terms` (a disabled loss) is fine.

  Returns:
    The scalar total.

  Raises:
    ValueError if `weights` gives a nonzero weight to a term that is not in
    `terms`: a misspelt weight would otherwise be silently ignored.
  """
  weights = dict(weights or {})
  unknown = sorted(k for k, w in weights.items() if k not in terms and w != 0)
  if unknown:
    raise ValueError(f"Weights {unknown} name no loss term; terms are {sorted(terms)}.")
  if not terms:
    raise ValueError("total_loss needs at least one term.")
  return sum(weights.get(name, 1.0) * value for name, value in terms.items())
