"""`python -m vasa_jax.app`: the web page, its HTTP API and the live streaming endpoint.

    browser / gradio_client -> Gradio page (queue: one job at a time) -> the sampler `sample` runs -> mp4
    microphone / LLM voice  -> WebSocket /live/ws (PCM chunks in, JPEG frames out) -> live sampler

One model is loaded at start (the demo bundle, or `--checkpoint DIR`) and one engine lock lets one
sampler run at a time: page jobs wait in Gradio's queue, live sessions wait for the lock, and every
job with the same settings reuses the same compiled steps. Inputs go through the checks `sample`
runs (`jobs.check`, `generate.check_settings`), so a bad input gets the CLI's one-line message.
Everything the app reads or writes lies in its own temporary folder (uploads, examples, videos),
which is removed on exit; uploads are limited in size, audio in duration.
"""

import argparse
import asyncio
import base64
import functools
import io
import json
import os
import queue
import shutil
import sys
import tempfile
import threading
import time
import uuid

import numpy as np

from vasa_jax import bundle as bundle_lib
from vasa_jax import cli, compile_cache, generate, jobs, live, media, sample, stream, verify
from vasa_jax import watermark as watermark_lib
from vasa_jax.data.synthetic import DISTANCE_RANGE, EMOTIONS
from vasa_jax.errors import UserError

WEB = os.path.join(os.path.dirname(os.path.abspath(__file__)), "web")
MAX_UPLOAD = "20mb"
MAX_AUDIO_SECONDS = 60.0       # page and API videos
MAX_LIVE_SECONDS = 300.0       # one live session
LIVE_IDLE_S = 30.0             # a live session without audio for this long is closed
FREE = "(free)"                # the emotion choice meaning 'not given'
UI_MAX_STEPS = 50              # the page's slider; the API accepts generate.STEPS_RANGE
PREVIEW_EVERY_S = 0.25         # at most this often a new preview frame is sent to the page


class Engine:
  """The loaded model, the app's folders, and the lock that lets one sampler run at a time."""

  def __init__(self, model: bundle_lib.Bundle, workdir: str, *, max_audio_seconds: float = MAX_AUDIO_SECONDS,
               max_live_seconds: float = MAX_LIVE_SECONDS):
    self.model, self.workdir = model, workdir
    self.max_audio_seconds, self.max_live_seconds = max_audio_seconds, max_live_seconds
    self.lock = threading.Lock()
    self.videos = os.path.join(workdir, "videos")
    self.examples = os.path.join(workdir, "examples")
    self.uploads = os.path.join(workdir, "uploads")
    for d in (self.videos, self.examples, self.uploads):
      os.makedirs(d, exist_ok=True)
    # The page offers copies of the bundled examples, so that it serves nothing outside its folder.
    self.example_portrait = shutil.copy(sample.DEMO_IMAGE, self.examples)
    self.example_photo = shutil.copy(sample.EXAMPLE_IMAGE, self.examples)
    self.example_audio = shutil.copy(sample.EXAMPLE_AUDIO, self.examples)
    self.sample_rate = model.motion_cfg.media.sample_rate

  def settings(self, *, steps=None, cfg_audio=None, cfg_gaze=None, label=False) -> argparse.Namespace:
    """`sample`'s run-wide flags for one page job (watermark always on)."""
    return argparse.Namespace(steps=steps, cfg_audio=cfg_audio, cfg_gaze=cfg_gaze, chunk_ms=200.0,
                              max_audio_seconds=self.max_audio_seconds, c2pa_cert=None, c2pa_key=None,
                              no_watermark=False, label=bool(label), quiet=True, offline=False)

  def warm_up(self) -> None:
    """Compiles the steps the page's defaults and live mode use, before the first user comes."""
    with self.lock:
      portrait = media.load_image(self.example_portrait)
      marker = watermark_lib.Watermarker(watermark_lib.make_payload(self.model.digest))
      sampler = stream.StreamingSampler(self.model, portrait, watermark=marker, live_hop=live.DEFAULT_HOP,
                                        decode_batch=1)
      sampler.compile()
      s = live.LiveStream(sampler, max_lag_s=None)
      list(s.push(np.zeros(self.sample_rate, np.float32)))
      stream.StreamingSampler(self.model, portrait, watermark=marker).compile()  # the video's batch decode


