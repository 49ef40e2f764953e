"""`python -m vasa_jax.sample`: one portrait + one speech clip -> a talking-face mp4.

    portrait + audio -> encoders -> motion diffusion -> decoder -> frames -> mp4

With no arguments it uses the bundled demo checkpoint on the bundled example
portrait (a synthetic head of an unseen identity) and speech, and writes
`vasa_jax_demo.mp4` into the current folder; given inputs, the video is named after
them (`<portrait>_<audio>.mp4`). An existing file is only replaced with `--overwrite`.
`--batch jobs.csv` makes one video per CSV row with one loaded model (`batch`).
Compilations are cached across runs (`compile_cache`).
"""

import os

from vasa_jax import batch, cli, compile_cache, generate, jobs, media
from vasa_jax.data.synthetic import EMOTIONS

EXAMPLES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "examples")
EXAMPLE_IMAGE = os.path.join(EXAMPLES, "portrait.jpg")
EXAMPLE_AUDIO = os.path.join(EXAMPLES, "speech.wav")
# The default portrait: a synthetic head of a held-out benchmark identity (the demo model never saw
# it in training), the kind of face the demo model was trained on.
DEMO_IMAGE = jobs.DEMO_IMAGE


def job_from_args(args) -> jobs.Job:
  """The one video the flags ask for, with the defaults filled in."""
  portrait = args.image or DEMO_IMAGE
  audio = args.audio or (None if args.driving else EXAMPLE_AUDIO)
  if args.out:
    out = args.out
  elif args.image is None and args.audio is None and args.driving is None:
    out = jobs.DEMO_OUT
  else:
    out = jobs.default_out(portrait, args.driving or audio)
  return jobs.Job(portrait=portrait, audio=audio, out=out, driving=args.driving, seed=args.seed,
                  gaze=None if args.gaze is None else tuple(args.gaze), distance=args.distance,
                  emotion=args.emotion, still=args.still)


def run(args, cache: str | None = None) -> str:
  """Makes the one video of the flags; returns its path."""
  generate.check_settings(args)
  job = job_from_args(args)
  jobs.check(job, overwrite=args.overwrite)
  model = generate.load_model(args.checkpoint, args.wav2vec2_path)
  inputs = jobs.load(job, sample_rate=model.motion_cfg.media.sample_rate, max_seconds=args.max_audio_seconds,
                     crop=args.crop, face_index=args.face_index)
  return generate.make_video(model, job, inputs, args, compiling=generate.compiling_message(cache))


def main(args) -> int:
  cache = compile_cache.enable()
  if args.batch:
    return batch.run(args, cache)
  print(os.path.abspath(run(args, cache)))
  return 0


