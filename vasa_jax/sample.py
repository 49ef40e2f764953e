"""`python -m vasa_jax.sample`: one portrait + one speech clip -> a talking-face mp4.

    portrait + audio -> encoders -> motion diffusion -> decoder -> frames -> mp4

With no arguments it uses the bundled demo checkpoint on the bundled example
portrait (a synthetic head of an unseen identity) and speech, and writes
`vasa_jax_demo.mp4` into the current folder.
"""

import os
import sys

import numpy as np
from tqdm import tqdm

from vasa_jax import bundle as bundle_lib
from vasa_jax import c2pa_sign, cli, media, provenance, stream
from vasa_jax import watermark as watermark_lib
from vasa_jax.errors import UserError
from vasa_jax.motion import Controls

EXAMPLES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "examples")
EXAMPLE_IMAGE = os.path.join(EXAMPLES, "portrait.jpg")
EXAMPLE_AUDIO = os.path.join(EXAMPLES, "speech.wav")
# The default portrait: a synthetic head of a held-out benchmark identity (the demo model never saw
# it in training), the kind of face the demo model was trained on.
DEMO_IMAGE = os.path.join(EXAMPLES, "synthetic_portrait.png")
EMOTIONS = ("neutral", "happy", "sad", "surprised", "angry")


def parse_emotion(text: str | None):
  """A name from EMOTIONS, or a comma-separated vector of len(EMOTIONS) weights."""
  if text is None:
    return None
  if text.lower() in EMOTIONS:
    return EMOTIONS.index(text.lower())
  try:
    vec = [float(x) for x in text.split(",")]
  except ValueError:
    vec = []
  if len(vec) != len(EMOTIONS):
    raise UserError(f"--emotion {text!r}: give one of {', '.join(EMOTIONS)} or {len(EMOTIONS)} comma-separated "
                    "weights (e.g. 0,1,0,0,0)")
  return vec