def _whole(name: str, value) -> int:
  if value is None or float(value) != int(float(value)):
    raise UserError(f"{name} {value!r} must be a whole number")
  return int(float(value))


def _model_name(model: bundle_lib.Bundle) -> str:
  same = model.path and os.path.realpath(model.path) == os.path.realpath(bundle_lib.DEMO_BUNDLE)
  return "the demo bundle" if same or not model.path else f"`{os.path.basename(os.path.normpath(model.path))}`"


def make_job(engine: Engine, portrait, audio, gaze_on, theta, phi, distance_on, distance, emotion, still,
             cfg_audio, cfg_gaze, steps, seed, label):
  """The page's inputs as `sample`'s job and settings, checked the way `sample` checks them."""
  if not portrait:
    raise UserError(f"no portrait given; upload {media.IMAGE_ACCEPTED}, take a webcam snapshot or pick the example")
  if not audio:
    raise UserError(f"no audio given; upload or record {media.AUDIO_ACCEPTED}")
  require_inside(portrait, engine.workdir, "image")
  require_inside(audio, engine.workdir, "audio")
  settings = engine.settings(steps=_whole("--steps", steps), cfg_audio=float(cfg_audio), cfg_gaze=float(cfg_gaze),
                             label=label)
  generate.check_settings(settings)
  out = os.path.join(engine.videos, f"vasa_jax_{uuid.uuid4().hex[:12]}.mp4")
  job = jobs.Job(portrait=portrait, audio=audio, out=out, seed=_whole("--seed", seed),
                 gaze=(float(theta), float(phi)) if gaze_on else None,
                 distance=float(distance) if distance_on else None,
                 emotion=None if emotion in (None, "", FREE) else str(emotion), still=bool(still))
  jobs.check(job, overwrite=False)
  return job, settings


def _range_checked_by_sample(gr, component):
  """`component` (a Slider or Number) with its range check left to `make_job` (the CLI's checks and
  one-line messages): Gradio's own check would answer an out-of-range API value in its wording,
  and would hold the API to the page's slider ends (`UI_MAX_STEPS`) instead of what `sample`
  accepts. (An instance attribute, not a subclass: Gradio writes a .pyi file beside the module of
  every Component subclass it sees defined.)"""
  precision = component.precision
  component.preprocess = lambda payload: None if payload is None else gr.Number.round_to_precision(payload, precision)
  return component


