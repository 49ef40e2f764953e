"""Make one video of a checked `jobs.Job`: the work `sample` and `sample --batch` share.

    portrait + audio -> encoders -> motion diffusion -> decoder -> frames -> watermark -> mp4

`settings` are the run-wide flags of `sample` (steps, guidance, watermark, streaming, C2PA,
quiet). Samplers made from one loaded bundle with the same settings share their compiled
steps (`stream`), so every video after the first starts without compiling.
"""

import os
import sys

from tqdm import tqdm

from vasa_jax import bundle as bundle_lib
from vasa_jax import c2pa_sign, cli, compile_cache, jobs, media, provenance, stream
from vasa_jax import watermark as watermark_lib
from vasa_jax.errors import UserError
from vasa_jax.models import wav2vec2

STEPS_RANGE = (1, 1000)           # DDIM steps, up to the training schedule's 1000
GUIDANCE_RANGE = (0.0, 10.0)
CHUNK_MS_RANGE = (1.0, 60000.0)
MAX_AUDIO_SECONDS_RANGE = (1.0, 24 * 3600.0)


def check_settings(settings) -> None:
  """The run-wide flags, checked before anything is loaded."""
  if settings.steps is not None:
    cli.check_range("--steps", settings.steps, *STEPS_RANGE)
  for flag, value in (("--cfg-audio", settings.cfg_audio), ("--cfg-gaze", settings.cfg_gaze)):
    if value is not None:
      cli.check_range(flag, value, *GUIDANCE_RANGE)
  cli.check_range("--chunk-ms", settings.chunk_ms, *CHUNK_MS_RANGE)
  cli.check_range("--max-audio-seconds", settings.max_audio_seconds, *MAX_AUDIO_SECONDS_RANGE)
  if (settings.c2pa_cert is None) != (settings.c2pa_key is None):
    raise UserError("--c2pa-cert and --c2pa-key go together: give both PEM files (certificate chain and its "
                    "private key) or neither")
  if settings.c2pa_cert:  # Check the credentials now rather than after minutes of generation.
    c2pa_sign.load_credentials(settings.c2pa_cert, settings.c2pa_key)
  if settings.no_watermark:
    print("warning: --no-watermark: the video carries no invisible watermark; its metadata records that",
          file=sys.stderr)


def compiling_message(cache: str | None) -> str:
  """What `make_video` shows while it compiles; `cache`: the compilation cache folder, if on."""
  where = f"kept in {cache} for later runs" if cache else f"not kept: {compile_cache.ENV}=off"
  return f"vasa_jax: compiling the model for this machine ({where}) ..."


def load_model(checkpoint: str | None, wav2vec2_path: str | None = None) -> bundle_lib.Bundle:
  """The bundle at `checkpoint`, or the demo bundle shipped in the package.

  A bundle trained on wav2vec2 features (`audio.features`) names the converted wav2vec2
  folder it was trained with (`audio.wav2vec2_path`); `wav2vec2_path` (`--wav2vec2-path`)
  points to the user's own copy instead. The folder is checked here, before any input.
  """
  if checkpoint is None and not os.path.isdir(bundle_lib.DEMO_BUNDLE):
    raise UserError("no --checkpoint given and the demo checkpoint is not bundled in this version; "
                    "export one with python -m vasa_jax.train.export and pass --checkpoint DIR")
  model = bundle_lib.load(checkpoint or bundle_lib.DEMO_BUNDLE)
  audio = model.motion_cfg.audio
  if audio.features != "wav2vec2":
    if wav2vec2_path:
      print(f"warning: --wav2vec2-path is not used: this model was trained on {audio.features} features",
            file=sys.stderr)
    return model
  if wav2vec2_path:
    audio.wav2vec2_path = wav2vec2_path
  key = "--wav2vec2-path" if wav2vec2_path else "audio.wav2vec2_path (saved in the bundle; override: --wav2vec2-path)"
  wav2vec2.converted_config(audio.wav2vec2_path, key)
  return model


def make_video(model: bundle_lib.Bundle, job: jobs.Job, inputs: jobs.Inputs, settings, *,
               compiling: str | None = None, desc: str = "vasa_jax", on_frame=None) -> str:
  """Writes `job.out`; `compiling`: a message to show while the sampler compiles (the first
  video of a process), before the progress bar starts with the first frame; `on_frame(i, total,
  frame)`: called with each frame as it is made (the app's preview and progress)."""
  if compiling and not settings.quiet:
    print(compiling, file=sys.stderr, flush=True)
  sr = model.motion_cfg.media.sample_rate
  d = model.motion_cfg.diffusion
  guidance = (d.cfg_audio if settings.cfg_audio is None else settings.cfg_audio,
              d.cfg_gaze if settings.cfg_gaze is None else settings.cfg_gaze, 0.0, 0.0, 0.0)
  payload = watermark_lib.make_payload(model.digest)  # A fresh generation id per video.
  marker = None if settings.no_watermark else watermark_lib.Watermarker(payload)
  sampler = stream.StreamingSampler(model, inputs.portrait, controls=job.controls(), steps=settings.steps,
                                    guidance=guidance, seed=job.seed, still=job.still, watermark=marker,
                                    label=settings.label)
  sampler.compile()
  if inputs.driving is not None:
    total = len(inputs.driving)
    source = stream.drive_from_video(sampler, inputs.driving)
  else:
    total = -(-inputs.audio.size // sampler.spf)
    chunk = None if settings.offline else int(sr * settings.chunk_ms / 1000)
    source = stream.generate(sampler, inputs.audio, chunk_samples=chunk)
  metadata = provenance.provenance_metadata(model.digest, payload, watermark=not settings.no_watermark)
  with media.VideoWriter(job.out, sampler.fps, with_audio=inputs.audio is not None, sample_rate=sr,
                         metadata=metadata) as writer:
    for i, frame in enumerate(_progress(source, total, desc, settings.quiet)):
      writer.write(frame)
      if on_frame is not None:
        on_frame(i, total, frame)
    writer.close(inputs.audio)
  if settings.c2pa_cert:
    payload_hex = None if settings.no_watermark else f"{payload:016x}"
    c2pa_sign.sign_c2pa(job.out, settings.c2pa_cert, settings.c2pa_key, payload_hex=payload_hex,
                        checkpoint_hash=model.digest)
  return job.out


def _progress(frames, total: int, desc: str, quiet: bool):
  """Yields `frames`; the bar appears with the first one, so it never sits at 0% while compiling."""
  bar = None
  try:
    for frame in frames:
      if bar is None:
        bar = tqdm(total=total, initial=1, unit="frame", desc=desc, disable=quiet)
      else:
        bar.update(1)
      yield frame
  finally:
    if bar is not None:
      bar.close()
