"""`python -m vasa_jax.bench`: speed of the real code paths, as a table and JSON.

Every figure times the jitted function the product runs (after compilation, best
of several repeats, inputs already on device) and reports FLOPs from XLA's cost
analysis of that same compiled function, so achieved FLOP/s can be compared with
this machine's measured matmul peak (a 2048^3 float32 matmul).
"""

import json
import os
import platform
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

from vasa_jax import bundle, cli, config, diffusion, live, media, perf, sample, stream, watermark
from vasa_jax.data.synthetic import LABEL_NAMES
from vasa_jax.face_model import FaceModel
from vasa_jax.motion import MotionModel


def bench_face(config_name: str, batch: int, peak: float, repeats: int = 3) -> dict:
  """Stage-1 encode (once per portrait) and decode (every frame) at a config."""
  cfg = config.load(config_name)
  face = FaceModel(cfg.face)
  s = cfg.face.image_size
  img1 = jax.random.uniform(jax.random.key(0), (1, s, s, 3))
  params = jax.jit(face.init)(jax.random.key(1))
  encode = face.encode_jit
  lat1 = encode(params, img1)
  lat = jax.tree.map(lambda x: jnp.repeat(x, batch, 0), lat1)
  decode = jax.jit(lambda p, l: face.decode(p, l, l["z_pose"], l["z_dyn"]))
  t_enc = perf.best_time(encode, params, img1, repeats=repeats, min_time=0.2)
  t_dec = perf.best_time(decode, params, lat, repeats=repeats, min_time=0.2)
  f_enc = perf.flops(encode, params, img1)
  f_dec = perf.flops(decode, params, lat) / batch
  return {"config": config_name, "resolution": s, "decode_batch": batch,
          "encode_ms": t_enc * 1e3, "encode_gflop": f_enc / 1e9,
          "decode_ms_per_frame": t_dec / batch * 1e3, "decode_gflop_per_frame": f_dec / 1e9,
          "decode_fps": batch / t_dec,
          "decode_peak_fraction": (f_dec * batch / t_dec) / peak,
          "encode_peak_fraction": (f_enc / t_enc) / peak}


def random_bundle(config_name: str, overrides=()):
  """A bundle of randomly initialised weights at a config: the real code path, untrained."""
  cfg = config.load(config_name, overrides)
  face = FaceModel(cfg.face)
  face_params = jax.jit(face.init)(jax.random.key(0))
  # Stage 2 generates stage-1 latents, or label-space motion (motion_source "labels").
  m = len(LABEL_NAMES) if cfg.motion_train.motion_source == "labels" else face.motion_dim
  motion_params = jax.jit(MotionModel(cfg, m).init)(jax.random.key(1))
  return bundle.Bundle(face_cfg=cfg, motion_cfg=cfg, face_params=face_params, motion_params=motion_params,
                       mean=np.zeros(m, np.float32), std=np.ones(m, np.float32), digest="random", path="")