def build_page(engine: Engine):
  """The Gradio page: make a video, live, verify a video."""
  import gradio as gr

  model = engine.model
  d = model.motion_cfg.diffusion
  checked = functools.partial(_range_checked_by_sample, gr)
  theta, phi = jobs.GAZE_THETA_DEG, jobs.GAZE_PHI_DEG

  def make_video(portrait, webcam, audio, gaze_on, gaze_theta, gaze_phi, distance_on, distance, emotion, still,
                 cfg_audio, cfg_gaze, steps, seed, label, progress=gr.Progress()):
    try:
      job, settings = make_job(engine, webcam or portrait, audio, gaze_on, gaze_theta, gaze_phi, distance_on, distance,
                               emotion, still, cfg_audio, cfg_gaze, steps, seed, label)
      inputs = jobs.load(job, sample_rate=engine.sample_rate, max_seconds=engine.max_audio_seconds)
    except UserError as e:
      raise gr.Error(cli.one_line(e), print_exception=False)
    frames: queue.Queue = queue.Queue()
    result: dict = {}

    def work():
      try:
        with engine.lock:
          frames.put(("started", None, None))
          result["path"] = generate.make_video(model, job, inputs, settings,
                                               on_frame=lambda i, n, f: frames.put((i, n, f)))
      except BaseException as e:  # Reported to the page below.
        result["error"] = e
      finally:
        frames.put(None)

    threading.Thread(target=work, daemon=True).start()
    progress(0, desc="waiting for the model (another job or live session is running)")
    last, latest = 0.0, None
    while True:
      item = frames.get()
      if item is None:
        break
      i, n, frame = item
      if i == "started":
        progress(0, desc="compiling / first window")
        continue
      progress((i + 1, n), desc="frames", unit="frames")
      latest = frame
      if time.monotonic() - last >= PREVIEW_EVERY_S:
        last = time.monotonic()
        yield frame, None, None, f"frame {i + 1} of {n}"
    if "error" in result:
      e = result["error"]
      raise gr.Error(cli.one_line(e) if isinstance(e, UserError) else f"internal error: {cli.one_line(e)}",
                     print_exception=not isinstance(e, UserError))
    path = result["path"]
    yield latest, path, path, f"done: {os.path.basename(path)} (watermarked; check it in the verify tab)"

  def verify_video(path):
    if not path:
      raise gr.Error(f"no video given; upload {media.VIDEO_ACCEPTED}", print_exception=False)
    try:
      require_inside(path, engine.workdir, "video")
      media.require_file(path, "video", media.VIDEO_ACCEPTED)
      info = verify.report(path)
    except UserError as e:
      raise gr.Error(cli.one_line(e), print_exception=False)
    return verify.format_report(info), info["watermark_found"]

  with gr.Blocks(title="vasa_jax") as page:
    gr.Markdown("# vasa_jax: one portrait + speech -> a talking face\n"
                f"Model: {_model_name(model)} (checkpoint {model.digest}). Every video carries an invisible "
                "watermark and provenance metadata."
                + (" The demo model was trained on synthetic heads only." if _model_name(model).startswith("the demo")
                   else ""))
    with gr.Tab("Make a video"):
      with gr.Row():
        with gr.Column():
          # Uploads are plain files, checked by `sample`'s own loader (a gr.Image would decode them
          # first and answer a bad file with its own message); a webcam snapshot is always an image.
          portrait = gr.File(label=f"portrait ({media.IMAGE_ACCEPTED})", elem_id="portrait")
          gr.Examples([[engine.example_portrait], [engine.example_photo]], inputs=[portrait],
                      label="example portraits (a synthetic head the demo never saw; a real photo)")
          webcam = gr.Image(label="or a webcam snapshot (used instead of the file when taken)", type="filepath",
                            sources=["webcam"], elem_id="webcam")
          audio = gr.Audio(label=f"speech (at most {engine.max_audio_seconds:g} s)", type="filepath", format=None,
                           sources=["upload", "microphone"], elem_id="audio")
          gr.Examples([[engine.example_audio]], inputs=[audio], label="example speech")
          with gr.Accordion("controls", open=False):
            gaze_on = gr.Checkbox(label="set the gaze", value=False)
            gaze_theta = checked(gr.Slider(theta[0], theta[1], value=0.0, step=0.1, label="gaze theta (deg, > 0: left)"))
            gaze_phi = checked(gr.Slider(phi[0], phi[1], value=0.0, step=0.1, label="gaze phi (deg, > 0: up)"))
            distance_on = gr.Checkbox(label="set the distance", value=False)
            distance = checked(gr.Slider(DISTANCE_RANGE[0], DISTANCE_RANGE[1], value=1.0, step=0.01,
                                         label="head-to-camera distance (1 typical, < 1 closer)"))
            emotion = gr.Dropdown([FREE, *EMOTIONS], value=FREE, label="emotion")
            still = gr.Checkbox(label="still head (lips, eyes and expression still move)", value=False)
            cfg_audio = checked(gr.Slider(*generate.GUIDANCE_RANGE, value=float(d.cfg_audio), step=0.1,
                                          label="audio guidance lambda_A"))
            cfg_gaze = checked(gr.Slider(*generate.GUIDANCE_RANGE, value=float(d.cfg_gaze), step=0.1,
                                         label="gaze guidance lambda_g"))
            steps = checked(gr.Slider(1, UI_MAX_STEPS, value=int(d.sample_steps), step=1, label="diffusion steps"))
            seed = checked(gr.Number(0, precision=0, label="seed", minimum=jobs.SEED_RANGE[0],
                                     maximum=jobs.SEED_RANGE[1]))
            label = gr.Checkbox(label="visible 'AI-GENERATED' label", value=False)
          go = gr.Button("Generate", variant="primary", elem_id="generate")
        with gr.Column():
          preview = gr.Image(label="frames as they are made", type="numpy", interactive=False, height=260,
                             elem_id="preview")
          video = gr.Video(label="video (watermarked mp4)", interactive=False, height=300, elem_id="video")
          download = gr.File(label="download", interactive=False, elem_id="download")
          status = gr.Textbox(label="status", interactive=False, lines=2, elem_id="status")
      go.click(make_video, [portrait, webcam, audio, gaze_on, gaze_theta, gaze_phi, distance_on, distance, emotion, still,
                            cfg_audio, cfg_gaze, steps, seed, label],
               [preview, video, download, status], api_name="generate", concurrency_limit=1,
               concurrency_id="model")
    with gr.Tab("Live"):
      gr.Markdown("Speak into the microphone: the face answers as you speak, and the page shows the measured "
                  "delay from sound to mouth. (The browser asks for the microphone; it works on localhost "
                  "or https.)")
      gr.HTML('<iframe src="/live" allow="microphone; autoplay" style="width:100%;height:560px;border:0" '
              'title="live"></iframe>')
    with gr.Tab("Verify a video"):
      to_check = gr.File(label=f"video ({media.VIDEO_ACCEPTED})", elem_id="verify_in")
      check = gr.Button("Verify", elem_id="verify")
      report = gr.Textbox(label="report", lines=6, interactive=False, elem_id="verify_report")
      found = gr.Checkbox(label="watermark found", interactive=False, elem_id="verify_found")
      check.click(verify_video, [to_check], [report, found], api_name="verify", concurrency_limit=2)
  page.queue(max_size=32)
  return page


