"""Watermark: ECC, embed/detect round trip on a real portrait held still, attacks through real H.264,
false positives on clean clips, metadata, verify CLI."""

import importlib.util
import os

import jax.numpy as jnp
import numpy as np
import pytest

from vasa_jax import cli, ecc, media, provenance, verify, watermark as wm

_BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks",
                      "watermark_robustness.py")
_spec = importlib.util.spec_from_file_location("watermark_robustness", _BENCH)
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)  # The attacks live with the benchmark; the tests run them smaller.

PAYLOAD = wm.make_payload("b026f98220889c71", 4242)


@pytest.fixture(scope="module")
def marked():
  """The bundled real portrait held still for 2 s at 256^2, watermarked, as uint8 (and the clean frames)."""
  clean = bench.portrait_frames(256, 50)
  return bench._u8(wm.Watermarker(PAYLOAD).embed(jnp.asarray(clean))), clean


def test_payload_fields_and_ecc_corrects_errors():
  fields = wm.parse_payload(PAYLOAD)
  assert fields["generation_id"] == 4242 and fields["checkpoint_tag"] == "b026f9"
  signs = 2.0 * ecc.encode(PAYLOAD) - 1.0
  noisy = signs.copy()
  noisy[::9] *= -1  # 11% of coded bits flipped.
  assert ecc.decode(noisy)[0] == PAYLOAD
  assert ecc.decode(np.random.default_rng(0).normal(size=signs.size))[0] is None


def test_round_trip_psnr_and_jit_shapes(marked):
  frames_u8, clean = marked
  assert frames_u8.shape == clean.shape
  psnr = 10 * np.log10(1.0 / np.mean((frames_u8 / 255.0 - bench._u8(clean) / 255.0) ** 2))
  assert psnr >= 38.0
  result = wm.detect(frames_u8)
  assert result.found and result.payload == PAYLOAD and result.frames_used == 50
  assert result.crop == (0.0, 0.0, 1.0, 1.0) and result.false_match == pytest.approx(2.0 ** -24)


@pytest.mark.parametrize("attack", ["h264 crf23", "h264 crf28", "half size", "crop 10%", "brightness/contrast",
                                    "15 fps", "720p crf28 chain"])
def test_still_real_portrait_survives_attack(marked, attack):
  frames, fps = bench.attack(attack, marked[0])
  result = wm.detect(frames, fps=fps)
  assert result.found and result.payload == PAYLOAD, (attack, result)


def test_still_real_portrait_survives_half_size_plus_crf28():
  # The case: a real photo animated with a still head, re-encoded at half size, crf 28.
  clean = bench.portrait_frames(512, 50)
  frames, fps = bench.attack("half + crf28", bench._u8(wm.Watermarker(PAYLOAD).embed(jnp.asarray(clean))))
  result = wm.detect(frames, fps=fps)
  assert frames.shape[1:3] == (256, 256) and result.found and result.payload == PAYLOAD, result


def test_trimmed_start_and_time_stamps():
  clean = bench.portrait_frames(128, 60)
  marked = bench._u8(wm.Watermarker(PAYLOAD).embed(jnp.asarray(clean)))
  # A copy that starts 0.36 s in, with time stamps reset to 0: the wave's phase is unknown to the detector.
  assert wm.detect(marked[9:]).payload == PAYLOAD
  # The same frames read at the wrong rate (every other frame, at 25 fps) lose the wave; with their times they do not.
  assert wm.detect(marked[::2], times=np.arange(30) * 2 / 25).payload == PAYLOAD


def test_no_false_positives_on_clean_clips(marked):
  stats = bench.false_positives(36, resolution=64, frames=50, seed=1)
  assert stats["false_positives"] == 0
  # A clean still photo, through H.264: not found, and no probability is reported for it.
  for clip in (bench._u8(marked[1]), bench.h264(bench._u8(marked[1]), 28)):
    result = wm.detect(clip)
    assert not result.found and result.payload is None and result.false_match is None
  assert not wm.detect(bench._u8(marked[1][:1])).found                     # A single frame: nothing to read.


def test_metadata_round_trip_and_verify_cli(tmp_path, marked, capsys):
  tags = provenance.provenance_metadata("b026f98220889c71", PAYLOAD, watermark=True)
  path = str(tmp_path / "out.mp4")
  media.write_video(path, marked[0], 25, metadata=tags)
  read = media.read_metadata(path)
  assert read["generator"] == "vasa_jax" and read["ai_generated"] == "true"
  assert read["watermark_payload"] == f"{PAYLOAD:016x}" and read["watermark"] == "on"

  assert cli.run(verify._main, verify._parser(), [path]) == 0
  out = capsys.readouterr().out
  assert "watermark: FOUND" in out and "checkpoint b026f9..." in out and "1 in 16,777,216" in out
  assert "checkpoint b026f98220889c71 matches the watermark's checkpoint b026f9" in out
  clean = str(tmp_path / "clean.mp4")
  media.write_video(clean, bench._u8(marked[1]), 25,
                    metadata=provenance.provenance_metadata("test-checkpoint", None, watermark=False))
  assert media.read_metadata(clean)["watermark"].startswith("off")
  assert cli.run(verify._main, verify._parser(), [clean]) == 1
  out = capsys.readouterr().out
  assert "watermark: not found" in out and "confidence" not in out and "p<" not in out
  assert cli.run(verify._main, verify._parser(), [str(tmp_path / "missing.mp4")]) == 2
  corrupt = tmp_path / "corrupt.mp4"
  corrupt.write_bytes(b"not a video at all" * 10)
  assert cli.run(verify._main, verify._parser(), [str(corrupt)]) == 2
  assert "error:" in capsys.readouterr().err


def test_watermark_off_needs_explicit_flag():
  with pytest.raises(TypeError):
    provenance.provenance_metadata("c", 1)  # pylint: disable=missing-kwoa
  with pytest.raises(ValueError):
    provenance.provenance_metadata("c", None, watermark=True)


def test_visible_label_darkens_only_the_corner():
  frames = jnp.full((1, 128, 128, 3), 0.5)
  out = np.asarray(provenance.add_label(frames))
  changed = np.abs(out - 0.5).max(-1)[0] > 1e-3
  assert changed[110:, 60:].any() and not changed[:100].any() and not changed[:, :50].any()
