"""Image, audio and video I/O with input validation and clear errors.

Every loader either returns well-formed data or raises `UserError` with one line
that names the file, what was wrong and what is accepted. Writers produce the
file under a temporary name and rename it at the end, so a failure never leaves
a half-written output behind.
"""

import contextlib
import fractions
import io
import os
import tempfile
from typing import Iterable, Iterator

import av
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from vasa_jax import cli, interrupt, paths
from vasa_jax.errors import UserError

IMAGE_FORMATS = {"PNG", "JPEG", "MPO", "WEBP", "BMP"}
IMAGE_ACCEPTED = "a PNG, JPEG, WebP or BMP image"
AUDIO_ACCEPTED = "a wav, flac, mp3, m4a/aac or ogg/opus file, or a video with an audio track"
VIDEO_ACCEPTED = "an mp4/mov/mkv/webm video"
MIN_IMAGE_SIDE = 64
MAX_IMAGE_SIDE = 2048
SAMPLE_RATE = 16000
MAX_AUDIO_SECONDS = 600.0
# Peak below -60 dBFS: nothing a speech model could use.
SILENCE_PEAK = 10 ** (-60 / 20)
# The bundled default portrait, a frame of the synthetic corpus: already framed as the model was trained.
DEMO_IMAGE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "examples", "synthetic_portrait.png")
# RGBA portraits are composited on mid grey, which biases neither skin nor hair.
NEUTRAL_BACKGROUND = (128, 128, 128)


def require_file(path: str, what: str, accepted: str) -> str:
  """Checks that `path` names an existing, readable, non-empty regular file."""
  if not path:
    raise UserError(f"no {what} given; expected {accepted}")
  path = os.fspath(path)
  if not os.path.exists(path):
    raise UserError(f"{what} {path!r} does not exist; expected {accepted}")
  if os.path.isdir(path):
    raise UserError(f"{what} {path!r} is a directory, not a file; expected {accepted}")
  if not os.access(path, os.R_OK):
    raise UserError(f"{what} {path!r} is not readable (check its permissions)")
  if os.path.getsize(path) == 0:
    raise UserError(f"{what} {path!r} is empty (0 bytes); expected {accepted}")
  return path


def require_output_path(path: str, suffixes: tuple[str, ...], *, overwrite: bool = True) -> str:
  """Checks an output path: a known suffix and an existing, writable parent folder; with
  `overwrite=False`, also that no file of that name exists (the error names `--overwrite`)."""
  path = os.fspath(path)
  if os.path.isdir(path):
    raise UserError(f"output {path!r} is a directory; give a file name ending with {' or '.join(suffixes)}")
  if not path.lower().endswith(suffixes):
    raise UserError(f"output {path!r} must end with {' or '.join(suffixes)}")
  if not overwrite and os.path.lexists(path):
    raise UserError(f"output {path!r} already exists; pass --overwrite to replace it, or choose another name")
  parent = os.path.dirname(os.path.abspath(path))
  if not os.path.isdir(parent):
    raise UserError(f"output folder {parent!r} does not exist")
  if not os.access(parent, os.W_OK):
    raise UserError(f"output folder {parent!r} is not writable")
  return path


# --------------------------------------------------------------------------- images


def load_image(path: str, *, min_side: int = MIN_IMAGE_SIDE, max_side: int = MAX_IMAGE_SIDE) -> np.ndarray:
  """Loads a portrait as float32 HxWx3 in [0, 1].

  RGBA is composited on a neutral background, grayscale/palette/CMYK become RGB,
  EXIF orientation is applied, 16-bit is reduced to 8, images with a side below
  `min_side` are refused and those with a side above `max_side` are downscaled.
  """
  require_file(path, "image", IMAGE_ACCEPTED)
  try:
    with Image.open(path) as im:
      fmt = im.format
      if fmt not in IMAGE_FORMATS:
        raise UserError(f"image {path!r} is {fmt or 'an unknown format'}; expected {IMAGE_ACCEPTED}")
      w, h = im.size
      if min(w, h) < min_side:
        raise UserError(f"image {path!r} is {w}x{h} pixels; a portrait needs at least {min_side} px on each side")
      if fmt in ("JPEG", "MPO") and max(w, h) > 2 * max_side:
        im.draft("RGB", (max_side, max_side))  # Let libjpeg decode at a reduced scale: far faster.
      im.load()
      im = ImageOps.exif_transpose(im)
      rgb = _to_rgb8(im)
  except UserError:
    raise
  except UnidentifiedImageError:
    raise UserError(f"image {path!r} is not a readable image (unknown or corrupt data); expected {IMAGE_ACCEPTED}") from None
  except Image.DecompressionBombError as e:
    raise UserError(f"image {path!r} is too large to decode safely ({e}); expected at most ~89 megapixels") from None
  except (OSError, SyntaxError, ValueError) as e:
    raise UserError(f"image {path!r} is truncated or corrupt ({_short(e)}); expected {IMAGE_ACCEPTED}") from None
  if max(rgb.size) > max_side:
    scale = max_side / max(rgb.size)
    rgb = rgb.resize((max(1, round(rgb.size[0] * scale)), max(1, round(rgb.size[1] * scale))), Image.LANCZOS)
  return np.asarray(rgb, dtype=np.float32) / 255.0