# --------------------------------------------------------------------------- live WebSocket


def _jpeg(frame_HxWx3: np.ndarray) -> bytes:
  from PIL import Image
  buf = io.BytesIO()
  Image.fromarray(frame_HxWx3).save(buf, "JPEG", quality=90)
  return buf.getvalue()


def live_config(engine: Engine, msg: dict) -> dict:
  """The first message of a live session, checked: `{"type": "start", "sample_rate": 16000,
  "format": "f32"|"s16", "portrait": base64 image or absent (the example), "steps", "seed", "still",
  "label", "hop", "max_lag_ms" (frames later than this are dropped; null: keep all)}`."""
  if msg.get("type") != "start":
    raise UserError('the first message must be {"type": "start", ...}')
  rate = msg.get("sample_rate", engine.sample_rate)
  if rate != engine.sample_rate:
    raise UserError(f"sample_rate {rate!r}: send {engine.sample_rate} Hz mono PCM")
  fmt = msg.get("format", "f32")
  if fmt not in ("f32", "s16"):
    raise UserError(f"format {fmt!r}: send 'f32' (float32 in -1..1) or 's16' (int16), little-endian")
  settings = engine.settings(steps=None if msg.get("steps") is None else _whole("steps", msg["steps"]),
                             label=msg.get("label", False))
  generate.check_settings(settings)
  seed = _whole("seed", msg.get("seed", 0))
  cli.check_range("seed", seed, *jobs.SEED_RANGE)
  hop = _whole("hop", msg.get("hop", live.DEFAULT_HOP))
  cli.check_range("hop", hop, 1, engine.model.motion_cfg.data.window)
  portrait = engine.example_portrait
  if msg.get("portrait"):
    data = msg["portrait"].split(",", 1)[-1]  # A data: URL or plain base64.
    try:
      raw = base64.b64decode(data, validate=True)
    except ValueError:
      raise UserError("portrait: not valid base64")
    if len(raw) > 20 * 2 ** 20:
      raise UserError("portrait: larger than 20 MB")
    portrait = os.path.join(engine.uploads, f"live_{uuid.uuid4().hex[:12]}.img")
    with open(portrait, "wb") as f:
      f.write(raw)
  max_lag = msg.get("max_lag_ms", live.DEFAULT_MAX_LAG_S * 1e3)
  if max_lag is not None and (not isinstance(max_lag, (int, float)) or max_lag <= 0):
    raise UserError(f"max_lag_ms {max_lag!r}: give a positive number of milliseconds, or null to keep every frame")
  return {"format": fmt, "portrait": portrait, "steps": settings.steps, "seed": seed, "hop": hop,
          "max_lag_s": None if max_lag is None else max_lag / 1e3,
          "still": bool(msg.get("still", False)), "label": settings.label}