def bench_pipeline(config_name: str, peak: float, *, seconds: float, full_clip: bool, steps: int | None) -> dict:
  """Portrait + audio -> frames through the streaming sampler, per stage."""
  model = random_bundle(config_name)
  portrait = media.load_image(sample.EXAMPLE_IMAGE)
  speech = media.load_audio(sample.EXAMPLE_AUDIO)
  reps = int(np.ceil(seconds * 16000 / speech.size))
  audio = np.tile(speech, reps)[:int(seconds * 16000)]
  # With the watermark on, as every output path runs by default.
  marker = watermark.Watermarker(watermark.make_payload(model.digest, 0))
  mk = lambda: stream.StreamingSampler(model, portrait, steps=steps, seed=0, watermark=marker)  # noqa: E731
  warm = mk()
  w, k, spf = warm.window, warm.context, warm.spf
  # Compile both steps (and measure their FLOPs) before any timing.
  wav = jnp.zeros((1, (k + w) * spf))
  motion_params = warm.loop.params  # The bundle's, with a frozen wav2vec2 added where the config uses one.
  args = (motion_params, wav, jnp.zeros((1, k, model.mean.size)), jnp.ones((1, k + w), bool),
          jnp.zeros((1, 2)), jnp.zeros((1,)), jnp.zeros((1, 5)), jnp.zeros((1, 3), bool), jnp.zeros((1,), bool),
          jax.random.key(0))
  # XLA's cost analysis counts a loop body once, so the window is costed as its parts:
  # audio features once + steps x one guided denoising call (all guidance variants).
  mm, m = warm.motion_model, model.mean.size
  ctx = {"prev": jnp.zeros((1, k, m)), "audio": jnp.zeros((1, k + w, mm.cfg.audio.dim)), "gaze": jnp.zeros((1, 2)),
         "distance": jnp.zeros((1,)), "emotion": jnp.zeros((1, 5))}
  base = jnp.zeros((1, 5), bool)
  guided = jax.jit(lambda p, c, x, t: diffusion.guided_x0(mm.guided_denoiser(p, c, base), x, t, warm.guidance))
  step_flops = perf.flops(guided, model.motion_params, ctx, jnp.zeros((1, w, m)), jnp.zeros((1,), jnp.int32))
  features_flops = perf.flops(jax.jit(mm.features), motion_params, wav)
  window_flops = features_flops + warm.steps * step_flops
  motion = jnp.zeros((warm.decode_batch, warm.portrait_motion.size))  # What the decoder takes: latents.
  times = jnp.arange(warm.decode_batch, dtype=jnp.float32) / warm.fps  # The watermark's frame times.
  decode_flops = perf.flops(warm.decode_step, model.face_params, warm.portrait, motion, warm.signs, times) / warm.decode_batch
  t_window = perf.best_time(warm.window_step, *args, repeats=2, min_time=0.0)
  t_decode = perf.best_time(warm.decode_step, model.face_params, warm.portrait, motion, warm.signs, times, repeats=2,
                        min_time=0.0)
  t_decode1 = perf.best_time(warm.decode_step, model.face_params, warm.portrait, motion[:1], warm.signs, times[:1],
                         repeats=2, min_time=0.0)
  feats = jax.jit(warm.motion_model.features)
  t_feats = perf.best_time(feats, motion_params, wav, repeats=3, min_time=0.1)
  size = model.face_cfg.face.image_size
  t_encode = perf.best_time(warm.encode_step, model.face_params, jnp.zeros((1, size, size, 3)), repeats=2, min_time=0.0)
  frame = np.zeros((model.face_cfg.face.image_size,) * 2 + (3,), np.uint8)
  tmp = os.path.join(tempfile.gettempdir(), "vasa_jax_bench_encode.mp4")  # Aborted: never published.
  writer = media.VideoWriter(tmp, 25, with_audio=False)
  t0 = time.perf_counter()
  for _ in range(25):
    writer.write(frame)
  t_video = (time.perf_counter() - t0) / 25
  writer.abort()
  out = {"config": config_name, "resolution": model.face_cfg.face.image_size, "window": w, "context": k,
         "steps": warm.steps, "guided_passes": 1 + sum(g != 0 for g in warm.guidance),
         "portrait_encode_ms": t_encode * 1e3, "audio_features_ms_per_window": t_feats * 1e3,
         "diffusion_ms_per_window": t_window * 1e3, "decode_ms_per_frame": t_decode / warm.decode_batch * 1e3,
         "video_encode_ms_per_frame": t_video * 1e3,
         "gflop_per_frame": (window_flops / w + decode_flops) / 1e9,
         "diffusion_gflop_per_second_of_motion": window_flops / w * 25 / 1e9,
         "decode_gflop_per_frame": decode_flops / 1e9}
  per_frame = t_window / w + t_decode / warm.decode_batch
  out["model_fps"] = 1.0 / per_frame
  out["peak_fraction"] = (out["gflop_per_frame"] * 1e9 / per_frame) / peak
  # First frame: the first window's diffusion plus the first frame's decode (alone), once the
  # window's audio is in; measured in the streaming run below where there is one.
  out["first_frame_latency_ms"] = (t_window + t_decode1) * 1e3
  out["first_frame_latency_source"] = "sum of the timed steps"
  # A live microphone also waits for one window of audio before the first window can run.
  out["audio_buffering_ms"] = w / warm.fps * 1e3
  if full_clip:
    list(stream.generate(mk(), audio[:(w + 3) * spf], chunk_samples=3200))  # Warm every code path once.
    for mode, chunk in (("offline", None), ("streaming", 3200)):
      s = mk()
      t0 = time.perf_counter()
      n = sum(1 for _ in stream.generate(s, audio, chunk_samples=chunk))
      dt = time.perf_counter() - t0
      out[f"{mode}_fps"] = n / dt
      out[f"{mode}_rtf"] = dt / (audio.size / 16000)
      if chunk is not None:
        out["first_frame_latency_ms"] = s.first_frame_latency * 1e3
        out["first_frame_latency_source"] = "measured in the streaming run"
    out["clip_seconds"] = audio.size / 16000
    out["live"] = bench_live(model, portrait, audio, marker, steps)
  return out


