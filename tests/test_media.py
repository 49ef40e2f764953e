"""Media I/O: round trips, odd-but-valid inputs, and bad inputs with clear errors."""

import io
import os
import wave

import av
import numpy as np
import pytest
from PIL import Image

from vasa_jax import media
from vasa_jax.errors import UserError

SR = 16000
EXAMPLES = os.path.join(os.path.dirname(media.__file__), "examples")


def _tone(seconds, rate=SR, freq=220.0, amp=0.3):
  t = np.arange(int(seconds * rate)) / rate
  return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _write_wav(path, samples_NxC, rate, sampwidth=2):
  samples_NxC = np.asarray(samples_NxC)
  if samples_NxC.ndim == 1:
    samples_NxC = samples_NxC[:, None]
  pcm = np.clip(samples_NxC * 32767, -32768, 32767).astype("<i2")
  with wave.open(str(path), "wb") as w:
    w.setnchannels(samples_NxC.shape[1])
    w.setsampwidth(sampwidth)
    w.setframerate(rate)
    w.writeframes(pcm.tobytes())
  return str(path)


def _encode_audio(path, codec, rate, seconds=2.0):
  x = _tone(seconds, rate)
  with av.open(str(path), "w") as c:
    s = c.add_stream(codec, rate=rate, layout="mono")
    for i in range(0, x.size, 1024):
      f = av.AudioFrame.from_ndarray(np.ascontiguousarray(x[None, i:i + 1024]), format="flt", layout="mono")
      f.sample_rate, f.pts = rate, i
      c.mux(s.encode(f))
    c.mux(s.encode(None))
  return str(path)


def _no_leftovers(folder):
  return [f for f in os.listdir(folder) if ".partial" in f]


# ----------------------------------------------------------------- video round trip


def test_mp4_round_trip_frames_size_and_audio_length(tmp_path):
  T, fps = 37, 25
  rng = np.random.default_rng(0)
  frames = rng.integers(0, 256, (T, 48, 80, 3), dtype=np.uint8)
  audio = _tone(T / fps + 0.3)  # Longer than the video: must be trimmed to it.
  out = str(tmp_path / "clip.mp4")
  assert media.write_video(out, frames, fps, audio, metadata={"comment": "vasa_jax test"}) == out
  got, got_fps, got_audio = media.read_video(out)
  assert got.shape == frames.shape
  assert got_fps == fps
  assert abs(got_audio.size / SR - T / fps) <= 1 / fps
  assert media.read_metadata(out)["comment"] == "vasa_jax test"
  # H.264 at crf 18 keeps a smooth image close to the original.
  smooth = np.tile(np.linspace(0, 255, 80, dtype=np.uint8)[None, None, :, None], (T, 48, 1, 3))
  media.write_video(out, smooth, fps)
  back, _, no_audio = media.read_video(out)
  assert no_audio is None
  assert np.abs(back.astype(int) - smooth).mean() < 3
  assert _no_leftovers(tmp_path) == []


def test_streaming_writer_equals_batch_writer_and_is_atomic(tmp_path):
  frames = np.random.default_rng(1).integers(0, 256, (10, 32, 32, 3), dtype=np.uint8)
  out = tmp_path / "stream.mp4"
  w = media.VideoWriter(str(out), 25)
  for f in frames[:5]:
    w.write(f)
  assert not out.exists()  # Nothing under the final name until close.
  for f in frames[5:]:
    w.write(f)
  w.close(_tone(0.4))
  assert out.exists() and media.read_video(str(out))[0].shape[0] == 10


def test_failed_write_leaves_nothing(tmp_path):
  out = tmp_path / "bad.mp4"

  def frames():
    yield np.zeros((32, 32, 3), np.uint8)
    yield np.zeros((16, 16, 3), np.uint8)  # Size changes mid-stream.

  with pytest.raises(ValueError, match="frame size changed"):
    media.write_video(str(out), frames(), 25, _tone(0.1))
  assert os.listdir(tmp_path) == []
  with pytest.raises(ValueError, match="even"):
    media.write_video(str(out), np.zeros((2, 33, 32, 3), np.uint8), 25)
  assert os.listdir(tmp_path) == []


def test_write_to_missing_folder_or_wrong_suffix(tmp_path):
  with pytest.raises(UserError, match="does not exist"):
    media.write_video(str(tmp_path / "nope" / "a.mp4"), np.zeros((1, 32, 32, 3), np.uint8), 25)
  with pytest.raises(UserError, match="must end with .mp4"):
    media.write_video(str(tmp_path / "a.avi"), np.zeros((1, 32, 32, 3), np.uint8), 25)
  with pytest.raises(UserError, match="is a directory"):
    media.write_video(str(tmp_path), np.zeros((1, 32, 32, 3), np.uint8), 25)


