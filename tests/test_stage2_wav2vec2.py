"""Stage 2 on wav2vec2 features (`audio.features = "wav2vec2"`), with tiny random wav2vec2s saved
in our converted format: the format and its errors, the per-window features, a tiny train run
that checkpoints, resumes, exports and samples through the real `sample` path. No downloads."""

import json
import os
import re
import wave

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vasa_jax import bundle, cli, config, media, sample, stream, watermark
from vasa_jax.errors import UserError
from vasa_jax.models import wav2vec2
from vasa_jax.motion import Controls, MotionModel, WindowLoop
from vasa_jax.train import __main__ as train_main
from vasa_jax.train import checkpoint, export, stage2


def tiny_w2v_config(hidden: int = 16) -> wav2vec2.Wav2Vec2Config:
  # Strides 5*4*4*4 = 320 samples (20 ms at 16 kHz), as the real models: 2 frames per 25 fps frame.
  return wav2vec2.Wav2Vec2Config(hidden_size=hidden, num_hidden_layers=2, num_attention_heads=2,
                                 intermediate_size=32, conv_dim=(8, 8, 8, 8), conv_stride=(5, 4, 4, 4),
                                 conv_kernel=(10, 4, 4, 4), num_conv_pos_embeddings=8,
                                 num_conv_pos_embedding_groups=2)


def save_tiny_w2v(path, seed: int = 0, hidden: int = 16) -> str:
  """Random tiny wav2vec2 weights in our converted format; norms and biases random too."""
  cfg = tiny_w2v_config(hidden)
  params = wav2vec2.Wav2Vec2(cfg).init(jax.random.key(seed), jnp.zeros((1, 3200)))
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(seed + 100), len(leaves))
  leaves = [a + 0.2 * jax.random.normal(k, a.shape) for a, k in zip(leaves, keys)]
  wav2vec2.save_converted(str(path), cfg, jax.tree.unflatten(tree, leaves), source=f"random seed {seed}")
  return str(path)


def _w2v_cfg(path, name="tiny"):
  cfg = config.load(name)
  cfg.audio.features = "wav2vec2"
  cfg.audio.wav2vec2_path = str(path)
  return cfg


@pytest.fixture(name="w2v", scope="module")
def _w2v(tmp_path_factory):
  return save_tiny_w2v(tmp_path_factory.mktemp("w2v") / "tiny_w2v")


def test_logmel_stays_the_default_and_old_configs_read_as_logmel():
  for name in ("tiny", "demo"):
    assert config.load(name).audio.features == "logmel"
  assert config.load("paper").audio.features == "wav2vec2"
  stored = config.load("tiny").to_dict()
  for key in ("features", "wav2vec2_path", "wav2vec2_layer"):
    del stored["audio"][key]                      # A config saved before these keys existed.
  old = config.from_stored(stored)
  assert old.audio.features == "logmel" and old.audio.wav2vec2_path == ""
  demo = bundle.load(bundle.DEMO_BUNDLE)
  assert demo.motion_cfg.audio.features == "logmel"
  assert "wav2vec2" not in WindowLoop(MotionModel(demo.motion_cfg, demo.mean.size), demo.motion_params,
                                      np.zeros(demo.mean.size, np.float32), Controls(), jax.random.key(0),
                                      steps=1, guidance=(0, 0, 0, 0, 0)).params


