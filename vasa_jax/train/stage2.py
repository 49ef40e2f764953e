"""Stage 2 training: the motion diffusion model and its audio encoder, one pure jitted step.

Each example is a window of W motion frames with the K frames before it (motion
and audio), the clip's controls and which of them the clip has. The step draws a
diffusion time, noises the window and regresses the clean window (x0). For
classifier-free guidance each condition is dropped with `p_drop`, the previous
window (motion and audio together) with `p_drop_prev`, and with `p_truncate` the
audio stops at a random frame inside the window (the end of a clip in streaming).
Clip starts are padded the way inference starts: frame 0's motion repeated, with
silence as its audio.

With `audio.features = "wav2vec2"` the frozen wav2vec2 runs inside the step on each
window's audio, as the sampler runs it (`motion.MotionModel`). Its weights are read
once from `audio.wav2vec2_path` and carried in the state's `stats` (never in `params`,
the optimiser or the EMA), so resuming and ahead-of-time compiles see them like any
other array; they add their size (about 380 MB for a base model) to each checkpoint and
nothing to an exported bundle. A truncated window (`p_truncate`) also has its audio
after the cut silenced: live mode computes a window's features with the audio not yet
heard as zeros, and wav2vec2's features of the heard frames depend on it.
"""

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from vasa_jax import diffusion
from vasa_jax.data import records
from vasa_jax.models import motion_dit, wav2vec2
from vasa_jax.motion import EMOTION_DIM, MotionModel
from vasa_jax.train import state as state_lib

C = len(motion_dit.CONDITIONS)


@flax.struct.dataclass
class State:
  step: jax.Array
  params: Any
  opt: Any
  ema: Any
  # Never trained: motion normalisation {"mean": [M], "std": [M]}, and {"wav2vec2": frozen weights}
  # when audio.features is "wav2vec2" (absent otherwise, so log-mel runs keep their old layout).
  stats: dict[str, Any]