# ----------------------------------------------------------------- images


def test_example_portrait_loads():
  img = media.load_image(os.path.join(EXAMPLES, "portrait.jpg"))
  assert img.dtype == np.float32 and img.shape == (256, 256, 3)
  assert 0.0 <= img.min() and img.max() <= 1.0


@pytest.mark.parametrize("mode", ["L", "P", "RGBA", "LA", "CMYK", "I;16"])
def test_image_modes_become_rgb(tmp_path, mode):
  base = Image.new("RGB", (80, 64), (200, 100, 50))
  if mode == "I;16":
    im = Image.fromarray(np.full((64, 80), 65535 // 2, np.uint16))
    path = tmp_path / "deep.png"
  elif mode == "CMYK":
    im = base.convert("CMYK")
    path = tmp_path / "cmyk.jpg"
  else:
    im = base.convert(mode)
    path = tmp_path / f"img_{mode}.png"
  im.save(path)
  img = media.load_image(str(path))
  assert img.shape == (64, 80, 3) and img.dtype == np.float32
  if mode == "CMYK":  # Colours survive the CMYK trip (JPEG loses a little).
    assert np.allclose(img.mean(axis=(0, 1)), np.array([200, 100, 50]) / 255, atol=0.04)
  if mode == "I;16":
    assert abs(img.mean() - 0.5) < 0.01


def test_rgba_is_composited_on_neutral_background(tmp_path):
  rgba = np.zeros((64, 64, 4), np.uint8)
  rgba[:, :32] = (255, 0, 0, 255)  # Left half opaque red, right half fully transparent.
  Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
  img = media.load_image(str(tmp_path / "a.png"))
  assert np.allclose(img[0, 0], [1, 0, 0])
  assert np.allclose(img[0, 63], np.array(media.NEUTRAL_BACKGROUND) / 255)


def test_exif_orientation_is_applied(tmp_path):
  im = Image.new("RGB", (100, 70), (0, 0, 0))
  im.paste((255, 255, 255), (0, 0, 10, 70))  # A white stripe on the left edge.
  exif = Image.Exif()
  exif[0x0112] = 6  # "Rotate 90 CW to display".
  im.save(tmp_path / "rot.jpg", exif=exif, quality=95)
  img = media.load_image(str(tmp_path / "rot.jpg"))
  assert img.shape == (100, 70, 3)  # Displayed upright: portrait orientation.
  assert img[:8].mean() > 0.8  # The stripe is now along the top.


def test_large_image_is_downscaled(tmp_path):
  Image.new("RGB", (3000, 1500), (10, 20, 30)).save(tmp_path / "big.png")
  img = media.load_image(str(tmp_path / "big.png"), max_side=1024)
  assert img.shape == (512, 1024, 3)


# ----------------------------------------------------------------- audio


@pytest.mark.parametrize("codec,suffix,rate", [("libmp3lame", "mp3", 44100), ("aac", "m4a", 22050),
                                               ("libopus", "ogg", 48000), ("flac", "flac", 16000)])
def test_compressed_audio_formats_decode(tmp_path, codec, suffix, rate):
  path = _encode_audio(tmp_path / f"a.{suffix}", codec, rate, seconds=2.0)
  audio = media.load_audio(path)
  assert audio.dtype == np.float32 and audio.ndim == 1
  assert abs(audio.size / SR - 2.0) < 0.1


def test_example_speech_and_multichannel_high_rate(tmp_path):
  speech = media.load_audio(os.path.join(EXAMPLES, "speech.wav"))
  assert speech.size == 4 * SR and np.abs(speech).max() > 0.1
  # 8 channels at 96 kHz: downmixed to mono, resampled, kept in range.
  x = _tone(1.5, 96000)
  path = _write_wav(tmp_path / "surround.wav", np.tile(x[:, None], (1, 8)), 96000)
  audio = media.load_audio(path)
  assert audio.size == int(1.5 * SR) and np.abs(audio).max() <= 1.0
  assert np.abs(audio).max() > 0.1


def test_video_audio_track_is_accepted(tmp_path):
  out = str(tmp_path / "v.mp4")
  media.write_video(out, np.zeros((25, 32, 32, 3), np.uint8), 25, _tone(1.0))
  assert abs(media.load_audio(out).size - SR) <= SR // 25


# ----------------------------------------------------------------- bad inputs


def _text_file(tmp_path, name):
  p = tmp_path / name
  p.write_text("this is not media\n")
  return str(p)


def _bad_inputs(tmp_path):
  """(description, callable, expected message fragment)."""
  Image.new("RGB", (1, 1)).save(tmp_path / "tiny.png")
  Image.new("RGB", (80, 80)).save(tmp_path / "anim.gif")
  png = io.BytesIO()
  Image.fromarray(np.random.default_rng(0).integers(0, 256, (128, 128, 3), dtype=np.uint8)).save(png, "PNG")
  (tmp_path / "cut.png").write_bytes(png.getvalue()[:len(png.getvalue()) // 2])
  (tmp_path / "empty.wav").write_bytes(b"")
  _write_wav(tmp_path / "nosamples.wav", np.zeros((0, 1)), SR)
  _write_wav(tmp_path / "silent.wav", np.zeros(SR), SR)
  mp3 = open(_encode_audio(tmp_path / "full.mp3", "libmp3lame", 44100, seconds=3.0), "rb").read()
  (tmp_path / "cut.mp3").write_bytes(mp3[:len(mp3) // 2])
  wav = open(_write_wav(tmp_path / "full.wav", _tone(2.0), SR), "rb").read()
  (tmp_path / "cut.wav").write_bytes(wav[:len(wav) // 3])
  _write_wav(tmp_path / "long.wav", _tone(3.0), SR)
  media.write_video(str(tmp_path / "mute.mp4"), np.zeros((5, 32, 32, 3), np.uint8), 25)
  (tmp_path / "folder.png").mkdir()
  p = lambda name: str(tmp_path / name)  # noqa: E731
  return [
      ("text named .png", lambda: media.load_image(_text_file(tmp_path, "fake.png")), "not a readable image"),
      ("1x1 image", lambda: media.load_image(p("tiny.png")), "at least 64 px"),
      ("gif", lambda: media.load_image(p("anim.gif")), "is GIF"),
      ("truncated png", lambda: media.load_image(p("cut.png")), "truncated or corrupt"),
      ("directory as image", lambda: media.load_image(p("folder.png")), "is a directory"),
      ("missing image", lambda: media.load_image(p("missing.jpg")), "does not exist"),
      ("empty wav", lambda: media.load_audio(p("empty.wav")), "is empty"),
      ("wav with no samples", lambda: media.load_audio(p("nosamples.wav")), "no audio samples"),
      ("silent wav", lambda: media.load_audio(p("silent.wav")), "is silent"),
      ("truncated mp3", lambda: media.load_audio(p("cut.mp3")), "truncated"),
      ("truncated wav", lambda: media.load_audio(p("cut.wav")), "truncated"),
      ("text named .wav", lambda: media.load_audio(_text_file(tmp_path, "fake.wav")), "cannot be decoded"),
      ("too long", lambda: media.load_audio(p("long.wav"), max_seconds=2.0), "limit is 0:02"),
      ("video without sound", lambda: media.load_audio(p("mute.mp4")), "no audio track"),
      ("missing audio", lambda: media.load_audio(p("missing.wav")), "does not exist"),
  ]


def test_bad_inputs_give_one_line_errors_and_no_output(tmp_path):
  cases = _bad_inputs(tmp_path)
  before = set(os.listdir(tmp_path))
  assert len(cases) >= 12
  for name, fn, fragment in cases:
    with pytest.raises(UserError) as info:
      fn()
    message = str(info.value)
    assert fragment in message, (name, message)
    assert "\n" not in message, name
    assert str(tmp_path) in message or "fake" in message, (name, message)  # Names the file.
  new = set(os.listdir(tmp_path)) - before - {"fake.png", "fake.wav"}
  assert new == set()


# ----------------------------------------------------------------- python -m vasa_jax.media


def test_media_command_reports_files_as_they_are_then_whether_they_are_fine(tmp_path, capsys):
  from vasa_jax import cli
  stereo = _write_wav(tmp_path / "stereo.wav", np.tile(_tone(3.0, 44100)[:, None], (1, 2)), 44100)
  image = os.path.join(EXAMPLES, "portrait.jpg")
  assert cli.run(media._main, media._parser(), ["--image", image, "--audio", stereo]) == 0
  out = capsys.readouterr().out.splitlines()
  assert out[0] == f"image {image}: JPEG 256x256, mode RGB"
  assert out[1] == f"audio {stereo}: pcm_s16le, 44100 Hz, 2 channels (stereo), 3.00 s"   # Not the converted audio.
  assert out[2].startswith("fine for sampling")
  assert out[3].startswith("  portrait: 256x256 RGB") and out[4].startswith("  audio: 3.00 s of 16 kHz mono")
  # A file that is there but unusable: described, then one error line and no "fine".
  silent = _write_wav(tmp_path / "silent.wav", np.zeros(SR), SR)
  assert cli.run(media._main, media._parser(), ["--audio", silent]) == 2
  captured = capsys.readouterr()
  assert captured.out == f"audio {silent}: pcm_s16le, 16000 Hz, 1 channel (mono), 1.00 s\n"
  assert captured.err.startswith("error: audio") and "is silent" in captured.err
