"""The app (`python -m vasa_jax.app`) as its users meet it: the README's API examples, bad inputs,
files outside the app's folder, the live WebSocket, and the page in a real headless browser.

One app server (the demo bundle) serves the whole module; its jobs use short audio.
"""

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

pytest.importorskip("gradio", reason="the app extra is not installed (pip install -e '.[app]')")
httpx = pytest.importorskip("httpx")

from vasa_jax import jobs, live, media, sample, verify  # noqa: E402
from vasa_jax.errors import UserError  # noqa: E402

pytestmark = pytest.mark.slow
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
  """An app server on a free port, up and warmed; its URL."""
  port = _free_port()
  log = open(tmp_path_factory.mktemp("app") / "app.log", "w+")
  proc = subprocess.Popen([sys.executable, "-m", "vasa_jax.app", "--port", str(port)], cwd=REPO,
                          stdout=log, stderr=subprocess.STDOUT)
  url = f"http://127.0.0.1:{port}"
  try:
    deadline = time.monotonic() + 300
    while True:
      assert proc.poll() is None, f"the app exited: {open(log.name).read()[-2000:]}"
      try:
        if httpx.get(url + "/", timeout=5).status_code == 200:
          break
      except httpx.HTTPError:
        pass
      assert time.monotonic() < deadline, "the app did not answer within 300 s"
      time.sleep(1)
    yield url
  finally:
    proc.terminate()
    try:
      proc.wait(30)
    except subprocess.TimeoutExpired:
      proc.kill()
    log.close()


@pytest.fixture(scope="module")
def short_speech(tmp_path_factory) -> str:
  """The first 1.6 s of the example speech: jobs stay short."""
  path = str(tmp_path_factory.mktemp("speech") / "speech_short.wav")
  audio = media.load_audio(sample.EXAMPLE_AUDIO)[:int(1.6 * media.SAMPLE_RATE)]
  import av
  with av.open(path, "w") as out:
    s = out.add_stream("pcm_s16le", rate=media.SAMPLE_RATE, layout="mono")
    frame = av.AudioFrame.from_ndarray((audio * 32767).astype(np.int16)[None], format="s16", layout="mono")
    frame.sample_rate = media.SAMPLE_RATE
    for packet in s.encode(frame):
      out.mux(packet)
    for packet in s.encode(None):
      out.mux(packet)
  return path


def _readme_examples() -> list[str]:
  text = open(os.path.join(REPO, "README.md"), encoding="utf-8").read()
  section = text[text.index("## App and API"):]
  section = section[:section.index("\n## ", 5)]
  return re.findall(r"```python\n(.*?)```", section, re.S)


