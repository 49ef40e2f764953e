"""`python -m vasa_jax.sample` as a new user meets it: output names, no silent overwrite, ranges,
help texts, the compiling message and cache, Ctrl-C at any moment, and `--batch`."""

import os
import re
import signal
import subprocess
import sys
import threading
import time
import wave

import numpy as np
import pytest

from vasa_jax import bundle, cli, compile_cache, jobs, media, sample, stream
from vasa_jax.errors import UserError



def _wav(path, seconds):
  """The example speech, repeated or cut to `seconds`, as 16 kHz mono 16-bit PCM."""
  speech = media.load_audio(sample.EXAMPLE_AUDIO)
  x = np.resize(speech, int(seconds * 16000))
  with wave.open(str(path), "wb") as w:
    w.setnchannels(1)
    w.setsampwidth(2)
    w.setframerate(16000)
    w.writeframes((x * 32767).astype("<i2").tobytes())
  return str(path)


# ----------------------------------------------------------------- checked before anything is loaded


def test_output_is_named_after_the_inputs_and_the_demo_keeps_its_name():
  job = lambda *argv: sample.job_from_args(sample.parser().parse_args(list(argv)))  # noqa: E731
  assert job().out == "vasa_jax_demo.mp4" and job().audio == sample.EXAMPLE_AUDIO
  assert job("--image", "me/alice.png", "--audio", "talks/hello.mp3").out == "alice_hello.mp4"
  assert job("--audio", "hello.wav").out == "synthetic_portrait_hello.mp4"
  driven = job("--image", "alice.png", "--driving", "clips/nod.mp4")
  assert driven.out == "alice_nod.mp4" and driven.audio is None  # The driving video's own sound.
  assert job("--driving", "nod.mp4", "--audio", "hello.wav").audio == "hello.wav"
  assert job("--audio", "hello.wav", "--out", "x.mp4").out == "x.mp4"