def test_converted_folder_round_trip_and_one_line_errors(w2v, tmp_path):
  cfg, params = wav2vec2.load_converted(w2v)
  assert cfg == tiny_w2v_config()
  meta = json.load(open(os.path.join(w2v, wav2vec2.CONVERTED_JSON)))
  assert meta["digest"] == wav2vec2.params_digest(params) and meta["source"] == "random seed 0"

  def error(path, match):
    with pytest.raises(UserError, match=match) as e:
      MotionModel(_w2v_cfg(path), motion_dim=6).frozen_params()
    assert "\n" not in str(e.value)
    return str(e.value)

  msg = error("", "audio.wav2vec2_path is empty")
  assert "python -m vasa_jax.models.wav2vec2 --convert HF_DIR OUT" in msg and "not shipped" in msg
  error(tmp_path / "nope", r"audio.wav2vec2_path='.*nope' does not exist; audio.wav2vec2_path accepts")
  hf = tmp_path / "hf"
  hf.mkdir()
  (hf / "config.json").write_text(json.dumps({"model_type": "wav2vec2"}))
  error(hf, "is a Hugging Face folder, not a converted one")
  damaged = tmp_path / "damaged"
  save_tiny_w2v(damaged)
  (damaged / wav2vec2.CONVERTED_PARAMS).write_bytes(b"\x00\x01 not msgpack")
  error(damaged, "damaged|does not match")
  other = tmp_path / "other"
  save_tiny_w2v(other, hidden=24)
  (other / wav2vec2.CONVERTED_JSON).write_text((damaged / wav2vec2.CONVERTED_JSON).read_text())
  error(other, "does not match the architecture")          # 24-d weights under a 16-d config.
  bad = _w2v_cfg(w2v)
  bad.audio.features = "mfcc"
  with pytest.raises(UserError, match="audio.features is 'mfcc'; accepted: 'logmel', 'wav2vec2'"):
    MotionModel(bad, motion_dim=6)
  bad = _w2v_cfg(w2v)
  bad.audio.wav2vec2_layer = 3
  with pytest.raises(UserError, match=r"audio.wav2vec2_layer is 3; accepted: -1 .* or 0..2"):
    MotionModel(bad, motion_dim=6)


def test_convert_a_hugging_face_checkpoint(tmp_path, capsys):
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  torch.manual_seed(0)
  t = tiny_w2v_config()
  hf_cfg = transformers.Wav2Vec2Config(hidden_size=t.hidden_size, num_hidden_layers=t.num_hidden_layers,
                                       num_attention_heads=2, intermediate_size=32, conv_dim=t.conv_dim,
                                       conv_stride=t.conv_stride, conv_kernel=t.conv_kernel,
                                       num_conv_pos_embeddings=8, num_conv_pos_embedding_groups=2)
  model = transformers.Wav2Vec2Model(hf_cfg).eval()
  model.save_pretrained(tmp_path / "hf")
  out = tmp_path / "converted"
  assert wav2vec2.main(["--convert", str(tmp_path / "hf"), str(out)]) == 0
  assert "wav2vec2 2 layers x 16" in capsys.readouterr().out
  cfg, params = wav2vec2.load_converted(str(out))
  audio = np.random.default_rng(0).standard_normal((1, 6400)).astype(np.float32)
  with torch.no_grad():
    want = model(torch.from_numpy(audio)).last_hidden_state.numpy()
  got = wav2vec2.Wav2Vec2(cfg).apply(params, audio)
  np.testing.assert_allclose(np.asarray(got), want, atol=1e-4)
  assert wav2vec2.main(["--convert", str(tmp_path / "missing"), str(tmp_path / "x")]) == 2
  assert "not a directory" in capsys.readouterr().err
  # An existing converted folder is kept unless --overwrite; a replacement leaves no hidden folder behind.
  before = (out / wav2vec2.CONVERTED_JSON).read_text()
  assert wav2vec2.main(["--convert", str(tmp_path / "hf"), str(out)]) == 2
  assert "already exists and is not empty; pass --overwrite" in capsys.readouterr().err
  assert (out / wav2vec2.CONVERTED_JSON).read_text() == before
  assert wav2vec2.main(["--convert", str(tmp_path / "hf"), str(out), "--overwrite"]) == 0
  assert sorted(os.listdir(out)) == sorted([wav2vec2.CONVERTED_JSON, wav2vec2.CONVERTED_PARAMS])
  assert not [n for n in os.listdir(tmp_path) if n.startswith(".")]