def _to_rgb8(im: Image.Image) -> Image.Image:
  """Any Pillow mode -> 8-bit RGB, compositing transparency on the neutral background."""
  if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
    arr = np.asarray(im, dtype=np.float64)
    peak = 65535.0 if im.mode.startswith("I;16") or arr.max() > 255 else 255.0
    arr = np.clip(arr / peak * 255.0 + 0.5, 0, 255).astype(np.uint8)
    im = Image.fromarray(arr, mode="L")
  if im.mode == "P" and "transparency" in im.info:
    im = im.convert("RGBA")
  if im.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
    rgba = im.convert("RGBA")
    background = Image.new("RGBA", rgba.size, NEUTRAL_BACKGROUND + (255,))
    return Image.alpha_composite(background, rgba).convert("RGB")
  return im.convert("RGB")


def save_image(path: str | os.PathLike, img: np.ndarray) -> None:
  """Writes an HxWx3 uint8 (or float in [0, 1]) image atomically (a local file, or one object on
  `gs://`); the format follows the suffix."""
  if img.dtype != np.uint8:
    img = np.clip(np.asarray(img, np.float32) * 255.0 + 0.5, 0, 255).astype(np.uint8)
  fmt = Image.registered_extensions().get(os.path.splitext(os.fspath(path))[1].lower(), "PNG")
  if not paths.is_local(path):  # An object appears whole when its upload completes.
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format=fmt)
    paths.path(path).write_bytes(buf.getvalue())
    return
  with atomic_output(path) as tmp:
    Image.fromarray(img).save(tmp, format=fmt)


# --------------------------------------------------------------------------- audio


def load_audio(path: str, *, sample_rate: int = SAMPLE_RATE, max_seconds: float = MAX_AUDIO_SECONDS,
               allow_silence: bool = False, limit_flag: str = "--max-audio-seconds") -> np.ndarray:
  """Decodes any audio file (or a video's audio track) to mono float32 at `sample_rate`.

  `limit_flag`: the calling command's flag that raises `max_seconds`, which a too-long
  clip's error names (`sample` takes --max-audio-seconds, `media` a config override).
  """
  require_file(path, "audio", AUDIO_ACCEPTED)
  _check_wav_size(path)
  try:
    container = av.open(path, metadata_errors="ignore")
  except (av.error.FFmpegError, UnicodeDecodeError) as e:
    raise UserError(f"audio {path!r} cannot be decoded: truncated, corrupt or not audio ({_short(e)}); "
                    f"expected {AUDIO_ACCEPTED}") from None
  with container:
    if not container.streams.audio:
      kinds = "a video without sound" if container.streams.video else "no audio stream"
      raise UserError(f"audio {path!r} has no audio track ({kinds}); expected {AUDIO_ACCEPTED}")
    stream = container.streams.audio[0]
    declared = _declared_seconds(container, stream)
    stream_seconds = (float(stream.duration * stream.time_base)
                      if stream.duration is not None and stream.time_base is not None else None)
    if declared is not None and declared > max_seconds:
      raise UserError(f"audio {path!r} is {_hms(declared)} long; the limit is {_hms(max_seconds)} "
                      f"(split it, or raise {limit_flag})")
    resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
    chunks, total = [], 0
    limit = int(max_seconds * sample_rate)
    try:
      for frame in container.decode(stream):
        for out in resampler.resample(frame):
          chunk = out.to_ndarray().reshape(-1)
          chunks.append(chunk)
          total += chunk.size
        if total > limit:
          raise UserError(f"audio {path!r} is longer than the limit of {_hms(max_seconds)} "
                          f"(split it, or raise {limit_flag})")
      for out in resampler.resample(None):
        chunks.append(out.to_ndarray().reshape(-1))
    except av.error.FFmpegError as e:
      raise UserError(f"audio {path!r} is truncated or corrupt ({_short(e)}); expected {AUDIO_ACCEPTED}") from None
  audio = np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)
  if audio.size == 0:
    raise UserError(f"audio {path!r} contains no audio samples; expected {AUDIO_ACCEPTED}")
  # A file whose header promises much more than decodes has lost its tail.
  if declared is not None and declared > 1.0 and audio.size < 0.9 * declared * sample_rate:
    raise UserError(f"audio {path!r} is truncated: its header says {declared:.2f} s but only "
                    f"{audio.size / sample_rate:.2f} s decode; re-export the file")
  if stream_seconds is not None:
    # Codecs pad their last block (AAC: to 1024 samples); the stream's duration says where sound ends.
    audio = audio[:max(1, int(round(stream_seconds * sample_rate)))]
  if not np.all(np.isfinite(audio)):
    raise UserError(f"audio {path!r} decodes to non-finite samples (corrupt data)")
  peak = float(np.max(np.abs(audio)))
  if peak > 1.0:  # Downmixing many channels sums them; keep the waveform in range.
    audio /= peak
  if not allow_silence and peak < SILENCE_PEAK:
    raise UserError(f"audio {path!r} is silent (peak below -60 dBFS); give a clip with speech")
  return audio


