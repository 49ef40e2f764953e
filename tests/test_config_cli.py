"""Configs load, override and reject bad keys; commands fail with one line and exit 2."""

import os
import subprocess
import sys

import pytest

from vasa_jax import cli, config, media, sample
from vasa_jax.errors import UserError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(REPO, "vasa_jax", "examples")


@pytest.mark.parametrize("name", config.available())
def test_every_shipped_config_loads_and_documents_its_command(name):
  cfg = config.load(name)
  assert cfg.name == name
  doc = open(os.path.join(config.CONFIG_DIR, name + ".py")).read()
  assert "python -m vasa_jax." in doc  # Each config says how to run it.


def test_overrides_keep_types():
  cfg = config.load("configs/tiny.py", [("face.image_size", "128"), ("media.max_audio_seconds", "5"),
                                        ("name", "mine")])
  assert cfg.face.image_size == 128 and isinstance(cfg.face.image_size, int)
  assert cfg.media.max_audio_seconds == 5.0 and isinstance(cfg.media.max_audio_seconds, float)
  assert cfg.name == "mine"


@pytest.mark.parametrize("key,value,fragment", [
    ("data.resolutio", "64", "unknown config key 'data.resolutio'"),
    ("nothing.here", "1", "unknown config key 'nothing.here'"),
    ("face.image_size", "big", "expects an integer"),
    ("media.max_audio_seconds", "long", "expects a number"),
    ("data", "3", "is a section"),
])
def test_bad_overrides_are_rejected_naming_the_key(key, value, fragment):
  with pytest.raises(UserError, match=fragment):
    config.load("tiny", [(key, value)])


def test_configs_ship_in_the_package_as_base_plus_deltas(tmp_path):
  assert os.path.dirname(config.CONFIG_DIR) == os.path.dirname(os.path.abspath(config.__file__))
  assert "base" not in config.available()
  # A run file is data over base.py's keys: a key base.py lacks is an error, not a silent new key.
  bad = tmp_path / "typo.py"
  bad.write_text("from vasa_jax.configs import base\n\ndef get_config():\n  c = base.get_config()\n"
                 "  c.train.stepz = 3\n  return c\n")
  with pytest.raises(UserError, match="stepz"):
    config.load(str(bad))


def test_locked_config_rejects_new_keys_in_code():
  cfg = config.load("tiny")
  with pytest.raises(AttributeError):
    cfg.data.not_a_key = 1


def test_missing_config_file_lists_known_ones():
  with pytest.raises(UserError, match="known configs: .*tiny"):
    config.load("configs/nope.py")


def _run(*args):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, env=env, cwd=REPO,
                        timeout=120)


def test_command_success_and_one_line_failures(tmp_path):
  ok = _run("vasa_jax.media", "--image", os.path.join(EXAMPLES, "portrait.jpg"),
            "--audio", os.path.join(EXAMPLES, "speech.wav"))
  assert ok.returncode == 0, ok.stderr
  assert "256x256" in ok.stdout and "4.00 s" in ok.stdout
  for args, fragment in [
      (["--image", str(tmp_path)], "is a directory"),
      (["--audio", os.path.join(EXAMPLES, "speech.wav"), "--config.media.max_audio_seconds=1"],
       "limit is 0:01 (split it, or raise --config.media.max_audio_seconds)"),
      (["--image", "x.png", "--config.data.nope=1"], "unknown config key 'data.nope'"),
      (["--frobnicate"], "unrecognized argument '--frobnicate'"),
  ]:
    res = _run("vasa_jax.media", *args)
    assert res.returncode == 2, (args, res.stderr)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], res.stderr
  debug = _run("vasa_jax.media", "--image", str(tmp_path), "--debug")
  assert debug.returncode != 0 and "Traceback" in debug.stderr


def test_too_long_audio_names_a_flag_the_command_accepts():
  with pytest.raises(UserError, match="raise --max-audio-seconds"):
    media.load_audio(os.path.join(EXAMPLES, "speech.wav"), max_seconds=1)
  assert "--max-audio-seconds" in sample.parser().format_help()


def test_help_explains_every_flag():
  res = _run("vasa_jax.media", "--help")
  assert res.returncode == 0
  for flag in ("--image", "--audio", "--video", "--config", "--debug", "--config.KEY=VALUE"):
    assert flag in res.stdout


def test_unexpected_failure_is_one_line_exit_1():
  parser = cli.make_parser("t", "test")

  def boom(args):
    raise ZeroDivisionError("division by zero")

  assert cli.run(boom, parser, []) == cli.EXIT_INTERNAL


def test_flag_prefixes_are_not_taken_for_flags(capsys):
  # Without a config (parse_args) and with one (parse_known_args plus --config.KEY overrides).
  for main, parser, args in [(sample.main, sample.parser(), ["--aud", "speech.wav"]),
                             (media._main, media._parser(), ["--aud", "speech.wav"])]:
    assert cli.run(main, parser, args) == cli.EXIT_USAGE
    assert "unrecognized argument" in capsys.readouterr().err
  assert not cli.make_parser("t", "test").allow_abbrev
