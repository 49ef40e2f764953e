"""`python -m vasa_jax.sample --batch jobs.csv`: one video per CSV row, one loaded model.

jobs.csv is UTF-8 text with a header row; the columns may come in any order:

    portrait,audio,out,seed,gaze,distance,emotion,still
    alice.png,hello.wav,,,,,,
    bob.jpg,intro.mp3,bob_intro.mp4,7,5 -3,1.0,happy,yes

`portrait` and `audio` are required. The others may be left out or empty: an empty cell
takes the command's flag (`--seed`, `--gaze`, `--distance`, `--emotion`, `--still`) and
`out` defaults to `<portrait>_<audio>.mp4`. Relative paths are relative to the CSV's folder.
The run-wide flags (`--checkpoint`, `--steps`, `--overwrite`, ...) apply to every row.

Every row is checked first (values, files, outputs, then the decoded inputs) and a bad row
is reported and skipped; the model is loaded once, and the sampler compiled for the first
video serves every later one. A row that fails while its video is made is reported and the
next goes on. At the end the failed rows are listed again, and the exit status is 2 if any
row failed.
"""

import csv
import os
import sys

from vasa_jax import cli, generate, jobs, media
from vasa_jax.errors import UserError

COLUMNS = ("portrait", "audio", "out", "seed", "gaze", "distance", "emotion", "still")
REQUIRED = ("portrait", "audio")
HELP = ("a header row, then one row per video; columns portrait and audio (required), out, seed, gaze "
        "('THETA PHI'), distance, emotion and still (yes/no) (optional: an empty cell takes the flag's value); "
        "relative paths are relative to the CSV's folder")
_YES_NO = {"1": True, "yes": True, "y": True, "true": True, "0": False, "no": False, "n": False, "false": False}
# Flags that name one video's inputs or output: with --batch, the CSV does.
_PER_VIDEO_FLAGS = ("image", "audio", "out", "driving")


def read(path: str, defaults) -> list[tuple[int, jobs.Job | UserError]]:
  """(line number, its Job or what is wrong with it) per row; a broken file is one UserError."""
  media.require_file(path, "batch file", "a CSV file with a header row")
  folder = os.path.dirname(os.path.abspath(path))
  rows = []
  try:
    with open(path, newline="", encoding="utf-8-sig") as f:
      reader = csv.DictReader(f)
      reader.fieldnames = _check_header(path, reader.fieldnames)
      for record in reader:
        try:
          rows.append((reader.line_num, _job(record, folder, defaults)))
        except UserError as e:
          rows.append((reader.line_num, e))
  except UnicodeDecodeError:
    raise UserError(f"batch file {path!r} is not UTF-8 text; expected a CSV file") from None
  except csv.Error as e:
    raise UserError(f"batch file {path!r} is not a readable CSV file ({e})") from None
  if not rows:
    raise UserError(f"batch file {path!r} has no rows under its header")
  return rows


def _check_header(path: str, header: list[str] | None) -> list[str]:
  if not header:
    raise UserError(f"batch file {path!r} is empty; expected a header row naming {', '.join(COLUMNS)}")
  names = [name.strip() for name in header]
  unknown = [name for name in names if name not in COLUMNS]
  missing = [name for name in REQUIRED if name not in names]
  if unknown or missing:
    problem = f"unknown column {unknown[0]!r}" if unknown else f"no {missing[0]!r} column"
    raise UserError(f"batch file {path!r} has {problem}; the columns are {', '.join(COLUMNS)} "
                    f"({' and '.join(REQUIRED)} required)")
  return names


def _job(record: dict, folder: str, defaults) -> jobs.Job:
  if None in record:  # DictReader puts cells beyond the header under None.
    raise UserError(f"{len(record[None])} more cell(s) than the header has columns")
  cell = {name: (value or "").strip() for name, value in record.items()}.get
  for name in REQUIRED:
    if not cell(name):
      raise UserError(f"{name} is empty")
  path = lambda p: os.path.join(folder, os.path.expanduser(p))  # noqa: E731  (absolute paths stay)
  return jobs.Job(
      portrait=path(cell("portrait")), audio=path(cell("audio")),
      out=path(cell("out") or jobs.default_out(cell("portrait"), cell("audio"))),
      seed=_number(cell("seed"), int, "seed", "a whole number") if cell("seed") else defaults.seed,
      gaze=_gaze(cell("gaze")) if cell("gaze") else (None if defaults.gaze is None else tuple(defaults.gaze)),
      distance=_number(cell("distance"), float, "distance", "a number") if cell("distance") else defaults.distance,
      emotion=cell("emotion") or defaults.emotion,
      still=_yes_no(cell("still")) if cell("still") else defaults.still,
      from_csv=True)