def _check_wav_size(path: str) -> None:
  """A WAV whose data chunk claims more bytes than the file holds lost its tail.

  FFmpeg silently decodes what is there, so this is checked from the RIFF header.
  """
  with open(path, "rb") as f:
    head = f.read(12)
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
      return
    size = os.fstat(f.fileno()).st_size
    while True:
      chunk = f.read(8)
      if len(chunk) < 8:
        raise UserError(f"audio {path!r} is truncated: its WAV header ends before the sample data")
      cid, csize = chunk[:4], int.from_bytes(chunk[4:], "little")
      if cid == b"data":
        available = size - f.tell()
        # 0 and 0xFFFFFFFF mean "unknown size" (written by streaming tools).
        if csize not in (0, 0xFFFFFFFF) and csize > available + 1:
          raise UserError(f"audio {path!r} is truncated: its header promises {csize} bytes of samples but "
                          f"only {available} are there; re-export the file")
        return
      f.seek(csize + (csize & 1), os.SEEK_CUR)


def _declared_seconds(container, stream) -> float | None:
  if stream.duration is not None and stream.time_base is not None:
    return float(stream.duration * stream.time_base)
  if container.duration is not None:
    return container.duration / av.time_base
  return None


def _hms(seconds: float) -> str:
  seconds = int(round(seconds))
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


# --------------------------------------------------------------------------- video


def _create_mode() -> int:
  umask = os.umask(0o022)
  os.umask(umask)
  return 0o666 & ~umask


_CREATE_MODE = _create_mode()


@contextlib.contextmanager
def atomic_output(path: str) -> Iterator[str]:
  """Yields a temporary path beside `path`; renames it to `path` only if the block succeeds.

  An interrupted command deletes the temporary file too (`interrupt`)."""
  path = os.fspath(path)
  folder = os.path.dirname(os.path.abspath(path))
  base, ext = os.path.splitext(os.path.basename(path))
  fd, tmp = tempfile.mkstemp(prefix=f".{base}.", suffix=f".partial{ext}", dir=folder)
  os.close(fd)
  with interrupt.removed_on_interrupt(tmp):
    try:
      yield tmp
      os.chmod(tmp, _CREATE_MODE)  # mkstemp makes 0600; outputs get the usual permissions.
      os.replace(tmp, path)
    except BaseException:
      with contextlib.suppress(FileNotFoundError):
        os.remove(tmp)
      raise


