"""The synthetic world: determinism, and labels that agree with pixels and audio."""

import dataclasses

import numpy as np
import pytest

from vasa_jax import cli
from vasa_jax.data import synthetic as syn
from vasa_jax.data import synthetic_head as head
from vasa_jax.errors import UserError

RES = 96


def _pose(**kw):
  m = {k: 0.0 for k in syn.LABEL_NAMES}
  m["distance"] = 1.0
  m.update(kw)
  return m


def _render(ident_id=3, res=RES, ident=None, **kw):
  return head.render_frame(ident or syn.identity_params(ident_id), _pose(**kw), res).astype(np.int32)


def _background(ident):
  return (head._background(ident, RES).reshape(RES, RES, 3) ** (1 / 1.15) * 255 + 0.5).astype(np.int32)


def _corr(a, b):
  return float(np.corrcoef(a, b)[0, 1])


def test_same_seed_same_bytes():
  a = syn.make_clip(7, 123, 6, 64)
  b = syn.make_clip(7, 123, 6, 64)
  assert a["frames"].dtype == np.uint8 and a["frames"].shape == (6, 64, 64, 3)
  assert a["frames"].tobytes() == b["frames"].tobytes()
  assert a["audio"].tobytes() == b["audio"].tobytes()
  for k in syn.LABEL_NAMES:
    assert a["labels"][k].dtype == np.float32 and a["labels"][k].shape == (6,)
    assert a["labels"][k].tobytes() == b["labels"][k].tobytes()
  assert a["audio"].shape == (6 * 640,) and a["audio"].dtype == np.float32
  assert np.abs(a["audio"]).max() <= 1.0
  c = syn.make_clip(7, 124, 6, 64)
  assert c["audio"].tobytes() != a["audio"].tobytes()


def test_clip_schema():
  c = syn.make_clip(42, 1234, 4, 64, "benchmark")
  assert c["clip_id"] == "syn-id00042-a001234"
  assert c["identity"] == 42 and c["source"] == "synthetic"
  assert c["fps"] == 25 and c["sample_rate"] == 16000
  attrs = c["attrs"]
  assert attrs["gaze"].shape == (2,) and attrs["gaze"].dtype == np.float32
  assert attrs["distance"].shape == () and attrs["distance"].dtype == np.float32
  assert 0 <= attrs["emotion"] < len(syn.EMOTIONS)
  assert attrs["audio_seed"] == 1234 and attrs["split"] == "benchmark"


def test_mouth_open_shows_dark_interior():
  def dark_in_mouth(img):
    box = img[int(RES * 0.58):int(RES * 0.74), int(RES * 0.38):int(RES * 0.62)]
    return int((box.max(-1) < 0.4 * np.median(box.max(-1))).sum())
  closed, opened = _render(mouth_open=0.0), _render(mouth_open=0.9)
  assert dark_in_mouth(opened) > dark_in_mouth(closed) + 15


def _nose_x(yaw):
  """Image column of the nose: where a bigger nose changes pixels."""
  ident = syn.identity_params(3)
  big = dataclasses.replace(ident, nose_size=ident.nose_size * 1.4)
  diff = np.abs(_render(ident=ident, yaw=yaw) - _render(ident=big, yaw=yaw)).sum(-1) > 20
  cols = np.nonzero(diff)[1]
  assert len(cols) > 5
  return cols.mean()


def test_positive_yaw_moves_nose_to_viewers_left():
  centre = _nose_x(0.0)
  assert abs(centre - RES / 2) < 4
  assert _nose_x(0.5) < centre - 5
  assert _nose_x(-0.5) > centre + 5


def test_nose_occludes_far_cheek():
  # On a strong turn the nose covers pixels that were skin, so the changed area
  # appears on the side the face turns toward.
  assert _nose_x(0.8) < _nose_x(0.4)