class Stage2:
  """Holds the model and optimiser; methods are pure functions of their arguments."""

  def __init__(self, cfg: ml_collections.ConfigDict, mean: np.ndarray, std: np.ndarray, *,
               wav2vec2_cfg: wav2vec2.Wav2Vec2Config | None = None):
    """`wav2vec2_cfg`: for shape-only uses (ahead-of-time compiles with `init_input_shapes`), the
    wav2vec2 architecture instead of the one in `audio.wav2vec2_path`."""
    self.cfg = cfg
    self.mean, self.std = np.asarray(mean, np.float32), np.asarray(std, np.float32)
    self.model = MotionModel(cfg, motion_dim=self.mean.size, wav2vec2_cfg=wav2vec2_cfg)
    t = cfg.motion_train
    # Learning rate per step: linear warm-up from 0, then cosine down to a tenth by the last step.
    self.schedule = optax.warmup_cosine_decay_schedule(0.0, t.lr, t.warmup, max(t.steps, t.warmup + 1), t.lr * 0.1)
    self.tx = optax.chain(optax.clip_by_global_norm(t.grad_clip),
                          optax.adamw(self.schedule, b1=t.b1, b2=t.b2, weight_decay=t.weight_decay))

  def init_inputs(self) -> tuple:
    """Host arrays `init` takes after `rng` (the loop passes them as arguments, so a frozen
    wav2vec2 is never baked into a compiled program as a constant)."""
    return (self.model.frozen_params(),)

  def init_input_shapes(self) -> tuple:
    """Their shapes, for ahead-of-time compiles without the weights."""
    return (self.model.frozen_shapes(),)

  def init(self, rng, frozen=None) -> State:
    """`frozen`: `init_inputs()[0]` (None: read them here, for callers that do not jit)."""
    frozen = self.model.frozen_params() if frozen is None else frozen
    params = self.model.init(rng)
    return State(step=jnp.zeros((), jnp.int32), params=params, opt=self.tx.init(params), ema=params,
                 stats={"mean": jnp.asarray(self.mean), "std": jnp.asarray(self.std), **frozen})

  def loss(self, params, batch, rng, stats):
    d = self.cfg.diffusion
    k = self.model.context
    b, length, _ = batch["motion"].shape
    k_t, k_noise, k_drop, k_prev, k_trunc, k_cut = jax.random.split(rng, 6)
    motion = (batch["motion"] - stats["mean"]) / stats["std"]
    prev, x0 = motion[:, :k], motion[:, k:]
    t = jax.random.randint(k_t, (b,), 0, d.train_steps)
    noise = jax.random.normal(k_noise, x0.shape)
    x_t = diffusion.q_sample(x0, t, noise, self.model.alpha_bar)
    drop = jax.random.bernoulli(k_drop, d.p_drop, (b, C))
    drop = drop.at[:, motion_dit.PREV].set(jax.random.bernoulli(k_prev, d.p_drop_prev, (b,)))
    # Controls a clip does not have are always "dropped": the model sees their null.
    present = batch["cond_present"]
    for col, c in enumerate((motion_dit.GAZE, motion_dit.DISTANCE, motion_dit.EMOTION)):
      drop = drop.at[:, c].set(drop[:, c] | ~present[:, col])
    cut = jax.random.randint(k_cut, (b, 1), k + 1, length)
    truncate = jax.random.bernoulli(k_trunc, d.p_truncate, (b, 1))
    audio_valid = ~truncate | (jnp.arange(length)[None] < cut)
    audio, feature_params = batch["audio"], params
    if self.model.feature_kind == "wav2vec2":
      # As live mode sees a window: silence after the cut (log-mel runs keep their old batches).
      audio = jnp.where(jnp.repeat(audio_valid, self.model.samples_per_frame, axis=1), audio, 0.0)
      feature_params = {**params, "wav2vec2": stats["wav2vec2"]}
    feats = self.model.features(feature_params, audio)
    ctx = {"prev": prev, "audio": feats, "gaze": batch["gaze"], "distance": batch["distance"],
           "emotion": batch["emotion"]}
    pred = self.model.denoise(params, x_t, t, ctx, drop, audio_valid)
    return diffusion.x0_loss(pred, x0), pred

  def train_step(self, state: State, batch: dict, rng) -> tuple[State, dict]:
    def grads_of(part, r):
      (loss, _), grads = jax.value_and_grad(self.loss, has_aux=True)(state.params, part, r, state.stats)
      return grads, loss

    grads, loss = state_lib.accumulate(grads_of, batch, rng, self.cfg.motion_train.microbatches)
    finite = jnp.isfinite(loss)

    def update():
      updates, opt = self.tx.update(grads, state.opt, state.params)
      params = optax.apply_updates(state.params, updates)
      return params, opt, state_lib.ema_update(state.ema, params, state.step, self.cfg.motion_train.ema_decay)

    params, opt, ema = state_lib.if_finite(finite, update, (state.params, state.opt, state.ema))
    metrics = {"loss/x0": loss, "finite": finite.astype(jnp.float32),
               "grad_norm": optax.tree.norm(grads)}
    return State(step=state.step + 1, params=params, opt=opt, ema=ema, stats=state.stats), metrics

  @staticmethod
  def host_batch(raw: dict) -> dict:
    """Pipeline window batch -> arrays the step uses."""
    return {"motion": raw["motion_BxLxD"].astype(np.float32), "audio": raw["audio_BxS"].astype(np.float32),
            "gaze": raw["gaze_Bx2"].astype(np.float32), "distance": raw["distance_B"].astype(np.float32),
            "emotion": np.eye(EMOTION_DIM, dtype=np.float32)[np.clip(raw["emotion_B"], 0, EMOTION_DIM - 1)],
            "cond_present": raw["cond_present_Bx3"].astype(bool)}


def label_stats(corpus, split: str, names) -> tuple[np.ndarray, np.ndarray]:
  """Per-dimension mean/std of stacked per-frame labels (motion = ground-truth labels)."""
  source = corpus.source(split)
  rows = []
  for i in range(len(source)):
    clip = records.decode_clip(source[i], frame_indices=[])
    rows.append(np.stack([clip["labels"][n] for n in names], -1))
  data = np.concatenate(rows)
  return data.mean(0), np.maximum(data.std(0), 1e-3)