def test_window_features_are_the_training_windows_features(w2v):
  """The sampler's window step and the training step compute a window's features from the
  same K + W frames of audio: the features of one window of a clip are the same either way,
  and a frame's feature depends on the whole window (bidirectional), not on its frame only."""
  cfg = _w2v_cfg(w2v)
  model = MotionModel(cfg, motion_dim=6)
  params = model.with_frozen(model.init(jax.random.key(0)))
  k, w, spf = model.context, model.window, model.samples_per_frame
  clip = np.random.default_rng(1).normal(0, 0.1, (3 * w) * spf).astype(np.float32)
  # Training: the pipeline's window starting at frame w (K context frames before it).
  a0 = (w - k) * spf
  train_feats = model.features(params, jnp.asarray(clip[a0:a0 + (k + w) * spf])[None])
  # Sampling: the second window of the loop, whose buffered audio starts K frames before frame w.
  loop = WindowLoop(model, model.init(jax.random.key(0)), np.zeros(6, np.float32), Controls(),
                    jax.random.key(0), steps=1, guidance=(0, 0, 0, 0, 0))
  loop.add_audio(clip)
  next(loop.windows())
  wav = loop.audio[:(k + w) * spf]
  np.testing.assert_array_equal(wav, clip[a0:a0 + (k + w) * spf])
  np.testing.assert_allclose(np.asarray(model.features(loop.params, jnp.asarray(wav)[None])),
                             np.asarray(train_feats), atol=1e-6)
  # The window's last frames are changed by audio in its first frames (the transformer sees both).
  changed = clip[a0:a0 + (k + w) * spf].copy()
  changed[:spf] += 0.5
  other = np.asarray(model.features(params, jnp.asarray(changed)[None]))
  assert np.abs(other[0, -5:] - np.asarray(train_feats)[0, -5:]).max() > 1e-4
  # A different wav2vec2 layer gives different features.
  cfg0 = _w2v_cfg(w2v)
  cfg0.audio.wav2vec2_layer = 0
  m0 = MotionModel(cfg0, motion_dim=6)
  f0 = m0.features(m0.with_frozen(model.init(jax.random.key(0))), jnp.asarray(wav)[None])
  assert np.abs(np.asarray(f0) - np.asarray(train_feats)).max() > 1e-3