def _eye_pixels(img, ident):
  """Pixels whose chromaticity is nearer the eye white or iris than the skin."""
  chroma = lambda c: np.asarray(c, np.float64) / (np.sum(c, -1, keepdims=True) + 1e-6)
  rows, cols = slice(int(RES * 0.35), int(RES * 0.5)), slice(int(RES * 0.28), int(RES * 0.72))
  on_head = (np.abs(img - _background(ident)).sum(-1) > 12)[rows, cols]
  box = chroma(img[rows, cols].astype(np.float64))
  d = lambda c: np.linalg.norm(box - chroma(np.asarray(c)), axis=-1)
  eye = np.minimum(d((1.0, 0.98, 0.95)), d(ident.eye_colour))
  return int(((eye < d(ident.skin)) & on_head).sum())


@pytest.mark.parametrize("ident_id", [3, 4])
def test_blink_closes_eyes(ident_id):
  ident = syn.identity_params(ident_id)
  opened = _eye_pixels(_render(ident=ident, blink=0.0), ident)
  half = _eye_pixels(_render(ident=ident, blink=0.5), ident)
  closed = _eye_pixels(_render(ident=ident, blink=1.0), ident)
  assert opened > 20 and opened > half > closed and closed < opened // 4


def test_closer_head_is_bigger():
  bg = _background(syn.identity_params(3))

  def area(distance):
    return int((np.abs(_render(distance=distance) - bg).sum(-1) > 12).sum())
  assert area(0.8) > 1.2 * area(1.0) > 1.2 * 1.2 * area(1.25) / 1.2


def test_audio_energy_drives_mouth_with_lead():
  lead = syn.MOUTH_LEAD_S * syn.FPS  # 1.5 frames: the mouth moves first
  for seed in (1, 2, 3):
    c = syn.make_clip(0, seed, 200, 64, render=False)
    rms = np.sqrt((c["audio"].reshape(200, -1) ** 2).mean(1))
    mouth = c["labels"]["mouth_open"]
    for lag in (int(np.floor(lead)), int(np.ceil(lead))):
      assert _corr(mouth[:200 - lag], rms[lag:]) > 0.5
    # The mouth leads: correlation is higher with later audio than with earlier audio.
    assert _corr(mouth[:-2], rms[2:]) > _corr(mouth[2:], rms[:-2])


def test_vowels_shape_the_mouth():
  _, track = syn.synth_speech(5, 250)
  # Wide /i/ and round /u/ never peak together.
  both = (track["width"] > 0.5) & (track["round"] > 0.5)
  assert both.sum() == 0 and (track["width"] > 0.5).any() and (track["round"] > 0.5).any()


def test_prosody_drives_nods_and_brows():
  c = syn.make_clip(0, 9, 250, 64, render=False)
  _, track = syn.synth_speech(9, 250)
  assert _corr(track["accent"], c["labels"]["brow"]) > 0.5
  assert _corr(track["accent"], c["labels"]["pitch"]) < -0.2


def test_cross_identity_uses_exact_motion():
  src = syn.make_clip(10, 55, 4, 64)
  x = syn.make_cross_clip(11, src)
  assert x["identity"] == 11 and x["attrs"]["motion_source"] == src["clip_id"]
  for k in syn.LABEL_NAMES:
    np.testing.assert_array_equal(x["labels"][k], src["labels"][k])
  np.testing.assert_array_equal(x["audio"], src["audio"])
  assert x["frames"].shape == src["frames"].shape
  assert np.abs(x["frames"].astype(int) - src["frames"]).mean() > 10
  # Same identity and motion gives the same pixels back.
  same = syn.make_cross_clip(10, src)
  np.testing.assert_array_equal(same["frames"], src["frames"])


def test_identities_differ():
  imgs = [_render(i, res=64) for i in range(12)]
  for i in range(len(imgs)):
    for j in range(i):
      assert np.abs(imgs[i] - imgs[j]).mean() > 3


def test_motion_from_audio_tracks_ground_truth_mouth():
  c = syn.make_clip(0, 21, 250, 64, render=False)
  est = syn.motion_from_audio(c["audio"], fps=25, seed=0)
  assert set(est) == set(syn.LABEL_NAMES) and len(est["mouth_open"]) == 250
  assert _corr(est["mouth_open"], c["labels"]["mouth_open"]) > 0.6
  with pytest.raises(UserError):
    syn.motion_from_audio(np.zeros(10, np.float32))


