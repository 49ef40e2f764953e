"""Stage 2's training step on a fake denoiser: normalisation, noising, condition dropping and audio truncation.

The motion model is replaced by a recorder (`pred = w * x_t`), so what the step feeds it and
how the loss follows from that is checked by value, without compiling the DiT.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jitter import jitter
from vasa_jax import config, diffusion
from vasa_jax.models import motion_dit
from vasa_jax.train import stage2

B, K, W, D = 6, 2, 3, 4
T_TRAIN = 50


class _FakeModel:
  context = K
  samples_per_frame = 4

  def __init__(self, feature_kind="logmel"):
    self.alpha_bar = diffusion.make_schedule("cosine", T_TRAIN)
    self.feature_kind = feature_kind
    self.seen = {}

  def frozen_params(self):
    return {"wav2vec2": {"kernel": jnp.float32(3.0)}} if self.feature_kind == "wav2vec2" else {}

  def features(self, params, audio_BxS):
    self.seen.update(audio=audio_BxS, feature_params=params)
    return audio_BxS.reshape(audio_BxS.shape[0], K + W, -1).mean(-1, keepdims=True)

  def denoise(self, params, x_t, t, ctx, drop, audio_valid):
    self.seen.update(x_t=x_t, t=t, ctx=ctx, drop=drop, valid=audio_valid)
    return params["w"] * x_t

  def init(self, rng):
    return {"w": jnp.float32(0.5)}


def _task(p_drop=0.0, p_drop_prev=0.0, p_truncate=0.0, mean=1.0, std=2.0, features="logmel", **train):
  cfg = config.load("tiny")
  with cfg.unlocked():
    cfg.diffusion.update({"train_steps": T_TRAIN, "p_drop": p_drop, "p_drop_prev": p_drop_prev,
                          "p_truncate": p_truncate})
    cfg.motion_train.update({"lr": 0.1, "warmup": 0, "steps": 10, "weight_decay": 0.0, "ema_decay": 0.5, **train})
  task = stage2.Stage2(cfg, np.full(D, mean), np.full(D, std))
  task.model = _FakeModel(features)
  return task


def _batch():
  rng = np.random.default_rng(0)
  return {"motion": jnp.asarray(rng.normal(size=(B, K + W, D)), jnp.float32),
          "audio": jnp.asarray(rng.normal(size=(B, (K + W) * 4)), jnp.float32),
          "gaze": jnp.ones((B, 2)), "distance": jnp.ones(B), "emotion": jnp.ones((B, 5)),
          "cond_present": jnp.ones((B, 3), bool)}


def _keys(rng):
  return dict(zip(("t", "noise", "drop", "prev", "trunc", "cut"), jax.random.split(rng, 6)))


def test_loss_noises_the_normalised_window_and_regresses_it():
  task, batch, rng = _task(), _batch(), jax.random.key(3)
  params = {"w": jnp.float32(0.5)}
  loss, pred = task.loss(params, batch, rng, {"mean": jnp.full(D, 1.0), "std": jnp.full(D, 2.0)})
  seen, keys = task.model.seen, _keys(rng)
  motion = (np.asarray(batch["motion"]) - 1.0) / 2.0
  np.testing.assert_allclose(seen["ctx"]["prev"], motion[:, :K], rtol=1e-6)
  t = jax.random.randint(keys["t"], (B,), 0, T_TRAIN)
  np.testing.assert_array_equal(seen["t"], t)
  noise = jax.random.normal(keys["noise"], (B, W, D))
  x_t = diffusion.q_sample(jnp.asarray(motion[:, K:]), t, noise, task.model.alpha_bar)
  np.testing.assert_allclose(seen["x_t"], x_t, rtol=1e-5, atol=1e-6)
  assert float(loss) == pytest.approx(float(np.mean((0.5 * np.asarray(x_t) - motion[:, K:]) ** 2)), rel=1e-5)
  np.testing.assert_allclose(pred, 0.5 * np.asarray(x_t), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(seen["ctx"]["audio"], task.model.features(None, batch["audio"]))
  for name in ("gaze", "distance", "emotion"):
    np.testing.assert_array_equal(seen["ctx"][name], batch[name])


def test_without_dropping_only_the_controls_a_clip_lacks_are_dropped_and_all_audio_counts():
  task = _task()
  present = np.array([[True, True, True], [False, True, True], [True, False, True], [True, True, False],
                      [False, False, False], [True, False, False]])
  batch = dict(_batch(), cond_present=jnp.asarray(present))
  task.loss({"w": 1.0}, batch, jax.random.key(0), task.init(jax.random.key(0)).stats)
  drop = np.asarray(task.model.seen["drop"])
  want = np.zeros((B, len(motion_dit.CONDITIONS)), bool)
  want[:, [motion_dit.GAZE, motion_dit.DISTANCE, motion_dit.EMOTION]] = ~present
  np.testing.assert_array_equal(drop, want)
  np.testing.assert_array_equal(task.model.seen["valid"], np.ones((B, K + W), bool))


def test_full_dropping_drops_everything_and_prev_has_its_own_rate():
  task = _task(p_drop=1.0)
  task.loss({"w": 1.0}, _batch(), jax.random.key(0), task.init(jax.random.key(0)).stats)
  drop = np.asarray(task.model.seen["drop"])
  assert drop[:, :motion_dit.PREV].all() and not drop[:, motion_dit.PREV].any()
  task = _task(p_drop_prev=1.0)
  task.loss({"w": 1.0}, _batch(), jax.random.key(0), task.init(jax.random.key(0)).stats)
  drop = np.asarray(task.model.seen["drop"])
  assert drop[:, motion_dit.PREV].all() and not drop[:, :motion_dit.PREV].any()


def test_truncation_cuts_the_audio_inside_the_window():
  task, rng = _task(p_truncate=1.0), jax.random.key(4)
  task.loss({"w": 1.0}, _batch(), rng, task.init(jax.random.key(0)).stats)
  valid = np.asarray(task.model.seen["valid"])
  cut = np.asarray(jax.random.randint(_keys(rng)["cut"], (B, 1), K + 1, K + W))
  np.testing.assert_array_equal(valid, np.arange(K + W)[None] < cut)
  # Every row keeps its context and the window's first frame, and loses at least the last frame.
  assert valid[:, :K + 1].all() and not valid[:, -1].any()


@pytest.mark.parametrize("features", ["logmel", "wav2vec2"])
def test_wav2vec2_windows_are_silent_after_the_cut_and_get_the_frozen_weights(features):
  task, rng = _task(p_truncate=1.0, features=features), jax.random.key(4)
  state = task.init(jax.random.key(0))
  batch = _batch()
  task.loss(state.params, batch, rng, state.stats)
  seen = task.model.seen
  valid = np.asarray(seen["valid"])
  audio, given = np.asarray(seen["audio"]), np.asarray(batch["audio"])
  heard = np.repeat(valid, 4, axis=1)
  np.testing.assert_array_equal(audio[heard], given[heard])
  if features == "wav2vec2":
    # What live mode's windows hold: silence after the last heard frame; the frozen weights come
    # from the state's stats, beside (never inside) the trained params.
    assert (audio[~heard] == 0).all() and (given[~heard] != 0).all()
    assert float(seen["feature_params"]["wav2vec2"]["kernel"]) == 3.0 and "wav2vec2" not in state.params
    assert float(state.stats["wav2vec2"]["kernel"]) == 3.0
  else:
    np.testing.assert_array_equal(audio, given)          # Log-mel runs see the batch as before.
    assert "wav2vec2" not in seen["feature_params"] and set(state.stats) == {"mean", "std"}


def test_train_step_counts_updates_and_skips_a_non_finite_loss():
  task = _task()
  state = task.init(jax.random.key(0))
  new, metrics = task.train_step(state, _batch(), jax.random.key(1))
  assert int(new.step) == 1 and float(metrics["finite"]) == 1.0
  assert float(new.params["w"]) != 0.5 and float(metrics["grad_norm"]) > 0
  # EMA after the first step (decay (1 + 0) / (10 + 0) = 0.1): mostly the new weights.
  assert float(new.ema["w"]) == pytest.approx(0.1 * 0.5 + 0.9 * float(new.params["w"]), rel=1e-6)
  loss, _ = task.loss(state.params, _batch(), jax.random.key(1), state.stats)
  assert float(metrics["loss/x0"]) == pytest.approx(float(loss), rel=1e-6)
  bad = dict(_batch(), motion=_batch()["motion"].at[0, -1, 0].set(jnp.nan))
  same, metrics = task.train_step(new, bad, jax.random.key(2))
  assert float(metrics["finite"]) == 0.0 and int(same.step) == 2
  assert float(same.params["w"]) == float(new.params["w"]) and float(same.ema["w"]) == float(new.ema["w"])


def test_learning_rate_warms_up_from_zero_then_decays_to_a_tenth():
  s = _task(warmup=4, steps=12).schedule
  for step, lr in ((0, 0.0), (2, 0.05), (4, 0.1), (8, 0.01 + 0.09 * 0.5), (12, 0.01)):
    assert float(s(step)) == pytest.approx(lr, abs=1e-7), step
  s = _task(warmup=2, steps=2).schedule            # No room for a decay: one step of it after the warm-up.
  assert float(s(2)) == pytest.approx(0.1) and float(s(3)) == pytest.approx(0.01)
  task = _task(warmup=2)                           # The first update has a zero learning rate.
  assert float(task.train_step(task.init(jax.random.key(0)), _batch(), jax.random.key(1))[0].params["w"]) == 0.5


def test_host_batch_one_hot_emotion_clipped_into_range():
  raw = {"motion_BxLxD": np.zeros((3, 5, 2), np.float64), "audio_BxS": np.zeros((3, 8)),
         "gaze_Bx2": np.ones((3, 2)), "distance_B": np.array([1.0, 2.0, 3.0]), "emotion_B": np.array([-1, 2, 9]),
         "cond_present_Bx3": np.array([[1, 0, 1]] * 3)}
  out = stage2.Stage2.host_batch(raw)
  np.testing.assert_array_equal(out["emotion"], np.eye(5)[[0, 2, 4]])
  assert out["motion"].dtype == np.float32 and out["cond_present"].dtype == bool
  np.testing.assert_array_equal(out["cond_present"], [[True, False, True]] * 3)
  np.testing.assert_array_equal(out["distance"], [1.0, 2.0, 3.0])


def test_label_stats_are_the_per_dimension_mean_and_floored_std(monkeypatch):
  clips = [{"labels": {"a": np.array([0.0, 2.0]), "b": np.array([5.0, 5.0])}},
           {"labels": {"a": np.array([4.0]), "b": np.array([5.0])}}]
  corpus = type("Corpus", (), {"source": lambda self, split: clips})()
  monkeypatch.setattr(stage2.records, "decode_clip", lambda clip, frame_indices: clip)
  mean, std = stage2.label_stats(corpus, "train", ["a", "b"])
  np.testing.assert_allclose(mean, [2.0, 5.0])
  np.testing.assert_allclose(std, [np.sqrt(8 / 3), 1e-3])


def test_control_norm_feeds_the_embeddings_centred_and_scaled_controls_and_old_configs_read_raw():
  cfg = config.load("tiny")
  rng = np.random.default_rng(1)
  b, m = 3, 5
  x = jnp.asarray(rng.normal(size=(b, 4, m)), jnp.float32)
  prev = jnp.asarray(rng.normal(size=(b, 2, m)), jnp.float32)
  audio = jnp.asarray(rng.normal(size=(b, 6, 7)), jnp.float32)
  gaze = jnp.asarray(rng.uniform(-0.3, 0.3, (b, 2)), jnp.float32)
  dist = jnp.asarray(rng.uniform(0.85, 1.2, b), jnp.float32)
  emo = jnp.eye(5)[:b]
  t = jnp.array([3, 10, 40])
  drop = jnp.zeros((b, len(motion_dit.CONDITIONS)), bool)
  raw = motion_dit.MotionDiT(cfg.motion, m)
  # adaLN-Zero gates and the zero head would make every output 0: jitter every weight.
  params = jitter(raw.init(jax.random.key(0), x, t, prev, audio, gaze, dist, emo, drop), 0.2)
  normed_cfg = config.load("tiny", [("motion.control_norm", "true")])
  normed = motion_dit.MotionDiT(normed_cfg.motion, m)
  # Same weights: the normalised model on the raw controls is the raw model on the scaled ones.
  got = normed.apply(params, x, t, prev, audio, gaze, dist, emo, drop)
  want = raw.apply(params, x, t, prev, audio, gaze / motion_dit.GAZE_SCALE,
                   (dist - motion_dit.DISTANCE_CENTRE) / motion_dit.DISTANCE_SCALE, emo, drop)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  unscaled = raw.apply(params, x, t, prev, audio, gaze, dist, emo, drop)
  assert np.abs(np.asarray(got) - np.asarray(unscaled)).max() > 1e-2 * np.abs(np.asarray(got)).max()
  # Configs saved before the switch existed (bundles, run folders) keep the raw inputs they were trained on.
  stored = config.load("demo").to_dict()
  assert stored["motion"].pop("control_norm") is True
  assert config.from_stored(stored).motion.control_norm is False