def live_session(engine: Engine, cfg: dict, inbox: queue.Queue, send) -> None:
  """Runs one live session in a worker thread: `inbox` holds ("audio", samples, arrival time),
  ("end",) or ("close",); `send(obj)` sends text (a dict) or bytes: a frame is 8 bytes (uint32
  frame index, float32 server-side latency in ms, little-endian) followed by a JPEG."""
  if not engine.lock.acquire(blocking=False):
    send({"type": "queued", "message": "waiting for the model: another job or live session is running"})
    engine.lock.acquire()
  try:
    portrait = media.load_image(cfg["portrait"])
    marker = watermark_lib.Watermarker(watermark_lib.make_payload(engine.model.digest))
    sampler = stream.StreamingSampler(engine.model, portrait, watermark=marker, steps=cfg["steps"],
                                      seed=cfg["seed"], still=cfg["still"], label=cfg["label"],
                                      live_hop=cfg["hop"], decode_batch=1)
    session = live.LiveStream(sampler, max_lag_s=cfg["max_lag_s"])
    send({"type": "ready", "fps": sampler.fps, "sample_rate": engine.sample_rate,
          "samples_per_frame": sampler.spf, "checkpoint": engine.model.digest})

    def out(frames):
      for f in frames:
        send(np.array([f.index], "<u4").tobytes() + np.array([f.latency * 1e3], "<f4").tobytes() + _jpeg(f.frame))

    while True:
      try:
        items = [inbox.get(timeout=LIVE_IDLE_S)]
      except queue.Empty:  # A silent client must not hold the model.
        raise UserError(f"no audio for {LIVE_IDLE_S:g} s; live session closed")
      while not inbox.empty():
        items.append(inbox.get())
      ending = None
      for item in items:
        if item[0] == "audio":
          session.add(item[1], item[2])
        else:
          ending = item[0]
          break
      if session.received > engine.max_live_seconds * engine.sample_rate:
        raise UserError(f"live session longer than {engine.max_live_seconds:g} s of audio; start a new one")
      out(session.ready())
      if ending == "close":
        return
      if ending == "end":
        out(session.finish())
        send({"type": "done", "frames": len(session.frames), "latency_ms": session.latency_ms()})
        return
  finally:
    engine.lock.release()


def add_live_routes(app, engine: Engine) -> None:
  from fastapi import WebSocket, WebSocketDisconnect
  from fastapi.responses import HTMLResponse

  page = open(os.path.join(WEB, "live.html"), encoding="utf-8").read()

  @app.get("/live", response_class=HTMLResponse)
  def live_page():
    return page

  @app.websocket("/live/ws")
  async def live_ws(ws: WebSocket):
    await ws.accept()
    loop = asyncio.get_running_loop()

    def send(obj):
      coro = ws.send_text(json.dumps(obj)) if isinstance(obj, dict) else ws.send_bytes(obj)
      asyncio.run_coroutine_threadsafe(coro, loop).result()

    try:
      cfg = live_config(engine, json.loads(await ws.receive_text()))
    except (UserError, ValueError) as e:
      await ws.send_text(json.dumps({"type": "error", "message": cli.one_line(e)}))
      await ws.close()
      return
    inbox: queue.Queue = queue.Queue()
    worker = asyncio.ensure_future(asyncio.to_thread(live_session, engine, cfg, inbox, send))
    dtype = "<f4" if cfg["format"] == "f32" else "<i2"
    scale = 1.0 if cfg["format"] == "f32" else 1.0 / 32768.0
    try:
      while not worker.done():
        receive = asyncio.ensure_future(ws.receive())
        await asyncio.wait([receive, worker], return_when=asyncio.FIRST_COMPLETED)
        if not receive.done():
          receive.cancel()
          break
        msg = receive.result()
        if msg["type"] == "websocket.disconnect":
          inbox.put(("close",))
          break
        if msg.get("bytes") is not None:
          raw = msg["bytes"]
          pcm = np.frombuffer(raw[:len(raw) - len(raw) % np.dtype(dtype).itemsize], dtype)
          inbox.put(("audio", pcm.astype(np.float32) * scale, time.perf_counter()))
        elif msg.get("text") is not None and json.loads(msg["text"]).get("type") == "end":
          inbox.put(("end",))
      await worker
    except WebSocketDisconnect:
      inbox.put(("close",))
    except UserError as e:
      await ws.send_text(json.dumps({"type": "error", "message": cli.one_line(e)}))
    except Exception as e:  # A session's failure ends that session only.
      print(f"vasa_jax app: live session failed: {cli.one_line(e)}", file=sys.stderr)
      try:
        await ws.send_text(json.dumps({"type": "error", "message": f"internal error: {cli.one_line(e)}"}))
      except Exception:
        pass
    try:
      await ws.close()
    except Exception:
      pass