def bench_live(model, portrait, audio, marker, steps) -> dict:
  """Live mode (`live.simulate`): the audio played in real time in 20 ms chunks into a live-mode
  sampler; latency from each frame's sound being captured to the frame being ready."""
  mk = lambda: stream.StreamingSampler(model, portrait, steps=steps, seed=0, watermark=marker,  # noqa: E731
                                       live_hop=live.DEFAULT_HOP, decode_batch=1)
  warm = mk()
  warm.compile()
  list(live.LiveStream(warm, max_lag_s=None).push(audio[:warm.spf * (live.DEFAULT_HOP + 2)]))
  s = mk()
  run = live.simulate(s, audio, chunk_ms=live.DEFAULT_CHUNK_MS)
  seconds = audio.size / model.motion_cfg.media.sample_rate
  return {**run.latency_ms(), "hop_frames": live.DEFAULT_HOP, "window_frames": s.loop.live_window, "steps": s.steps,
          "chunk_ms": live.DEFAULT_CHUNK_MS,
          "max_lag_ms": live.DEFAULT_MAX_LAG_S * 1e3, "shown_fps": run.latency_ms()["frames"] / seconds,
          "diffusion_ms_per_step": float(np.mean(s.timings["diffusion"])) * 1e3,
          "decode_ms_per_frame": float(np.mean(s.timings["decode"])) * 1e3}