def test_readme_client_examples_run(server, tmp_path):
  """Both README examples, as written (only the port differs): a verified video, then live frames."""
  examples = _readme_examples()
  assert len(examples) == 2 and "gradio_client" in examples[0] and "/live/ws" in examples[1]
  port = server.rsplit(":", 1)[1]
  outputs = []
  for i, code in enumerate(examples):
    script = tmp_path / f"example_{i}.py"
    script.write_text(code.replace("127.0.0.1:7860", f"127.0.0.1:{port}"))
    env = {**os.environ, "PYTHONPATH": REPO}  # this checkout's vasa_jax, as `python -m` gets it
    run = subprocess.run([sys.executable, str(script)], cwd=REPO, capture_output=True, text=True, timeout=600,
                         env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    outputs.append(run.stdout)
  assert re.search(r"^done: .*\.mp4", outputs[0], re.M) and "\nwatermark: FOUND" in outputs[0], outputs[0]
  n = int(re.search(r"^(\d+) frames", outputs[1], re.M).group(1))
  assert n == 50, outputs[1]  # 2 s of audio at 25 fps, every frame sent (none dropped at the end)


def _call(server: str, api: str, data: list) -> tuple[str, object]:
  """One raw HTTP API call (no client-side uploading): ('complete', outputs) or ('error', message)."""
  r = httpx.post(f"{server}/gradio_api/call/{api}", json={"data": data}, timeout=30)
  r.raise_for_status()
  event = None
  with httpx.stream("GET", f"{server}/gradio_api/call/{api}/{r.json()['event_id']}", timeout=600) as s:
    for line in s.iter_lines():
      if line.startswith("event: "):
        event = line[7:]
      elif line.startswith("data: ") and event in ("complete", "error"):
        return event, json.loads(line[6:])
  raise AssertionError("no result")


def test_files_outside_the_app_cannot_be_read(server, tmp_path):
  """A request naming a server file that was not uploaded is refused, and no path outside the app's
  folder is served, even a video the app itself could read."""
  outside = tmp_path / "outside.mp4"
  media.write_video(str(outside), [np.zeros((64, 64, 3), np.uint8)] * 5, 25)
  event, out = _call(server, "verify", [{"path": str(outside), "meta": {"_type": "gradio.FileData"}}])
  assert event == "error" and "not uploaded" in json.dumps(out), out
  for path in (str(outside), os.path.join(REPO, "README.md"), "/etc/passwd"):
    assert httpx.get(f"{server}/gradio_api/file={path}").status_code in (403, 404)


def test_uploads_over_the_size_limit_are_refused(server, tmp_path):
  big = tmp_path / "big.wav"
  big.write_bytes(b"\0" * (21 * 2 ** 20))  # over the app's 20 MB
  with open(big, "rb") as f:
    r = httpx.post(f"{server}/gradio_api/upload", files={"files": ("big.wav", f)}, timeout=120)
  assert r.status_code == 413, (r.status_code, r.text[:200])
  small = tmp_path / "small.wav"
  small.write_bytes(b"\0" * 1000)
  with open(small, "rb") as f:
    r = httpx.post(f"{server}/gradio_api/upload", files={"files": ("small.wav", f)}, timeout=120)
  assert r.status_code == 200 and r.json()[0].endswith("small.wav")


def test_bad_inputs_get_the_cli_messages(server, tmp_path, short_speech):
  """An upload that is no image, and speech over the app's limit: the one-line messages `sample` gives."""
  from gradio_client import Client, handle_file
  client = Client(server + "/", verbose=False)
  fake = tmp_path / "portrait.png"
  fake.write_text("this is not a picture")
  with pytest.raises(UserError) as cli_error:  # What the CLI says about the same file.
    media.load_image(str(fake))
  expected = str(cli_error.value).replace(str(fake), "<path>")
  with pytest.raises(Exception) as app_error:
    client.predict(portrait=handle_file(str(fake)), webcam=None, audio=handle_file(short_speech), api_name="/generate")
  said = re.sub(r"'/[^']*portrait\.png'", "'<path>'", str(app_error.value))
  assert expected in said and "\n" not in said.strip(), said
  long_audio = tmp_path / "long.wav"
  media_seconds = 61
  import av
  with av.open(str(long_audio), "w") as out:
    s = out.add_stream("pcm_s16le", rate=16000, layout="mono")
    frame = av.AudioFrame.from_ndarray(np.zeros((1, 16000 * media_seconds), np.int16), format="s16", layout="mono")
    frame.sample_rate = 16000
    for packet in list(s.encode(frame)) + list(s.encode(None)):
      out.mux(packet)
  with pytest.raises(UserError) as cli_error:
    media.load_audio(str(long_audio), max_seconds=60.0)
  with pytest.raises(Exception) as app_error:
    client.predict(portrait=handle_file(sample.DEMO_IMAGE), webcam=None, audio=handle_file(str(long_audio)), api_name="/generate")
  tail = str(cli_error.value).split("'")[-1]  # the part after the file name
  assert tail.strip() and tail in str(app_error.value), (str(cli_error.value), str(app_error.value))


@pytest.mark.parametrize("values, cli_says", [
    ({"cfg_audio": 99.0}, "--cfg-audio 99 is out of range; accepted: 0..10"),
    ({"steps": 5000}, "--steps 5000 is out of range; accepted: 1..1000"),
    ({"gaze_on": True, "gaze_theta": 80.0}, "--gaze 80 0 is out of range; accepted: theta -17.2..17.2"),
    ({"seed": -5}, "--seed -5 is out of range; accepted: 0..4294967295"),
])
def test_out_of_range_controls_get_the_cli_messages(server, short_speech, values, cli_says):
  """A value beyond a slider's end sent through the API: what `python -m vasa_jax.sample` says about
  the same value (its messages, as typed there), not Gradio's "greater than maximum value"."""
  from gradio_client import Client, handle_file
  client = Client(server + "/", verbose=False)
  with pytest.raises(Exception) as app_error:
    client.predict(portrait=handle_file(sample.DEMO_IMAGE), webcam=None, audio=handle_file(short_speech),
                   api_name="/generate", **values)
  said = str(app_error.value)
  assert cli_says in said and "\n" not in said.strip(), said


def test_concurrent_users_are_queued(server, short_speech):
  """Three users at once: every job finishes with its own verified video (one sampler at a time)."""
  from gradio_client import Client, handle_file
  client = Client(server + "/", verbose=False)
  jobs_ = [client.submit(portrait=handle_file(sample.DEMO_IMAGE), webcam=None, audio=handle_file(short_speech),
                         seed=i, still=True, api_name="/generate") for i in range(3)]
  videos = [j.result(timeout=600)[2] for j in jobs_]
  assert len(set(os.path.basename(v) for v in videos)) == 3
  reports = [verify.report(v) for v in videos]
  assert all(r["watermark_found"] for r in reports)
  assert len({r["payload"] for r in reports}) == 3  # each video its own generation id


def test_live_websocket_rejects_a_bad_start(server):
  from websockets.sync.client import connect
  with connect(server.replace("http", "ws") + "/live/ws") as ws:
    ws.send(json.dumps({"type": "start", "sample_rate": 44100}))
    msg = json.loads(ws.recv())
  assert msg == {"type": "error", "message": "sample_rate 44100: send 16000 Hz mono PCM"}


# --------------------------------------------------------------------------- a real browser


def _browser(extra_args=()):
  if not (CHROMIUM and CHROMEDRIVER):
    pytest.skip("Debian's chromium and chromium-driver are not installed (apt-get install chromium chromium-driver)")
  webdriver = pytest.importorskip("selenium.webdriver")
  from selenium.webdriver.chrome.service import Service
  opts = webdriver.ChromeOptions()
  opts.binary_location = CHROMIUM
  for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1000",
            "--autoplay-policy=no-user-gesture-required", *extra_args):
    opts.add_argument(a)
  return webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)