def test_bad_inputs_raise_user_error():
  with pytest.raises(UserError):
    syn.make_clip(0, 0, 4, 32)
  with pytest.raises(UserError):
    syn.make_clip(0, 0, 0, 64)
  with pytest.raises(UserError):
    syn.make_motion(0, 4, emotion="bored", speech_track=syn.synth_speech(0, 4)[1])


def test_cli_bad_flag_exits_2(capsys):
  assert cli.run(syn.main, syn._parser(), ["--out", "/tmp/x", "--resolution", "1000"]) == 2
  assert capsys.readouterr().err.startswith("error: resolution")
  assert cli.run(syn.main, syn._parser(), []) == 2


def test_corpus_splits_hold_out_identities_and_audio(tmp_path):
  jobs = syn.corpus_jobs(20, 2, seed=0)
  train = [j for j in jobs if j[0] == "train"]
  bench = [j for j in jobs if j[0] == "benchmark"]
  cross = [j for j in jobs if j[0] == "benchmark_cross"]
  assert {j[1] for j in bench} == {18, 19} and not {j[1] for j in train} & {18, 19}
  assert all(j[2] < syn.BENCHMARK_AUDIO_BASE for j in train)
  assert all(j[2] >= syn.BENCHMARK_AUDIO_BASE for j in bench)
  assert len(cross) == len(bench) and all(j[1] != j[3] for j in cross)


def test_write_corpus(tmp_path):
  from vasa_jax.data import records
  n = syn.write_corpus(tmp_path / "c", 20, 1, 2, 64, seed=0, workers=1, progress=False)
  corpus = records.open_corpus(tmp_path / "c")
  assert n == 22
  assert set(corpus.splits) == {"train", "benchmark", "benchmark_cross"}
  src = corpus.source("benchmark_cross")
  clip = records.decode_clip(src[0])
  assert clip["attrs"]["motion_source"].startswith("syn-id")
  assert clip["frames"].shape == (2, 64, 64, 3)


def test_rotation_matches_model_warp():
  warp = pytest.importorskip("vasa_jax.models.warp")
  for ypr in [(0.3, -0.2, 0.1), (-0.7, 0.4, -0.3)]:
    np.testing.assert_allclose(head.rotation(*ypr), np.asarray(warp.rotation_matrix(*map(np.float32, ypr))),
                               atol=1e-6)


def test_speak_writes_a_watermarked_video_with_provenance(tmp_path):
  from vasa_jax import media, watermark
  out = str(tmp_path / "speaker.mp4")
  syn.speak(syn.EXAMPLE_SPEECH, out, identity_id=3, resolution=128, seed=0)
  frames, fps, audio = media.read_video(out)
  assert len(frames) == 100 and fps == 25 and abs(audio.size - 4 * 16000) <= 640
  meta = media.read_metadata(out)
  assert meta["ai_generated"] == "true" and meta["watermark"] == "on"
  found = watermark.detect(out)
  assert found.found and f"{found.payload:016x}" == meta["watermark_payload"]


def test_existing_outputs_are_kept_unless_overwrite_is_given(tmp_path, capsys):
  sheet, strip_png = tmp_path / "sheet.png", tmp_path / "strip.png"
  strip_png.write_bytes(b"mine")
  # Checked before any work: the contact sheet (first in line) is not written either.
  argv = ["--contact-sheet", str(sheet), "--strip", str(strip_png), "--resolution", "64", "--frames", "4"]
  assert cli.run(syn.main, syn._parser(), argv) == 2
  assert "already exists; pass --overwrite" in capsys.readouterr().err
  assert strip_png.read_bytes() == b"mine" and not sheet.exists()
  assert cli.run(syn.main, syn._parser(), argv + ["--overwrite"]) == 0
  assert strip_png.read_bytes()[:4] == b"\x89PNG" and sheet.exists()
