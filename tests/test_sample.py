"""The whole pipeline on the tiny config (the tiny_bundle fixture: both stages, a bundle), the sampler and its CLI."""

import os

import numpy as np
import pytest
from jax import monitoring
from PIL import Image

from vasa_jax import bundle, cli, faces, media, sample, stream, watermark
from vasa_jax.data import synthetic
from vasa_jax.motion import Controls

pytestmark = pytest.mark.slow


def _portrait():
  return media.load_image(sample.EXAMPLE_IMAGE)


def _marker(model):
  """A fixed payload: by default each video gets a fresh generation id (and so other bits)."""
  return watermark.Watermarker(watermark.make_payload(model.digest, generation_id=1))


def test_streaming_equals_offline_and_never_recompiles(tiny_bundle):
  model = bundle.load(tiny_bundle)
  audio = media.load_audio(sample.EXAMPLE_AUDIO)[:16000 * 2 + 123]   # 2 s: several windows and a partial one.
  frames = {}
  for mode, chunk in (("offline", None), ("stream", 3200), ("ragged", 1777)):
    s = stream.StreamingSampler(model, _portrait(), controls=Controls(gaze=(0.1, 0.0)), steps=3, seed=7,
                                watermark=_marker(model))
    frames[mode] = np.stack(list(stream.generate(s, audio, chunk_samples=chunk)))
    assert s.compiled_steps() == {"window": 1, "decode": 2}
  expected = -(-audio.size // 640)
  assert frames["offline"].shape == (expected, 64, 64, 3) and frames["offline"].dtype == np.uint8
  np.testing.assert_array_equal(frames["offline"], frames["stream"])
  np.testing.assert_array_equal(frames["offline"], frames["ragged"])


def test_decode_is_compiled_before_the_first_frame(tiny_bundle):
  model = bundle.load(tiny_bundle)
  audio = media.load_audio(sample.EXAMPLE_AUDIO)[:16000]
  sampler = stream.StreamingSampler(model, media.load_image(sample.EXAMPLE_IMAGE), steps=3, seed=11,
                                    watermark=None, decode_batch=7)   # A batch size no other test compiles.
  compiled = []

  def listener(event, seconds, fun_name="", **kw):
    if event == "/jax/core/compile/backend_compile_duration":  # Also for a persistent-cache hit.
      compiled.append(fun_name)

  monitoring.register_event_duration_secs_listener(listener)
  try:
    sampler.compile()
    ahead = compiled[:]
    frames = list(stream.generate(sampler, audio))
  finally:
    monitoring.unregister_event_duration_listener(listener)
  assert any("decode" in name for name in ahead), ahead
  assert not any("decode" in name for name in compiled[len(ahead):]), compiled
  assert len(frames) == 25 and sampler.compiled_steps()["decode"] == 2


def test_frames_follow_the_seed_and_still_mode(tiny_bundle):
  model = bundle.load(tiny_bundle)
  audio = media.load_audio(sample.EXAMPLE_AUDIO)[:16000]
  marker = _marker(model)
  run = lambda **kw: np.stack(list(stream.generate(  # noqa: E731
      stream.StreamingSampler(model, _portrait(), steps=2, watermark=marker, **kw), audio)))
  a, b, c = run(seed=1), run(seed=1), run(seed=2)
  np.testing.assert_array_equal(a, b)
  # Another seed, other motion. Only '> 0': this 2-step denoiser hardly depends on its noise (seeds move
  # the motion by ~1e-4), so a floor here would measure the model; test_math_motion checks the seed's
  # path to the motion exactly, and test_demo_bundle sets a floor on the trained demo model.
  assert np.abs(a.astype(int) - c.astype(int)).mean() > 0
  still = run(seed=1, still=True)
  assert still.shape == a.shape
  # The watermark is on by default, and turning it off changes the pixels.
  plain = np.stack(list(stream.generate(stream.StreamingSampler(model, _portrait(), steps=2, seed=1,
                                                                watermark=None), audio)))
  assert np.abs(plain.astype(int) - a.astype(int)).mean() > 0.1
  with pytest.raises(TypeError, match="watermark"):  # Off is never the silent default.
    stream.StreamingSampler(model, _portrait())


def test_sample_cli_end_to_end(tiny_bundle, tmp_path, capsys):
  out = str(tmp_path / "talk.mp4")
  args = ["--checkpoint", tiny_bundle, "--out", out, "--steps", "2", "--gaze", "5", "-3", "--emotion", "happy",
          "--quiet"]
  assert cli.run(sample.main, sample.parser(), args) == 0
  assert capsys.readouterr().out.strip().endswith("talk.mp4")
  frames, fps, audio = media.read_video(out)
  assert fps == 25 and frames.shape[1:] == (64, 64, 3)
  assert abs(len(frames) / fps - 4.0) <= 1 / fps and abs(audio.size / 16000 - 4.0) <= 1 / fps
  meta = media.read_metadata(out)
  assert meta["checkpoint_hash"] == bundle.load(tiny_bundle).digest and meta["watermark"] == "on"
  assert meta["ai_generated"] == "true" and len(meta["watermark_payload"]) == 16
  # Video-driven reenactment: pose and dynamics from a driving video.
  drv = str(tmp_path / "drv.mp4")
  media.write_video(drv, synthetic.make_clip(3, 5, 12, 64, "train")["frames"], 25)
  out2 = str(tmp_path / "driven.mp4")
  assert cli.run(sample.main, sample.parser(), ["--checkpoint", tiny_bundle, "--driving", drv, "--out", out2,
                                                "--quiet"]) == 0
  assert media.read_video(out2)[0].shape[0] == 12
  # Turning the watermark off is explicit and recorded.
  out3 = str(tmp_path / "nomark.mp4")
  assert cli.run(sample.main, sample.parser(), ["--checkpoint", tiny_bundle, "--out", out3, "--steps", "1",
                                                "--no-watermark", "--label", "--quiet"]) == 0
  assert media.read_metadata(out3)["watermark"].startswith("off")
  assert "--no-watermark" in capsys.readouterr().err


def test_sample_cli_bad_inputs(tiny_bundle, tmp_path, capsys):
  sky = np.zeros((96, 96, 3), np.uint8)
  sky[:] = (40, 90, 200)  # A blue square: nothing face-like.
  Image.fromarray(sky).save(tmp_path / "noface.png")
  cases = [
      (["--image", str(tmp_path / "missing.png")], "does not exist"),
      (["--audio", str(tmp_path)], "is a directory"),
      (["--emotion", "furious"], "--emotion 'furious'"),
      (["--steps", "0"], "--steps 0 is out of range; accepted: 1..1000"),
      (["--out", str(tmp_path / "x.avi")], "must end with .mp4"),
      (["--checkpoint", str(tmp_path)], "has no bundle.json"),
  ]
  for extra, fragment in cases:
    out = str(tmp_path / "o.mp4")
    argv = ["--checkpoint", tiny_bundle, "--out", out, "--quiet"] + extra
    assert cli.run(sample.main, sample.parser(), argv) == 2, extra
    assert fragment in capsys.readouterr().err, extra
    assert not os.path.exists(out)
  assert not [f for f in os.listdir(tmp_path) if ".partial" in f]
  # No face: with the face detector (the faces extra) a one-line error and nothing written; with
  # --crop none (or without the extra) a warning, not a crash.
  out = str(tmp_path / "noface.mp4")
  noface = ["--checkpoint", tiny_bundle, "--image", str(tmp_path / "noface.png"), "--out", out, "--steps", "1",
            "--quiet"]
  if faces.available():
    assert cli.run(sample.main, sample.parser(), noface) == 2
    assert "noface.png': no face found" in capsys.readouterr().err and not os.path.exists(out)
  assert cli.run(sample.main, sample.parser(), noface + ["--crop", "none"]) == 0
  assert "warning:" in capsys.readouterr().err and os.path.exists(out)