def main(args) -> int:
  if args.json:  # Checked before minutes of timing.
    media.require_output_path(args.json, (".json",), overwrite=args.overwrite)
  peak = perf.matmul_peak()
  device = jax.devices()[0]
  results = {"device": f"{device.platform}:{device.device_kind}", "cpu_count": os.cpu_count(),
             "machine": platform.machine(), "jax": jax.__version__, "matmul_peak_gflops": peak / 1e9,
             "face": []}
  print(f"device {results['device']} ({os.cpu_count()} cores), float32 matmul peak {peak / 1e9:.0f} GFLOP/s")
  sizes = {"demo": args.demo_batch, "paper": args.paper_batch}
  for name in args.configs:
    results["face"].append(bench_face(name, sizes.get(name, 1), peak, repeats=args.repeats))
  for name in args.pipeline:
    results.setdefault("pipeline", []).append(
        bench_pipeline(name, peak, seconds=args.seconds, full_clip=(name != "paper"), steps=args.steps))
  print("\nstage 1 (face latent): encode once per portrait, decode every frame")
  print(f"{'config':8s} {'res':>5s} {'enc ms':>8s} {'enc GFLOP':>10s} {'dec ms/frame':>13s} "
        f"{'dec GFLOP/frame':>16s} {'dec fps':>8s} {'% peak':>7s}")
  for r in results["face"]:
    print(f"{r['config']:8s} {r['resolution']:5d} {r['encode_ms']:8.1f} {r['encode_gflop']:10.2f} "
          f"{r['decode_ms_per_frame']:13.1f} {r['decode_gflop_per_frame']:16.2f} {r['decode_fps']:8.2f} "
          f"{100 * r['decode_peak_fraction']:6.1f}%")
  for r in results.get("pipeline", []):
    print(f"\nportrait + audio -> frames, config {r['config']} ({r['resolution']}px, W={r['window']}, K={r['context']}, "
          f"{r['steps']} DDIM steps x {r['guided_passes']} guided passes), random weights")
    rows = [("portrait encode (once)", f"{r['portrait_encode_ms']:.1f} ms"),
            ("audio features per window", f"{r['audio_features_ms_per_window']:.1f} ms"),
            ("diffusion per window", f"{r['diffusion_ms_per_window']:.1f} ms "
             f"({r['diffusion_gflop_per_second_of_motion']:.1f} GFLOP per second of motion)"),
            ("decode per frame", f"{r['decode_ms_per_frame']:.1f} ms ({r['decode_gflop_per_frame']:.2f} GFLOP)"),
            ("video encode per frame", f"{r['video_encode_ms_per_frame']:.2f} ms"),
            ("model fps (diffusion + decode)", f"{r['model_fps']:.1f}"),
            ("FLOPs per frame", f"{r['gflop_per_frame']:.2f} GFLOP, {100 * r['peak_fraction']:.0f}% of peak"),
            ("first-frame latency (compute)", f"{r['first_frame_latency_ms']:.0f} ms "
             f"({r['first_frame_latency_source']}; + {r['audio_buffering_ms']:.0f} ms of audio buffering live)")]
    for mode in ("offline", "streaming"):
      if f"{mode}_fps" in r:
        rows.append((f"{mode} ({r['clip_seconds']:.0f} s clip)",
                     f"{r[f'{mode}_fps']:.1f} fps, real-time factor {r[f'{mode}_rtf']:.2f}"))
    if "live" in r:
      lv = r["live"]
      rows.append(("live: sound in -> frame ready", f"median {lv['median']:.0f} ms, 95% {lv['p95']:.0f} ms "
                   f"({lv['chunk_ms']:.0f} ms chunks in real time, hop {lv['hop_frames']} frames, window "
                   f"{lv['window_frames']}, {lv['steps']} DDIM steps; diffusion {lv['diffusion_ms_per_step']:.0f} ms per step, decode "
                   f"{lv['decode_ms_per_frame']:.0f} ms per frame; "
                   f"{lv['shown_fps']:.1f} fps shown, {lv['dropped']} frames later than "
                   f"{lv['max_lag_ms']:.0f} ms dropped)"))
    for a, b in rows:
      print(f"  {a:32s} {b}")
  if args.json:
    with media.atomic_output(args.json) as tmp:
      with open(tmp, "w") as f:
        json.dump(results, f, indent=1)
    print(f"\nwrote {args.json}")
  return 0


def parser():
  p = cli.make_parser("python -m vasa_jax.bench", "Benchmark the real code paths and print a table.")
  p.add_argument("--configs", nargs="*", default=["demo", "paper"], help="configs to measure stage 1 at")
  p.add_argument("--demo-batch", type=int, default=8, help="frames decoded per call at the demo config")
  p.add_argument("--paper-batch", type=int, default=1, help="frames decoded per call at the paper config")
  p.add_argument("--repeats", type=int, default=3, help="timing repeats (best is reported)")
  p.add_argument("--pipeline", nargs="*", default=["demo", "paper"],
                 help="configs to run the whole portrait+audio->frames path at (paper: per-stage only)")
  p.add_argument("--seconds", type=float, default=8.0, help="audio length for the full-clip runs")
  p.add_argument("--steps", type=int, help="DDIM steps (default: each config's)")
  p.add_argument("--json", help="write the results to this JSON file")
  p.add_argument("--overwrite", action="store_true", help="replace the --json file if it exists")
  return p


if __name__ == "__main__":
  cli.main_entry(main, parser())