class VideoWriter:
  """Streams RGB frames into an H.264 mp4 and muxes audio as AAC at the end.

  Frames can be written as they are produced (the streaming sampler does); the
  audio (given to `close`) is trimmed or padded to the video's duration so the
  two match within one frame. The mp4 header names every stream before the first
  packet, so whether there will be audio is said up front (`with_audio`). The
  file appears under its name only when `close()` succeeds.
  """

  def __init__(self, path: str, fps: int, *, with_audio: bool = True, crf: int = 18,
               sample_rate: int = SAMPLE_RATE, metadata: dict[str, str] | None = None):
    require_output_path(path, (".mp4",))
    self.path, self.fps, self.crf, self.sample_rate = os.fspath(path), int(fps), int(crf), int(sample_rate)
    self.with_audio = with_audio
    self._audio = None
    self._atomic = atomic_output(self.path)
    self._tmp = self._atomic.__enter__()
    # use_metadata_tags: keep custom tags (provenance) that the mp4 muxer would otherwise drop.
    self._container = av.open(self._tmp, mode="w", format="mp4", options={"movflags": "use_metadata_tags"})
    for key, value in (metadata or {}).items():
      self._container.metadata[key] = str(value)
    self._video = None
    self.num_frames = 0
    self._closed = False

  def _open_video(self, height: int, width: int) -> None:
    if height % 2 or width % 2:
      raise ValueError(f"H.264 (yuv420p) needs even frame sizes, got {width}x{height}")
    stream = self._container.add_stream("libx264", rate=self.fps)
    stream.width, stream.height = width, height
    stream.pix_fmt = "yuv420p"
    stream.time_base = fractions.Fraction(1, self.fps)
    stream.options = {"crf": str(self.crf), "preset": "veryfast"}
    self._video = stream
    if self.with_audio:
      self._audio = self._container.add_stream("aac", rate=self.sample_rate, layout="mono")
      self._audio.time_base = fractions.Fraction(1, self.sample_rate)

  def write(self, frame_HxWx3: np.ndarray) -> None:
    """Appends one uint8 RGB frame."""
    frame_HxWx3 = np.asarray(frame_HxWx3)
    if frame_HxWx3.dtype != np.uint8 or frame_HxWx3.ndim != 3 or frame_HxWx3.shape[2] != 3:
      raise ValueError(f"frames must be uint8 HxWx3, got {frame_HxWx3.dtype} {frame_HxWx3.shape}")
    if self._video is None:
      self._open_video(*frame_HxWx3.shape[:2])
    elif frame_HxWx3.shape[:2] != (self._video.height, self._video.width):
      raise ValueError(f"frame size changed from {self._video.width}x{self._video.height} "
                       f"to {frame_HxWx3.shape[1]}x{frame_HxWx3.shape[0]}")
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame_HxWx3), format="rgb24")
    frame.pts = self.num_frames
    self._container.mux(self._video.encode(frame))
    self.num_frames += 1

  def close(self, audio: np.ndarray | None = None) -> str:
    """Flushes video, muxes `audio` (mono float32 at `sample_rate`), and publishes the file."""
    if self._closed:
      return self.path
    try:
      if self._video is None:
        raise ValueError("no frames were written")
      self._container.mux(self._video.encode(None))
      if self.with_audio:
        if audio is None:
          raise ValueError("VideoWriter(with_audio=True) needs the audio at close()")
        self._write_audio(np.asarray(audio, np.float32).reshape(-1))
      elif audio is not None:
        raise ValueError("audio given to a VideoWriter opened with with_audio=False")
      self._container.close()
      self._closed = True
      self._atomic.__exit__(None, None, None)
    except BaseException as e:
      self.abort(e)
      raise
    return self.path

  def abort(self, exc: BaseException | None = None) -> None:
    """Discards the partial file."""
    if self._closed:
      return
    self._closed = True
    with contextlib.suppress(Exception):
      self._container.close()
    exc = exc or RuntimeError("video writing aborted")
    with contextlib.suppress(type(exc)):
      self._atomic.__exit__(type(exc), exc, exc.__traceback__)

  def _write_audio(self, audio: np.ndarray) -> None:
    n = int(round(self.num_frames * self.sample_rate / self.fps))
    audio = np.pad(audio[:n], (0, max(0, n - audio.size)))
    stream = self._audio
    block = 1024  # AAC's frame size.
    for start in range(0, n, block):
      chunk = np.clip(audio[start:start + block], -1.0, 1.0)[None, :]
      frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk), format="flt", layout="mono")
      frame.sample_rate = self.sample_rate
      frame.pts = start
      self._container.mux(stream.encode(frame))
    self._container.mux(stream.encode(None))

  def __enter__(self) -> "VideoWriter":
    return self

  def __exit__(self, exc_type, exc, tb) -> None:
    if exc_type is not None:
      self.abort(exc)