def build_server(engine: Engine):
  """The FastAPI app: the Gradio page at /, the live page at /live and its WebSocket at /live/ws."""
  import gradio as gr
  from fastapi import FastAPI

  app = FastAPI()
  add_live_routes(app, engine)
  page = build_page(engine)
  app = gr.mount_gradio_app(app, page, path="/", max_file_size=MAX_UPLOAD, ssr_mode=False,
                            allowed_paths=[], blocked_paths=[], footer_links=["api"])
  # Gradio checks that a file named in a request was uploaded (not any server path) only for
  # pages that `launch()` started; a mounted page skips it unless marked as launched.
  page.has_launched = True
  return app


def require_inside(path: str, folder: str, what: str) -> str:
  """A file given to the app must lie in its own folder (an upload or an example): a second fence
  beside Gradio's own check, so that no request can make the app read another file."""
  real, root = os.path.realpath(path), os.path.realpath(folder)
  if os.path.commonpath([real, root]) != root:
    raise UserError(f"{what} {path!r} was not uploaded to this app; upload the file")
  return path


def main(args) -> int:
  cli.check_range("--port", args.port, 1, 65535)
  cli.check_range("--max-audio-seconds", args.max_audio_seconds, *generate.MAX_AUDIO_SECONDS_RANGE)
  workdir = tempfile.mkdtemp(prefix="vasa_jax_app_")
  # Gradio keeps uploads and served outputs in its temporary folder: inside the app's own.
  os.environ["GRADIO_TEMP_DIR"] = os.path.join(workdir, "gradio")
  os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
  try:
    import gradio  # noqa: F401
    import uvicorn
  except ImportError:
    raise UserError("the app needs the app extra: pip install 'vasa_jax[app]'")
  try:
    cache = compile_cache.enable()
    model = generate.load_model(args.checkpoint, args.wav2vec2_path)
    engine = Engine(model, workdir, max_audio_seconds=args.max_audio_seconds)
    server = build_server(engine)
    if not args.no_warmup:
      threading.Thread(target=engine.warm_up, daemon=True).start()
    host = f"[{args.host}]" if ":" in args.host else args.host
    print(f"vasa_jax app: http://{host}:{args.port}/  (live WebSocket ws://{host}:{args.port}/live/ws; "
          f"compilations kept in {cache or 'no cache'}; files in {workdir})", flush=True)
    uvicorn.run(server, host=args.host, port=args.port, log_level="warning")
  finally:
    shutil.rmtree(workdir, ignore_errors=True)
  return 0


def parser():
  p = cli.make_parser("python -m vasa_jax.app", "A web page, HTTP API and live WebSocket for vasa_jax: portrait + "
                      "speech -> talking-face video, or live from a microphone.")
  p.add_argument("--checkpoint", help="inference bundle folder (python -m vasa_jax.train.export); default: the demo")
  p.add_argument("--wav2vec2-path", metavar="DIR", help="for a model trained on wav2vec2 features: your converted "
                 "wav2vec2 folder, instead of the path saved in the bundle")
  p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
  p.add_argument("--port", type=int, default=7860, help="port to listen on")
  p.add_argument("--max-audio-seconds", type=float, default=MAX_AUDIO_SECONDS,
                 help="refuse longer speech for a video, in seconds")
  p.add_argument("--no-warmup", action="store_true", help="do not compile the model before the first request")
  return p


if __name__ == "__main__":
  cli.main_entry(main, parser())