def _number(text: str, kind, name: str, what: str):
  try:
    return kind(text)
  except ValueError:
    raise UserError(f"{name} {text!r} is not {what}") from None


def _gaze(text: str) -> tuple[float, float]:
  parts = text.replace(",", " ").split()
  try:
    theta, phi = (float(x) for x in parts)
  except ValueError:
    raise UserError(f"gaze {text!r}: give two numbers in degrees, THETA PHI (e.g. '5 -3')") from None
  return theta, phi


def _yes_no(text: str) -> bool:
  if text.lower() not in _YES_NO:
    raise UserError(f"still {text!r}: give yes or no")
  return _YES_NO[text.lower()]


def run(args, cache: str | None) -> int:
  """Makes every good row's video; returns the exit status (2 if any row failed)."""
  for flag in _PER_VIDEO_FLAGS:
    if getattr(args, flag) is not None:
      raise UserError(f"--{flag} does not go with --batch: the CSV names each video's inputs and output "
                      f"(columns {', '.join(COLUMNS)})")
  generate.check_settings(args)
  rows = read(args.batch, args)
  failed: dict[int, str] = {}

  def attempt(line: int, fn, *fn_args) -> bool:
    """Runs fn; a UserError fails the row (reported now and again at the end)."""
    try:
      fn(*fn_args)
      return True
    except UserError as e:
      failed[line] = cli.one_line(e)
      print(f"warning: {args.batch} line {line} skipped: {failed[line]}", file=sys.stderr, flush=True)
      return False

  outputs: dict[str, int] = {}
  todo = [(line, job) for line, job in rows if attempt(line, _check, job, line, outputs, args.overwrite)]
  if todo:
    model = generate.load_model(args.checkpoint, args.wav2vec2_path)

    def load(job, warn=True):
      return jobs.load(job, sample_rate=model.motion_cfg.media.sample_rate, max_seconds=args.max_audio_seconds,
                       warn=warn, crop=args.crop, face_index=args.face_index)

    # Every row's inputs are decoded before the first video is made (and let go again).
    todo = [(line, job) for line, job in todo if attempt(line, load, job)]
    compiling = generate.compiling_message(cache)
    for i, (line, job) in enumerate(todo):
      attempt(line, _make, model, job, load, args, compiling, f"{i + 1}/{len(todo)} {os.path.basename(job.out)}")
      compiling = None  # Only the first video compiles; the others reuse its steps.
  return _report(args.batch, len(rows), failed)


def _make(model, job: jobs.Job, load, args, compiling: str | None, desc: str) -> None:
  out = generate.make_video(model, job, load(job, warn=False), args, compiling=compiling, desc=desc)
  print(os.path.abspath(out), flush=True)


def _check(job: jobs.Job | UserError, line: int, outputs: dict[str, int], overwrite: bool) -> None:
  if isinstance(job, UserError):
    raise job
  jobs.check(job, overwrite=overwrite)
  first = outputs.setdefault(os.path.abspath(job.out), line)
  if first != line:
    raise UserError(f"out {job.out!r} is also the output of line {first}")


def _report(path: str, total: int, failed: dict[int, str]) -> int:
  for line, message in sorted(failed.items()):
    print(f"error: {path} line {line}: {message}", file=sys.stderr)
  if not failed:
    return 0
  lines = ", ".join(str(line) for line in sorted(failed))
  print(f"error: {len(failed)} of {total} rows failed (line{'s' if len(failed) > 1 else ''} {lines}); "
        f"{total - len(failed)} video(s) written", file=sys.stderr)
  return cli.EXIT_USAGE