def write_video(path: str, frames: Iterable[np.ndarray], fps: int, audio: np.ndarray | None = None, *,
                sample_rate: int = SAMPLE_RATE, crf: int = 18, metadata: dict[str, str] | None = None) -> str:
  """Writes uint8 HxWx3 frames (+ mono audio) to an H.264/AAC mp4; returns the path."""
  writer = VideoWriter(path, fps, with_audio=audio is not None, crf=crf, sample_rate=sample_rate,
                       metadata=metadata)
  with writer:
    for frame in frames:
      writer.write(frame)
    writer.close(audio)
  return path


def read_video(path: str, *, sample_rate: int = SAMPLE_RATE, max_frames: int | None = None):
  """Reads an mp4 (or any video) -> (uint8 TxHxWx3 frames, fps, mono float32 audio or None)."""
  require_file(path, "video", VIDEO_ACCEPTED)
  try:
    with av.open(path, metadata_errors="ignore") as container:
      if not container.streams.video:
        raise UserError(f"video {path!r} has no video track")
      stream = container.streams.video[0]
      fps = float(stream.average_rate) if stream.average_rate else 25.0
      frames = []
      for frame in container.decode(stream):
        frames.append(frame.to_ndarray(format="rgb24"))
        if max_frames is not None and len(frames) >= max_frames:
          break
  except av.error.FFmpegError as e:
    raise UserError(f"video {path!r} is truncated or corrupt ({_short(e)})") from None
  if not frames:
    raise UserError(f"video {path!r} contains no decodable frames")
  audio = None
  try:
    with av.open(path, metadata_errors="ignore") as container:
      has_audio = bool(container.streams.audio)
    if has_audio:
      audio = load_audio(path, sample_rate=sample_rate, allow_silence=True)
  except UserError:
    audio = None
  return np.stack(frames), fps, audio


def read_metadata(path: str) -> dict[str, str]:
  """The container-level metadata tags of a media file."""
  require_file(path, "media file", "an mp4 video")
  with av.open(path, metadata_errors="ignore") as container:
    return dict(container.metadata)


def _short(e: BaseException) -> str:
  text = " ".join(str(e).split())
  return text[:200] if text else type(e).__name__


# --------------------------------------------------------------------------- command


def describe_image(path: str) -> str | None:
  """The image file as it is (format, size, mode), or None if it cannot be opened."""
  try:
    with Image.open(path) as im:
      return f"{im.format} {im.size[0]}x{im.size[1]}, mode {im.mode}"
  except (OSError, SyntaxError, ValueError, UnidentifiedImageError, Image.DecompressionBombError):
    return None


def describe_audio(path: str) -> str | None:
  """The first audio track as it is (codec, sample rate, channels, duration from the header), or None."""
  try:
    with av.open(path, metadata_errors="ignore") as container:
      if not container.streams.audio:
        return None
      stream = container.streams.audio[0]
      return _audio_track(container, stream)
  except (av.error.FFmpegError, UnicodeDecodeError):
    return None


def describe_video(path: str) -> str | None:
  """The video file as it is (codec, size, frame rate, duration, its audio track), or None."""
  try:
    with av.open(path, metadata_errors="ignore") as container:
      if not container.streams.video:
        return None
      v = container.streams.video[0]
      fps = f"{float(v.average_rate):g} fps" if v.average_rate else "unknown frame rate"
      seconds = _declared_seconds(container, v)
      length = f"{seconds:.2f} s" if seconds is not None else "duration not in the header"
      sound = (f"audio {_audio_track(container, container.streams.audio[0])}" if container.streams.audio
               else "no audio track")
      return f"{v.codec_context.name} {v.width}x{v.height} at {fps}, {length}; {sound}"
  except (av.error.FFmpegError, UnicodeDecodeError):
    return None


def _audio_track(container, stream) -> str:
  channels = {1: "1 channel (mono)", 2: "2 channels (stereo)"}.get(stream.channels, f"{stream.channels} channels")
  seconds = _declared_seconds(container, stream)
  length = f"{seconds:.2f} s" if seconds is not None else "duration not in the header"
  return f"{stream.codec_context.name}, {stream.sample_rate} Hz, {channels}, {length}"