def parser():
  p = cli.make_parser("python -m vasa_jax.sample",
                      "Generate a talking-face video from one portrait and one speech clip. With no arguments, "
                      "the bundled demo model animates the bundled example portrait with the example speech.")
  p.add_argument("--image", help="portrait (PNG, JPEG, WebP or BMP; the face is found and cropped, see --crop); "
                 "default: a "
                 "synthetic head the demo model never saw (vasa_jax/examples/portrait.jpg is a real photo to try)")
  p.add_argument("--crop", choices=jobs.CROPS, help="face: find the face (the largest, or --face-index) and "
                 "crop a square around it, framed as the model was trained; the same for every frame of --driving "
                 "(needs pip install 'vasa_jax[faces]'; without it, the central square with a warning). none: the "
                 "image is already a face crop, its central square is used. Default: face, none for the bundled "
                 "synthetic portrait")
  p.add_argument("--face-index", type=int, help="which face of a photo with several, counted from the left "
                 "from 0 (default: the largest)")
  p.add_argument("--audio", help="speech (wav, flac, mp3, m4a, ogg/opus, or a video's audio), converted to 16 kHz "
                 "mono; default: the example (with --driving: the driving video's own sound)")
  p.add_argument("--out", help="mp4 to write: H.264 video, the audio as 16 kHz mono AAC. Default: named after the "
                 "inputs, <portrait>_<audio>.mp4 (<portrait>_<driving>.mp4), in the current folder; "
                 f"{jobs.DEMO_OUT} when no input is given")
  p.add_argument("--overwrite", action="store_true", help="replace the output file if it exists (without it, "
                 "an existing file is an error and nothing is written)")
  p.add_argument("--checkpoint", help="inference bundle folder (python -m vasa_jax.train.export); default: the demo")
  p.add_argument("--wav2vec2-path", metavar="DIR", help="for a model trained on wav2vec2 features: your converted "
                 "wav2vec2 folder (python -m vasa_jax.models.wav2vec2 --convert HF_DIR OUT), instead of the "
                 "path saved in the bundle")
  theta, phi = jobs.GAZE_THETA_DEG, jobs.GAZE_PHI_DEG
  p.add_argument("--gaze", nargs=2, type=float, metavar=("THETA", "PHI"),
                 help=f"main gaze direction in degrees, theta {theta[0]:g}..{theta[1]:g} (> 0: to the viewer's "
                 f"left) and phi {phi[0]:g}..{phi[1]:g} (> 0: up), the range the model was trained on")
  lo, hi = jobs.DISTANCE_RANGE
  p.add_argument("--distance", type=float, help=f"head-to-camera distance, {lo:g}..{hi:g} (1 = typical, < 1 closer)")
  p.add_argument("--emotion", help=f"one of {', '.join(EMOTIONS)}, or {len(EMOTIONS)} comma-separated weights "
                 "in 0..1")
  g = f"{generate.GUIDANCE_RANGE[0]:g}..{generate.GUIDANCE_RANGE[1]:g}"
  p.add_argument("--cfg-audio", type=float, help=f"audio guidance scale lambda_A, {g} (default: the model's; "
                 "the demo's is 0.5)")
  p.add_argument("--cfg-gaze", type=float, help=f"gaze guidance scale lambda_g, {g} (default: the model's; "
                 "the demo's is 1.0)")
  lo, hi = generate.STEPS_RANGE
  p.add_argument("--steps", type=int, help=f"diffusion sampling steps, {lo}..{hi} (default: the model's own, "
                 "10 for the demo; the time per window grows with the steps)")
  p.add_argument("--seed", type=int, default=0, help=f"random seed, {jobs.SEED_RANGE[0]}..{jobs.SEED_RANGE[1]}: "
                 "the same seed gives the same motion; the same video only with --no-watermark (the "
                 "watermark carries a fresh generation id in every video)")
  p.add_argument("--still", action="store_true", help="keep the portrait's head pose (no head motion)")
  p.add_argument("--driving", help="driving video: take pose and dynamics from it instead of from audio; the "
                 "output has the driving video's own sound unless --audio is given")
  p.add_argument("--batch", metavar="CSV", help="make one video per row of a CSV file with one loaded model: "
                 f"{batch.HELP}")
  p.add_argument("--offline", action="store_true", help="process the whole clip at once instead of streaming "
                 "it in chunks (same frames, no chunking overhead)")
  p.add_argument("--chunk-ms", type=float, default=200.0, help="streaming: audio chunk size in milliseconds, "
                 f"{generate.CHUNK_MS_RANGE[0]:g}..{generate.CHUNK_MS_RANGE[1]:g}")
  p.add_argument("--max-audio-seconds", type=float, default=media.MAX_AUDIO_SECONDS,
                 help="refuse longer audio, in seconds: "
                 f"{generate.MAX_AUDIO_SECONDS_RANGE[0]:g}..{generate.MAX_AUDIO_SECONDS_RANGE[1]:g}")
  p.add_argument("--no-watermark", action="store_true",
                 help="do not embed the invisible watermark (on by default; the file's metadata records this)")
  p.add_argument("--label", action="store_true", help="also draw a visible 'AI-GENERATED' label")
  p.add_argument("--c2pa-cert", metavar="PEM", help="sign the mp4 with a C2PA manifest: your certificate chain "
                 "(signing certificate first); needs --c2pa-key and pip install 'vasa_jax[c2pa]'")
  p.add_argument("--c2pa-key", metavar="PEM", help="private key of --c2pa-cert (EC P-256/384/521, RSA or Ed25519)")
  p.add_argument("--quiet", action="store_true", help="no progress bar and no 'compiling' message")
  p.epilog = (f"Compilations are cached across runs in ${compile_cache.ENV} (default: {compile_cache.DEFAULT}; "
              "the value off turns the cache off).")
  return p


if __name__ == "__main__":
  cli.main_entry(main, parser())