def _wait(driver, what, timeout: float, poll: float = 0.5):
  deadline = time.monotonic() + timeout
  while time.monotonic() < deadline:
    value = what(driver)
    if value:
      return value
    time.sleep(poll)
  raise AssertionError(f"timed out after {timeout:.0f} s")


def test_page_makes_a_video_that_verifies(server, short_speech, tmp_path):
  """Upload a portrait and speech in the page, press Generate, wait for the video, download it and
  find its watermark. VASA_JAX_SCREENSHOT=PATH also saves the finished page (the README's picture)."""
  from selenium.webdriver.common.by import By
  driver = _browser()
  try:
    driver.get(server + "/")
    _wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#portrait input[type=file]")
          and d.find_elements(By.CSS_SELECTOR, "#audio input[type=file]"), 60)
    driver.find_element(By.CSS_SELECTOR, "#portrait input[type=file]").send_keys(sample.DEMO_IMAGE)
    driver.find_element(By.CSS_SELECTOR, "#audio input[type=file]").send_keys(short_speech)
    # Both uploaded: the file's name is listed, the audio player replaces the drop zone.
    _wait(driver, lambda d: "synthetic_portrait" in d.find_element(By.CSS_SELECTOR, "#portrait").text
          and not d.find_elements(By.CSS_SELECTOR, "#audio button.upload-container"), 60)
    driver.find_element(By.CSS_SELECTOR, "#generate").click()
    link = _wait(driver, lambda d: [a.get_attribute("href") for a in d.find_elements(By.CSS_SELECTOR, "#download a")
                                    if (a.get_attribute("href") or "").endswith(".mp4")], 600)[0]
    status = driver.find_element(By.CSS_SELECTOR, "#status textarea").get_attribute("value")
    assert status.startswith("done: "), status
    video = tmp_path / "from_page.mp4"
    video.write_bytes(httpx.get(link, timeout=60).content)
    info = verify.report(str(video))
    assert info["watermark_found"] and info["checkpoint_matches_metadata"], verify.format_report(info)
    assert info["frames_used"] == 40  # 1.6 s at 25 fps
    if os.environ.get("VASA_JAX_SCREENSHOT"):
      _wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#video video"), 30)
      driver.set_window_size(1200, 1150)
      driver.execute_script("window.scrollTo(0, 0); document.querySelector('#video video').currentTime = 0.8")
      time.sleep(2)
      driver.save_screenshot(os.environ["VASA_JAX_SCREENSHOT"])
  finally:
    driver.quit()