def _main(args) -> int:
  """Describes each input as it is, then checks it the way `sample` will and says whether it is fine."""
  if not (args.image or args.audio or args.video):
    raise UserError("nothing to check; give --image, --audio and/or --video")
  cfg = args.config.media
  fine = []
  if args.image:
    print(f"image {args.image}: {describe_image(require_file(args.image, 'image', IMAGE_ACCEPTED)) or '?'}")
    img = load_image(args.image, min_side=cfg.min_image_side, max_side=cfg.max_image_side)
    fine.append(_portrait_crop(img, args))
  if args.audio:
    print(f"audio {args.audio}: {describe_audio(require_file(args.audio, 'audio', AUDIO_ACCEPTED)) or '?'}")
    audio = load_audio(args.audio, sample_rate=cfg.sample_rate, max_seconds=cfg.max_audio_seconds,
                       limit_flag="--config.media.max_audio_seconds")
    rms = float(np.sqrt(np.mean(audio ** 2)))
    fine.append(f"audio: {audio.size / cfg.sample_rate:.2f} s of {cfg.sample_rate / 1000:g} kHz mono, "
                f"RMS {20 * np.log10(max(rms, 1e-12)):.1f} dBFS")
  if args.video:
    print(f"video {args.video}: {describe_video(require_file(args.video, 'video', VIDEO_ACCEPTED)) or '?'}")
    frames, fps, audio = read_video(args.video, sample_rate=cfg.sample_rate)
    sound = (f"its sound as {audio.size / cfg.sample_rate:.2f} s of {cfg.sample_rate / 1000:g} kHz mono"
             if audio is not None else "no sound")
    fine.append(f"driving video: {len(frames)} frames of {frames.shape[2]}x{frames.shape[1]} at {fps:g} fps; "
                f"{sound}")
  print("fine for sampling, as python -m vasa_jax.sample will use them:")
  for line in fine:
    print(f"  {line}")
  return 0


def _portrait_crop(img: np.ndarray, args) -> str:
  """What `sample` will cut from the portrait (saved to `args.save_crop` if given), in words."""
  from vasa_jax import faces  # pylint: disable=import-outside-toplevel
  size = f"{img.shape[1]}x{img.shape[0]} RGB"
  crop = args.crop or ("none" if os.path.samefile(args.image, DEMO_IMAGE) else "face")
  if crop == "none" or not faces.available():
    why = "--crop none" if crop == "none" else f"no face detector installed: {faces.INSTALL_HINT}"
    side = min(img.shape[:2])
    top, left = (img.shape[0] - side) // 2, (img.shape[1] - side) // 2
    crop = img[top:top + side, left:left + side]
    text = f"portrait: {size}; the model sees its central {side}x{side} square ({why})"
  else:
    found = faces.find_faces(img)
    crop, face, box = faces.crop_portrait(img, face_index=args.face_index, what=f"image {args.image!r}")
    x0, y0, x1, y1 = face.box
    text = (f"portrait: {size}; {len(found)} face(s); the model sees a {box[2]:.0f}x{box[2]:.0f} square "
            f"centred at ({box[0]:.0f}, {box[1]:.0f}) around the face at x {x0:.0f}..{x1:.0f}, y {y0:.0f}..{y1:.0f}")
  if args.save_crop:
    with atomic_output(require_output_path(args.save_crop, (".png",))) as tmp:
      Image.fromarray(np.clip(np.round(crop * 255.0), 0, 255).astype(np.uint8)).save(tmp, "PNG")
    text += f"; saved to {args.save_crop}"
  return text


def _parser():
  parser = cli.make_parser("python -m vasa_jax.media",
                           "Describe a portrait, a speech clip or a video as it is, then check it the way "
                           "python -m vasa_jax.sample will and say whether it is fine for sampling.",
                           config=True, default_config="tiny")
  parser.add_argument("--image", help="portrait image (PNG, JPEG, WebP or BMP)")
  parser.add_argument("--crop", choices=("face", "none"),
                      help="as sample's --crop: find the face and crop around it, or the central square (default: "
                      "face, none for the bundled synthetic portrait)")
  parser.add_argument("--face-index", type=int, help="as sample's: which face, counted from the left from 0 "
                      "(default: the largest)")
  parser.add_argument("--save-crop", metavar="PNG", help="write the square the model will see to this PNG")
  parser.add_argument("--audio", help="speech clip (wav, flac, mp3, m4a/aac, ogg/opus, or a video's audio)")
  parser.add_argument("--video", help="video file to decode (mp4, mov, mkv, webm)")
  return parser


if __name__ == "__main__":
  cli.main_entry(_main, _parser())