def face_likeness(img_HxWx3: np.ndarray) -> float:
  """Fraction of skin-coloured pixels in the central region (a cheap 'is there a face' check)."""
  h, w, _ = img_HxWx3.shape
  c = img_HxWx3[h // 6: 5 * h // 6, w // 6: 5 * w // 6] * 255.0
  r, g, b = c[..., 0], c[..., 1], c[..., 2]
  cb = 128 - 0.168736 * r - 0.331264 * g + 0.5 * b
  cr = 128 + 0.5 * r - 0.418688 * g - 0.081312 * b
  # The classic YCbCr skin box, which covers light to dark skin tones.
  skin = (cb > 77) & (cb < 127) & (cr > 133) & (cr < 173)
  return float(skin.mean())


def run(args) -> str:
  out = media.require_output_path(args.out, (".mp4",))
  if (args.c2pa_cert is None) != (args.c2pa_key is None):
    raise UserError("--c2pa-cert and --c2pa-key go together: give both PEM files (certificate chain and its "
                    "private key) or neither")
  if args.c2pa_cert:  # Check the credentials now rather than after minutes of generation.
    c2pa_sign.load_credentials(args.c2pa_cert, args.c2pa_key)
  checkpoint = args.checkpoint or bundle_lib.DEMO_BUNDLE
  if not args.checkpoint and not os.path.isdir(checkpoint):
    raise UserError("no --checkpoint given and the demo checkpoint is not bundled in this version; "
                    "export one with python -m vasa_jax.train.export and pass --checkpoint DIR")
  portrait = media.load_image(args.image)
  if face_likeness(portrait) < 0.03:
    print(f"warning: {args.image} shows little face-like (skin-coloured) content in its centre; "
          "results will be poor. A frontal, centred portrait works best.", file=sys.stderr)
  if args.steps is not None and args.steps < 1:
    raise UserError(f"--steps must be at least 1, got {args.steps}")
  model = bundle_lib.load(checkpoint)
  sr = model.motion_cfg.media.sample_rate
  gaze = None if args.gaze is None else tuple(float(np.radians(g)) for g in args.gaze)
  controls = Controls(gaze=gaze, distance=args.distance, emotion=parse_emotion(args.emotion))
  d = model.motion_cfg.diffusion
  guidance = (d.cfg_audio if args.cfg_audio is None else args.cfg_audio,
              d.cfg_gaze if args.cfg_gaze is None else args.cfg_gaze, 0.0, 0.0, 0.0)
  payload = watermark_lib.make_payload(model.digest)
  marker = None if args.no_watermark else watermark_lib.Watermarker(payload)
  if args.no_watermark:
    print("warning: --no-watermark: the video carries no invisible watermark; its metadata records that",
          file=sys.stderr)
  sampler = stream.StreamingSampler(model, portrait, controls=controls, steps=args.steps, guidance=guidance,
                                    seed=args.seed, still=args.still, watermark=marker, label=args.label)
  fps = sampler.fps
  metadata = provenance.provenance_metadata(model.digest, payload, watermark=not args.no_watermark)
  if args.driving:
    frames, _, drive_audio = media.read_video(args.driving)
    audio = drive_audio
    total = len(frames)
    source = stream.drive_from_video(sampler, frames)
  else:
    audio = media.load_audio(args.audio, sample_rate=sr, max_seconds=args.max_audio_seconds)
    total = -(-audio.size // sampler.spf)
    chunk = None if args.offline else int(sr * args.chunk_ms / 1000)
    source = stream.generate(sampler, audio, chunk_samples=chunk)
  with media.VideoWriter(out, fps, with_audio=audio is not None, sample_rate=sr, metadata=metadata) as writer:
    for frame in tqdm(source, total=total, unit="frame", desc="vasa_jax", disable=args.quiet):
      writer.write(frame)
    writer.close(audio)
  if args.c2pa_cert:
    payload_hex = None if args.no_watermark else f"{payload:016x}"
    c2pa_sign.sign_c2pa(out, args.c2pa_cert, args.c2pa_key, payload_hex=payload_hex, checkpoint_hash=model.digest)
  return out


def main(args) -> int:
  print(os.path.abspath(run(args)))
  return 0


def parser():
  p = cli.make_parser("python -m vasa_jax.sample",
                      "Generate a talking-face video from one portrait and one speech clip. With no arguments, "
                      "the bundled demo model animates the bundled example portrait with the example speech.")
  p.add_argument("--image", default=DEMO_IMAGE, help="portrait (PNG, JPEG, WebP or BMP); default: a synthetic "
                 "head the demo model never saw (vasa_jax/examples/portrait.jpg is a real photo to try)")
  p.add_argument("--audio", default=EXAMPLE_AUDIO, help="speech (wav, flac, mp3, m4a, ogg/opus, or a video's "
                 "audio); default: the example")
  p.add_argument("--out", default="vasa_jax_demo.mp4", help="mp4 to write")
  p.add_argument("--checkpoint", help="inference bundle folder (python -m vasa_jax.train.export); default: the demo")
  p.add_argument("--gaze", nargs=2, type=float, metavar=("THETA", "PHI"),
                 help="main gaze direction in degrees (theta > 0: to the viewer's left; phi > 0: up)")
  p.add_argument("--distance", type=float, help="head-to-camera distance (1 = typical, < 1 closer)")
  p.add_argument("--emotion", help=f"one of {', '.join(EMOTIONS)}, or {len(EMOTIONS)} comma-separated weights")
  p.add_argument("--cfg-audio", type=float, help="audio guidance scale lambda_A (default: the model's, 0.5)")
  p.add_argument("--cfg-gaze", type=float, help="gaze guidance scale lambda_g (default: the model's, 1.0)")
  p.add_argument("--steps", type=int, help="diffusion sampling steps (default: the model's; 10 is ~5x faster)")
  p.add_argument("--seed", type=int, default=0, help="random seed: same seed, same video")
  p.add_argument("--still", action="store_true", help="keep the portrait's head pose (no head motion)")
  p.add_argument("--driving", help="driving video: take pose and dynamics from it instead of from audio")
  p.add_argument("--offline", action="store_true", help="process the whole clip at once instead of streaming "
                 "it in chunks (same frames, no chunking overhead)")
  p.add_argument("--chunk-ms", type=float, default=200.0, help="streaming: audio chunk size in milliseconds")
  p.add_argument("--max-audio-seconds", type=float, default=media.MAX_AUDIO_SECONDS,
                 help="refuse longer audio")
  p.add_argument("--no-watermark", action="store_true",
                 help="do not embed the invisible watermark (on by default; the file's metadata records this)")
  p.add_argument("--label", action="store_true", help="also draw a visible 'AI-GENERATED' label")
  p.add_argument("--c2pa-cert", metavar="PEM", help="sign the mp4 with a C2PA manifest: your certificate chain "
                 "(signing certificate first); needs --c2pa-key and pip install 'vasa_jax[c2pa]'")
  p.add_argument("--c2pa-key", metavar="PEM", help="private key of --c2pa-cert (EC P-256/384/521, RSA or Ed25519)")
  p.add_argument("--quiet", action="store_true", help="no progress bar")
  return p


if __name__ == "__main__":
  cli.main_entry(main, parser())