def test_live_page_with_a_fake_microphone(server, tmp_path):
  """Chromium's fake microphone plays the example speech into the live page: frames arrive, drawn
  with the latency the page measures (printed; the README quotes it)."""
  from selenium.webdriver.common.by import By
  wav = tmp_path / "mic.wav"
  audio = media.load_audio(sample.EXAMPLE_AUDIO)
  import av
  with av.open(str(wav), "w") as out:
    s = out.add_stream("pcm_s16le", rate=16000, layout="mono")
    frame = av.AudioFrame.from_ndarray((audio * 32767).astype(np.int16)[None], format="s16", layout="mono")
    frame.sample_rate = 16000
    for packet in list(s.encode(frame)) + list(s.encode(None)):
      out.mux(packet)
  driver = _browser(["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                     f"--use-file-for-fake-audio-capture={wav}"])
  try:
    driver.get(server + "/live")
    driver.find_element(By.CSS_SELECTOR, "#start").click()
    _wait(driver, lambda d: d.execute_script("return window.vasaLive.frames") >= 50, 300)
    state = driver.execute_script("return window.vasaLive")
    driver.find_element(By.CSS_SELECTOR, "#stop").click()
  finally:
    driver.quit()
  assert not state["status"].startswith("error"), state["status"]
  lat = np.asarray(state["latencies"])
  assert len(lat) >= 50 and np.all(np.isfinite(lat)) and np.all(lat > 0), lat[:10]
  fps = (state["frames"] - 1) / max((state["lastFrameAt"] - state["firstFrameAt"]) / 1000, 1e-3)
  print(f"\nlive in the browser: {len(lat)} frames at {fps:.1f} fps, sound -> mouth median {np.median(lat):.0f} ms, "
        f"95% {np.percentile(lat, 95):.0f} ms, server part median {np.median(state['serverLatencies']):.0f} ms")


@pytest.mark.parametrize("argv, message", [
    (["--port", "0"], "error: --port 0 is out of range; accepted: 1..65535"),
    (["--checkpoint", "/nonexistent/bundle"], "error: checkpoint '/nonexistent/bundle' does not exist"),
])
def test_app_command_rejects_bad_flags_in_one_line(argv, message):
  run = subprocess.run([sys.executable, "-m", "vasa_jax.app", *argv], cwd=REPO, capture_output=True, text=True,
                       timeout=300)
  assert run.returncode == 2 and run.stderr.startswith(message) and run.stderr.count("\n") == 1, run.stderr
