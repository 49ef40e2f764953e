"""Watermark: ECC, embed/detect round trip, attacks through real H.264, false positives, metadata, verify CLI."""

import importlib.util
import os

import jax.numpy as jnp
import numpy as np
import pytest

from vasa_jax import cli, ecc, media, provenance, verify, watermark as wm
from vasa_jax.data import synthetic

_BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks",
                      "watermark_robustness.py")
_spec = importlib.util.spec_from_file_location("watermark_robustness", _BENCH)
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)  # The attacks live with the benchmark; the tests run them smaller.

PAYLOAD = wm.make_payload("test-checkpoint", 4242)


@pytest.fixture(scope="module")
def marked():
  """12 frames of a synthetic talking head at 192^2, watermarked, as uint8."""
  clean = synthetic.make_clip(3, 5, 12, 192, split="train")["frames"].astype(np.float32) / 255.0
  out = wm.Watermarker(PAYLOAD).embed(jnp.asarray(clean))
  return bench._u8(out), clean


def test_payload_fields_and_ecc_corrects_errors():
  fields = wm.parse_payload(PAYLOAD)
  assert fields["generation_id"] == 4242
  assert fields["checkpoint_tag"] == f"{wm.checkpoint_tag('test-checkpoint'):06x}"
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
  assert result.found and result.payload == PAYLOAD and result.frames_used == 12
  assert result.crop == (0.0, 0.0, 1.0, 1.0)


@pytest.mark.parametrize("attack", ["h264 crf23", "h264 crf28", "half size", "crop 10%", "brightness/contrast",
                                    "15 fps"])
def test_survives_attack(marked, attack):
  result = wm.detect(bench.ATTACKS[attack](marked[0]))
  assert result.found and result.payload == PAYLOAD, (attack, result)


def test_no_false_positives_on_clean_clips():
  stats = bench.false_positives(90, resolution=64, frames=2, seed=1)
  assert stats["false_positives"] == 0


def test_metadata_round_trip_and_verify_cli(tmp_path, marked, capsys):
  tags = provenance.provenance_metadata("test-checkpoint", PAYLOAD, watermark=True)
  path = str(tmp_path / "out.mp4")
  media.write_video(path, marked[0], 25, metadata=tags)
  read = media.read_metadata(path)
  assert read["generator"] == "vasa_jax" and read["ai_generated"] == "true"
  assert read["watermark_payload"] == f"{PAYLOAD:016x}" and read["watermark"] == "on"

  assert cli.run(verify._main, verify._parser(), [path]) == 0
  assert "FOUND" in capsys.readouterr().out
  clean = str(tmp_path / "clean.mp4")
  media.write_video(clean, bench._u8(marked[1]), 25,
                    metadata=provenance.provenance_metadata("test-checkpoint", None, watermark=False))
  assert media.read_metadata(clean)["watermark"].startswith("off")
  assert cli.run(verify._main, verify._parser(), [clean]) == 1
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