def test_an_existing_output_is_refused_without_overwrite(tmp_path, monkeypatch, capsys):
  monkeypatch.chdir(tmp_path)
  (tmp_path / "vasa_jax_demo.mp4").write_text("my notes, not a video\n")
  (tmp_path / "alice_speech.mp4").write_text("mine too\n")
  # Refused before the model is loaded: this checkpoint does not exist.
  for argv, name in [([], "vasa_jax_demo.mp4"), (["--image", sample.DEMO_IMAGE, "--audio", sample.EXAMPLE_AUDIO,
                                                  "--out", "alice_speech.mp4"], "alice_speech.mp4")]:
    assert cli.run(sample.main, sample.parser(), argv + ["--checkpoint", "no_such_bundle"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"output '{name}' already exists" in err[0] and "--overwrite" in err[0], err
  assert (tmp_path / "vasa_jax_demo.mp4").read_text() == "my notes, not a video\n"
  assert sorted(os.listdir(tmp_path)) == ["alice_speech.mp4", "vasa_jax_demo.mp4"]
  # With --overwrite the check passes (and the missing checkpoint is the next error).
  assert cli.run(sample.main, sample.parser(), ["--overwrite", "--checkpoint", "no_such_bundle"]) == 2
  assert "checkpoint 'no_such_bundle' does not exist" in capsys.readouterr().err


@pytest.mark.parametrize("argv,fragment", [
    (["--gaze", "400", "0"], "--gaze 400 0 is out of range; accepted: theta -17.2..17.2 and phi -11.5..11.5 degrees"),
    (["--gaze", "0", "12"], "--gaze 0 12 is out of range"),
    (["--distance", "-1"], "--distance -1 is out of range; accepted: 0.85..1.2"),
    (["--distance", "nan"], "--distance nan is out of range"),
    (["--steps", "0"], "--steps 0 is out of range; accepted: 1..1000"),
    (["--steps", "1001"], "--steps 1001 is out of range; accepted: 1..1000"),
    (["--cfg-audio", "11"], "--cfg-audio 11 is out of range; accepted: 0..10"),
    (["--cfg-gaze", "-1"], "--cfg-gaze -1 is out of range; accepted: 0..10"),
    (["--seed", "-1"], "--seed -1 is out of range; accepted: 0..4294967295"),
    (["--seed", str(2 ** 32)], "--seed 4294967296 is out of range"),
    (["--emotion", "2,0,0,0,0"], "each weight must lie in 0..1"),
    (["--emotion", "0,0,0,0,0"], "each weight must lie in 0..1"),
    (["--chunk-ms", "0"], "--chunk-ms 0 is out of range; accepted: 1..60000"),
    (["--max-audio-seconds", "0"], "--max-audio-seconds 0 is out of range; accepted: 1..86400"),
])
def test_out_of_range_controls_name_the_accepted_range(argv, fragment, tmp_path, capsys):
  out = str(tmp_path / "o.mp4")
  # The checkpoint does not exist: each value is refused before anything is loaded.
  assert cli.run(sample.main, sample.parser(), argv + ["--out", out, "--checkpoint", "no_such_bundle"]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith("error: ") and fragment in err[0], err
  assert not os.path.exists(out)


def test_the_trained_control_ranges_are_accepted():
  lo = jobs.Job(portrait="p.png", audio="a.wav", out="o.mp4", seed=jobs.SEED_RANGE[1],
                gaze=(jobs.GAZE_THETA_DEG[0], jobs.GAZE_PHI_DEG[1]), distance=jobs.DISTANCE_RANGE[0],
                emotion="0.5,0.5,0,0,0")
  with pytest.raises(UserError, match="image 'p.png' does not exist"):  # Past every value check.
    jobs.check(lo, overwrite=False)


def test_help_says_what_a_user_needs_to_know():
  text = " ".join(sample.parser().format_help().split())
  assert "5x faster" not in text and "10 for the demo" in text                 # --steps
  assert "the same video only with --no-watermark" in text                     # --seed
  assert "the driving video's own sound unless --audio is given" in text       # --driving
  assert "16 kHz mono AAC" in text and "converted to 16 kHz mono" in text      # output and input audio
  assert "--overwrite" in text and "vasa_jax_demo.mp4" in text and compile_cache.ENV in text


def test_compile_cache_folder_follows_the_environment(tmp_path, capsys, monkeypatch):
  assert compile_cache.folder({}) == os.path.expanduser("~/.cache/vasa_jax/jax")
  assert compile_cache.folder({compile_cache.ENV: "off"}) is None
  assert compile_cache.folder({compile_cache.ENV: str(tmp_path / "c")}) == str(tmp_path / "c")
  # The tests (and the commands they start) never use the home folder's cache.
  assert compile_cache.folder() != compile_cache.folder({})
  monkeypatch.setenv(compile_cache.ENV, "off")
  assert compile_cache.enable() is None
  (tmp_path / "file").write_text("")
  monkeypatch.setenv(compile_cache.ENV, str(tmp_path / "file" / "cache"))
  assert compile_cache.enable() is None
  assert "warning: compilation cache" in capsys.readouterr().err


# ----------------------------------------------------------------- with the tiny model


@pytest.mark.slow
def test_compiling_is_said_and_the_bar_starts_with_the_first_frame(tiny_bundle, tmp_path, capsys):
  out = str(tmp_path / "talk.mp4")
  speech = _wav(tmp_path / "speech.wav", 3.0)
  assert cli.run(sample.main, sample.parser(), ["--checkpoint", tiny_bundle, "--audio", speech, "--out", out]) == 0
  err = capsys.readouterr().err
  assert err.startswith("vasa_jax: compiling the model for this machine (kept in ")
  assert re.search(r"\b1/75\b", err) and not re.search(r"\b0/75\b", err), err  # Never a bar at 0%.


@pytest.mark.slow
def test_driving_video_with_audio_takes_that_audio(tiny_bundle, tmp_path):
  from vasa_jax.data import synthetic
  drv = str(tmp_path / "drv.mp4")
  media.write_video(drv, synthetic.make_clip(3, 5, 12, 64, "train")["frames"], 25)
  out = str(tmp_path / "driven.mp4")
  assert cli.run(sample.main, sample.parser(), ["--checkpoint", tiny_bundle, "--driving", drv, "--audio",
                                                sample.EXAMPLE_AUDIO, "--out", out, "--quiet"]) == 0
  frames, fps, audio = media.read_video(out)
  assert len(frames) == 12 and audio is not None and abs(audio.size / 16000 - 12 / 25) <= 1 / 25


def _catches_sigterm(pid):
  """Whether the process has a handler for SIGTERM: `interrupt` is installed (Python alone has none)."""
  with open(f"/proc/{pid}/status") as f:
    mask = next(int(line.split()[1], 16) for line in f if line.startswith("SigCgt:"))
  return bool(mask >> (signal.SIGTERM - 1) & 1)


def _run_and_interrupt(argv, cwd, when, env):
  """Starts `python -m vasa_jax.sample ARGV`, sends SIGINT once `when(stderr so far, pid)`."""
  proc = subprocess.Popen([sys.executable, "-m", "vasa_jax.sample", *argv], cwd=cwd, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)
  err = bytearray()

  def read():
    while chunk := os.read(proc.stderr.fileno(), 4096):
      err.extend(chunk)

  reader = threading.Thread(target=read)
  reader.start()
  start = time.monotonic()
  try:
    while not when(bytes(err), proc.pid):
      assert proc.poll() is None, f"finished before the moment came: {err.decode()}"
      assert time.monotonic() - start < 300
      time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    status = proc.wait(timeout=60)
  finally:
    proc.kill()
    reader.join()
  return status, err.decode()


@pytest.mark.slow
@pytest.mark.parametrize("moment", ["importing", "compiling", "writing frames"])
def test_ctrl_c_at_any_moment_exits_130_and_leaves_nothing(moment, tiny_bundle, tmp_path):
  when = {"importing": lambda err, pid: _catches_sigterm(pid),   # Installed as vasa_jax is imported.
          "compiling": lambda err, pid: b"compiling" in err,
          "writing frames": lambda err, pid: re.search(rb"\b[1-9]\d*/750\b", err)}[moment]
  speech = _wav(tmp_path / "speech.wav", 30.0)
  out_dir = tmp_path / "out"
  out_dir.mkdir()
  env = dict(os.environ, VASA_JAX_COMPILE_CACHE="off")  # Compile for real: no cache to load from.
  status, err = _run_and_interrupt(["--checkpoint", tiny_bundle, "--audio", speech, "--out", "talk.mp4"],
                                   out_dir, when, env)
  assert status == 130, (status, err)   # A segmentation fault is -11.
  assert moment != "importing" or "compiling" not in err
  assert err.endswith("error: interrupted\n") and "Traceback" not in err, err
  assert os.listdir(out_dir) == []      # Not the video, not its half-written temporary file.


@pytest.mark.slow
def test_compilations_are_cached_across_runs(tiny_bundle, tmp_path):
  cache = tmp_path / "cache"
  env = dict(os.environ, VASA_JAX_COMPILE_CACHE=str(cache))
  speech = _wav(tmp_path / "speech.wav", 1.0)
  res = subprocess.run([sys.executable, "-m", "vasa_jax.sample", "--checkpoint", tiny_bundle, "--audio", speech,
                        "--quiet"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
  assert res.returncode == 0, res.stderr
  assert (tmp_path / "synthetic_portrait_speech.mp4").exists()
  names = os.listdir(cache)
  assert any(n.startswith("jit_decode") for n in names) and any(n.startswith("jit_step") for n in names), names


# ----------------------------------------------------------------- --batch


@pytest.mark.slow
def test_batch_makes_every_good_row_with_one_model_and_reports_the_bad_ones(tiny_bundle, tmp_path, monkeypatch,
                                                                             capsys):
  speech = _wav(tmp_path / "hello.wav", 1.0)
  portrait = sample.DEMO_IMAGE
  (tmp_path / "jobs.csv").write_text(
      "portrait,audio,out,seed,gaze,emotion,still\n"
      f"{portrait},hello.wav,first.mp4,3,5 -3,happy,yes\n"
      f"{portrait},missing.wav,bad.mp4,,,,\n"
      f"{portrait},{speech},,,400 0,,\n"
      f"{portrait},hello.wav,,,,,\n")
  loads, samplers = [], []
  real_load, real_compile = bundle.load, stream.StreamingSampler.compile
  monkeypatch.setattr(bundle, "load", lambda path: loads.append(path) or real_load(path))
  monkeypatch.setattr(stream.StreamingSampler, "compile", lambda self: samplers.append(self) or real_compile(self))
  status = cli.run(sample.main, sample.parser(), ["--batch", str(tmp_path / "jobs.csv"), "--checkpoint", tiny_bundle,
                                                  "--steps", "2", "--quiet"])
  out, err = capsys.readouterr()
  assert status == 2, err
  written = [str(tmp_path / "first.mp4"), str(tmp_path / "synthetic_portrait_hello.mp4")]
  assert out.split() == written
  for path in written:
    assert len(media.read_video(path)[0]) == 25
  assert not (tmp_path / "bad.mp4").exists() and not [f for f in os.listdir(tmp_path) if ".partial" in f]
  csv = str(tmp_path / "jobs.csv")
  assert f"error: {csv} line 3: audio '{tmp_path / 'missing.wav'}' does not exist" in err
  assert f"error: {csv} line 4: gaze 400 0 is out of range; accepted: theta -17.2" in err
  assert err.strip().splitlines()[-1] == "error: 2 of 4 rows failed (lines 3, 4); 2 video(s) written"
  # One model for all rows, and one set of compiled steps.
  assert len(loads) == 1 and len(samplers) == 2
  assert samplers[0].decode_step is samplers[1].decode_step
  assert samplers[0].window_step is samplers[1].window_step


@pytest.mark.parametrize("content,fragment", [
    ("", "is empty (0 bytes); expected a CSV file with a header row"),
    ("\n", "is empty; expected a header row naming portrait, audio"),
    ("portrait,sound\na.png,b.wav\n", "unknown column 'sound'"),
    ("portrait,out\na.png,b.mp4\n", "no 'audio' column"),
    ("portrait,audio\n", "has no rows under its header"),
])
def test_a_broken_batch_file_is_one_error(content, fragment, tmp_path, capsys):
  (tmp_path / "jobs.csv").write_text(content)
  assert cli.run(sample.main, sample.parser(), ["--batch", str(tmp_path / "jobs.csv"),
                                                "--checkpoint", "no_such_bundle"]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and fragment in err[0], err


def test_batch_rows_are_checked_before_the_model_is_loaded(tmp_path, capsys):
  (tmp_path / "jobs.csv").write_text("portrait,audio,seed,still,distance\n"
                                     "a.png,b.wav,x,,\n"
                                     "a.png,b.wav,,maybe,\n"
                                     "a.png,b.wav,,,far\n"
                                     "a.png,b.wav,1,no,1,extra\n"
                                     ",b.wav,,,\n")
  assert cli.run(sample.main, sample.parser(), ["--batch", str(tmp_path / "jobs.csv"),
                                                "--checkpoint", "no_such_bundle"]) == 2
  err = capsys.readouterr().err
  for fragment in ["line 2: seed 'x' is not a whole number", "line 3: still 'maybe': give yes or no",
                   "line 4: distance 'far' is not a number", "line 5: 1 more cell(s) than the header",
                   "line 6: portrait is empty", "5 of 5 rows failed (lines 2, 3, 4, 5, 6); 0 video(s) written"]:
    assert fragment in err, (fragment, err)
  assert "no_such_bundle" not in err   # Nothing left to make: the model is never loaded.
  assert cli.run(sample.main, sample.parser(), ["--batch", str(tmp_path / "jobs.csv"), "--image", "x.png"]) == 2
  assert "--image does not go with --batch" in capsys.readouterr().err