def test_streaming_motion_equals_offline_with_wav2vec2(w2v):
  cfg = _w2v_cfg(w2v)
  model = MotionModel(cfg, motion_dim=6)
  params = model.init(jax.random.key(0))
  audio = np.random.default_rng(2).normal(0, 0.1, 2 * cfg.data.window * 640 + 777).astype(np.float32)
  args = dict(steps=2, guidance=(0.5, 1.0, 0, 0, 0))
  offline = model.sample_sequence(params, audio, np.zeros(6, np.float32), Controls(), jax.random.key(3), **args)
  loop = WindowLoop(model, params, np.zeros(6, np.float32), Controls(), jax.random.key(3), **args)
  out = []
  for start in range(0, audio.size, 1777):                # Ragged chunks, as a stream delivers them.
    loop.add_audio(audio[start:start + 1777])
    out.extend(loop.windows())
  out.extend(loop.windows(final=True))
  np.testing.assert_array_equal(np.concatenate(out)[:len(offline)], offline)
  assert offline.shape == (-(-audio.size // 640), 6)


def test_paper_config_needs_the_weights_but_compiles_from_shapes():
  cfg = config.load("paper")
  with pytest.raises(UserError, match="audio.wav2vec2_path is empty"):
    MotionModel(cfg, motion_dim=262)
  # Ahead-of-time compiles take the architecture (wav2vec2-base here) and the init inputs' shapes.
  task = stage2.Stage2(cfg, np.zeros(262), np.ones(262), wav2vec2_cfg=wav2vec2.Wav2Vec2Config())
  assert task.model.feature_dim == 768
  state = jax.eval_shape(task.init, jax.random.key(0), *task.init_input_shapes())
  n_frozen = sum(np.prod(a.shape) for a in jax.tree.leaves(state.stats["wav2vec2"]))
  assert 90e6 < n_frozen < 100e6                       # wav2vec2-base: about 94M frozen weights ...
  assert "wav2vec2" not in state.params and "wav2vec2" not in state.ema   # ... never trained.


def _write_wav(path, audio, sr=16000):
  with wave.open(str(path), "wb") as f:
    f.setnchannels(1)
    f.setsampwidth(2)
    f.setframerate(sr)
    f.writeframes((np.clip(audio, -1, 1) * 32767).astype(np.int16).tobytes())
  return str(path)


@pytest.mark.slow
def test_train_on_wav2vec2_features_then_sample(tiny_pipeline, w2v, tmp_path, capsys):
  run2 = str(tmp_path / "run2")
  argv = ["--stage", "2", "--config", "tiny", "--data", tiny_pipeline["motion"], "--workdir", run2,
          "--config.motion_train.motion_source=motion", "--config.audio.features=wav2vec2",
          f"--config.audio.wav2vec2_path={w2v}"]
  assert cli.run(train_main.main, train_main.parser(), argv + ["--steps", "2"]) == 0
  assert cli.run(train_main.main, train_main.parser(), argv + ["--steps", "1"]) == 0   # Resumes at 2.
  assert checkpoint.Checkpointer(run2).latest_step() == 3
  assert "step 3/" in capsys.readouterr().out
  cfg2, state, _ = checkpoint.load_run(run2)
  assert cfg2.audio.features == "wav2vec2"
  # The frozen weights ride in the state's stats, unchanged by training; the trained params lack them.
  _, w2v_params = wav2vec2.load_converted(w2v)
  jax.tree.map(np.testing.assert_array_equal, state["stats"]["wav2vec2"], jax.tree.map(np.asarray, w2v_params))
  assert "wav2vec2" not in state["params"] and "wav2vec2" not in state["ema"]
  assert state["params"]["audio"]["params"]["in_proj"]["kernel"].shape[0] == 16

  out = str(tmp_path / "bundle")
  export.export(tiny_pipeline["run1"], run2, out)
  model = bundle.load(out)
  assert model.motion_cfg.audio.features == "wav2vec2" and "wav2vec2" not in model.motion_params

  speech = media.load_audio(sample.EXAMPLE_AUDIO)[:16000 + 3000]        # 1.19 s: 30 frames.
  wav = _write_wav(tmp_path / "speech.wav", speech)
  video = str(tmp_path / "talk.mp4")
  common = ["--checkpoint", out, "--audio", wav, "--steps", "2", "--quiet"]
  assert cli.run(sample.main, sample.parser(), common + ["--out", video]) == 0
  frames, fps, _ = media.read_video(video)
  assert fps == 25 and frames.shape == (30, 64, 64, 3)

  def frames_with(w2v_dir, chunk):
    m = bundle.load(out)
    m.motion_cfg.audio.wav2vec2_path = w2v_dir
    s = stream.StreamingSampler(m, media.load_image(sample.EXAMPLE_IMAGE), steps=2, seed=5,
                                watermark=watermark.Watermarker(watermark.make_payload(m.digest, 1)))
    return np.stack(list(stream.generate(s, speech, chunk_samples=chunk)))

  offline = frames_with(w2v, None)
  np.testing.assert_array_equal(offline, frames_with(w2v, 3200))       # Streaming equals offline.
  # The sampler really reads the configured weights: another wav2vec2 of the same shape moves the face.
  other = save_tiny_w2v(tmp_path / "other_w2v", seed=7)
  assert np.abs(frames_with(other, None).astype(int) - offline).max() > 0

  # Wrong or missing weights at sampling: one line naming the flag or the key, rc 2.
  for path, match in ((str(tmp_path / "missing"), "--wav2vec2-path='.*missing' does not exist"),
                      (save_tiny_w2v(tmp_path / "wide", hidden=24),
                       "gives 24-d features but this model's audio encoder was trained on 16-d ones")):
    assert cli.run(sample.main, sample.parser(),
                   common + ["--out", str(tmp_path / "x.mp4"), "--wav2vec2-path", path]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and re.search(match, err), err
