"""Real talking-head videos -> a corpus of face-aligned clips, in the synthetic corpus' record format.

    python -m vasa_jax.data.prepare --videos DIR|LIST --out CORPUS --config configs/demo.py [--workers N]

Per video: decode (PyAV), resample to the config's fps by the frames' time stamps (variable frame
rates included), follow one face (`faces.FaceTracker`), split at scene cuts and where the face is
lost or a second face appears, cut a smoothed square crop around the face at the config's
resolution (`faces.CROP_SCALE`: framed like the synthetic heads), take the sound as 16 kHz mono in
sync, and write each stretch as clips of at most `--clip-seconds`. Every clip keeps its 478
landmarks per frame (`landmarks`, crop coordinates in [0, 1], float16), the crop box in the source
(`crop_box`: cx, cy, side in source pixels) and pseudo-labels under the synthetic names
(`face_labels`). Splits go by identity: `benchmark` takes the identities whose name hashes into
`--benchmark-share`, `train` the rest, so the benchmark holds out people.

An identity is the first folder under DIR (VoxCeleb's `id10001/<video>/00001.mp4`), or the video's
own name for files directly in DIR; a LIST file has one video per line, optionally `path,identity`.

Resumable: each finished video leaves `.prepare/<key>.array_record` and `<key>.json` (written under
temporary names, then renamed); a re-run skips them, and the corpus (shards + manifest) is rebuilt
from them atomically at the end of every run, so no clip appears twice and no half-written shard is
ever listed. `prepare_report.json` names every video with its clips or the reason it was skipped.

CORPUS may be `gs://bucket/folder`: work files, shards and report are written locally under temporary
names and then uploaded, each as one object that appears only once whole (`paths.put`), in the same
order (records before the .json that marks a video done, shards before the manifest).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
import zlib

import av
import numpy as np

from vasa_jax import cli, faces, interrupt, media, paths
from vasa_jax.data import face_labels
from vasa_jax.data import records
from vasa_jax.errors import UserError

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v")
WORK = ".prepare"
REPORT = "prepare_report.json"
# A frame-to-frame jump of the face centre by this share of the face's size, or of its size by this
# ratio, is a scene cut (a face does not move that far in 1/25 s).
CUT_MOVE, CUT_SCALE = 0.5, 1.3
# Grey 32x32 thumbnails differing on average by this many levels (0..255): a scene cut.
CUT_PIXELS = 40.0
# A time-stamp step this far from the median step: the frame rate is variable.
VFR_TOLERANCE = 0.2
SMOOTH_SECONDS = 0.3


@dataclasses.dataclass
class Settings:
  fps: int
  resolution: int
  sample_rate: int
  min_frames: int
  max_frames: int
  benchmark_share: float


def identity_id(name: str) -> int:
  """A stable integer for an identity name (the records store integers)."""
  return int(hashlib.sha1(name.encode()).hexdigest()[:8], 16) & 0x7FFFFFFF


def split_of(name: str, share: float) -> str:
  return "benchmark" if (identity_id(name) % 1000) < share * 1000 else "train"


def video_key(path: str) -> str:
  """A file name for a video's work files: its name plus a hash of its full path."""
  stem = "".join(c if c.isalnum() or c in "-_" else "_" for c in os.path.splitext(os.path.basename(path))[0])
  full = os.path.abspath(path) if paths.is_local(path) else path
  return f"{stem[:40]}-{zlib.crc32(full.encode()):08x}"


def list_videos(spec: str) -> list[tuple[str, str]]:
  """(path, identity name) of every video in a folder (recursively) or a list file; local or gs://."""
  if not paths.is_local(spec):
    return _list_remote_videos(spec)
  if os.path.isdir(spec):
    out = []
    for root, dirs, files in os.walk(spec):
      dirs[:] = sorted(d for d in dirs if not d.startswith("."))
      for f in sorted(files):
        if f.lower().endswith(VIDEO_SUFFIXES):
          path = os.path.join(root, f)
          rel = os.path.relpath(path, spec).split(os.sep)
          out.append((path, rel[0] if len(rel) > 1 else os.path.splitext(f)[0]))
    if not out:
      raise UserError(f"--videos {spec!r} holds no video ({', '.join(VIDEO_SUFFIXES)} files, searched recursively)")
    return out
  media.require_file(spec, "--videos list", "a folder of videos or a text file with one video path per line")
  with open(spec) as f:
    return _parse_list(spec, f.read(), os.path.dirname(os.path.abspath(spec)))


def _parse_list(spec: str, text: str, base: str) -> list[tuple[str, str]]:
  out = []
  for line in text.splitlines():
    line = line.strip()
    if not line or line.startswith("#"):
      continue
    path, _, ident = (p.strip() for p in line.partition(","))
    path = path if os.path.isabs(path) or not paths.is_local(path) else os.path.join(base, path)
    out.append((path, ident or os.path.splitext(os.path.basename(path))[0]))
  if not out:
    raise UserError(f"--videos {spec!r} lists no video; give one path per line (optionally path,identity)")
  return out


def _list_remote_videos(spec: str) -> list[tuple[str, str]]:
  """`list_videos` for a gs:// folder or list file (Dataflow's workers share only GCS)."""
  top = spec.rstrip("/")
  try:
    if not paths.path(top).is_dir():
      return _parse_list(spec, paths.path(top).read_text(), top.rsplit("/", 1)[0])
    found = [os.fspath(f) for f in paths.files(top)]
  except FileNotFoundError:
    raise UserError(f"--videos {spec!r} does not exist; expected a folder of videos or a text file with one "
                    "video path per line") from None
  except ImportError:
    raise UserError(f"--videos {spec}: reading gs:// needs gcsfs: pip install 'vasa_jax[gcs]'") from None
  except Exception as e:  # pylint: disable=broad-except  # gcsfs raises OSError, HttpError or auth errors
    raise UserError(f"--videos {spec}: cannot read it ({type(e).__name__}: {cli.one_line(e)})") from None
  out = []
  for path in sorted(found):
    rel = path[len(top) + 1:].split("/")
    if rel[-1].lower().endswith(VIDEO_SUFFIXES) and not any(d.startswith(".") for d in rel[:-1]):
      out.append((path, rel[0] if len(rel) > 1 else os.path.splitext(rel[-1])[0]))
  if not out:
    raise UserError(f"--videos {spec!r} holds no video ({', '.join(VIDEO_SUFFIXES)} files, searched recursively)")
  return out


# --------------------------------------------------------------------------- one video


class Skip(Exception):
  """This video gives no clip; the message is the report's reason."""


def _resampled_frames(path: str, fps: int):
  """(output index, frame time s, RGB uint8 frame) at `fps`, each output time taking the latest
  decoded frame at or before it; and, after the last, a dict of what was seen (vfr, duration)."""
  try:
    container = av.open(path, metadata_errors="ignore")
  except (av.error.FFmpegError, UnicodeDecodeError) as e:
    raise Skip(f"cannot be decoded: {media._short(e)}") from None
  with container:
    if not container.streams.video:
      raise Skip("has no video track")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    k, prev, start, steps = 0, None, None, []
    try:
      for frame in container.decode(stream):
        if frame.pts is None or frame.time_base is None:
          continue
        t = float(frame.pts * frame.time_base)
        if start is None:
          start = t
        t -= start
        if prev is not None:
          steps.append(t - prev[0])
          while k / fps < t:         # output times passed before this frame show the previous one
            yield k, k / fps, prev[1]
            k += 1
        prev = (t, frame.to_ndarray(format="rgb24"))
    except av.error.FFmpegError as e:
      if prev is None:
        raise Skip(f"cannot be decoded: {media._short(e)}") from None
      # A damaged tail: keep what decoded (the report says so).
      yield {"damaged": media._short(e)}
    if prev is None:
      raise Skip("contains no decodable frame")
    last = prev[0] + (np.median(steps) if steps else 1.0 / fps)
    while k / fps < last:
      yield k, k / fps, prev[1]
      k += 1
    steps = np.asarray(steps)
    vfr = bool(len(steps) > 2 and np.any(np.abs(steps - np.median(steps)) > VFR_TOLERANCE * np.median(steps)))
    yield {"vfr": vfr, "start": start, "frames": k}


def _thumb(frame: np.ndarray) -> np.ndarray:
  h, w = frame.shape[:2]
  g = frame.mean(-1)
  return g[:h - h % 32, :w - w % 32].reshape(32, (h - h % 32) // 32, 32, (w - w % 32) // 32).mean((1, 3))


def track_video(path: str, s: Settings) -> tuple[list, np.ndarray, dict]:
  """Pass 1: per output frame, landmarks (or None), faces seen, and a scene-cut flag."""
  tracker = faces.FaceTracker(detect_every=max(1, s.fps // 2))
  lms, counts, cuts, info, thumb = [], [], [], {}, None
  for item in _resampled_frames(path, s.fps):
    if isinstance(item, dict):
      info.update(item)
      continue
    _, _, frame = item
    new = _thumb(frame)
    cut = thumb is not None and float(np.abs(new - thumb).mean()) > CUT_PIXELS
    thumb = new
    if cut:
      tracker.previous = None   # Re-detect after a cut.
    step = tracker.step(frame)
    lms.append(step.landmarks)
    counts.append(-1 if step.num_faces is None else step.num_faces)
    cuts.append(cut)
  return lms, np.asarray(counts), {**info, "cuts": np.asarray(cuts, bool)}


def segments(lms: list, counts: np.ndarray, cuts: np.ndarray, s: Settings) -> tuple[list, dict]:
  """Stretches [start, end) of frames with one followed face, cut at scene cuts; and the frames
  dropped, by reason."""
  n = len(lms)
  bad = {"no face": np.array([lm is None for lm in lms], bool), "several faces": np.zeros(n, bool)}
  # The detector runs every few frames: a second face marks the frames until it runs again.
  runs = np.flatnonzero(counts >= 0)
  for i, j in zip(runs, list(runs[1:]) + [n]):
    if counts[i] > 1:
      bad["several faces"][i:j] = True
  cut = cuts.copy()
  for t in range(1, n):   # A face that jumps is a cut too (the same shot cannot move it that far).
    if lms[t] is not None and lms[t - 1] is not None:
      (e0, s0), (e1, s1) = faces.face_frame(lms[t - 1]), faces.face_frame(lms[t])
      if np.linalg.norm(e1 - e0) > CUT_MOVE * s0 or max(s1 / s0, s0 / s1) > CUT_SCALE:
        cut[t] = True
  good = ~(bad["no face"] | bad["several faces"])
  segs, start = [], None
  for t in range(n + 1):
    if t < n and good[t] and not (cut[t] and start is not None):
      if start is None:
        start = t
      continue
    if start is not None:
      segs.append((start, t))
      start = t if (t < n and good[t]) else None
  dropped = {k: int(v.sum()) for k, v in bad.items() if v.any()}
  if cut[1:].any():
    dropped["scene cuts"] = int(cut[1:].sum())
  return segs, dropped


def process_video(path: str, identity: str, s: Settings, local: str | None = None) -> tuple[list[bytes], dict]:
  """Encoded clip records of one video and its report entry; `local`: a local copy of a gs:// `path`."""
  entry = {"video": path, "identity": identity, "clips": [], "frames": 0}
  src = local or path
  try:
    with av.open(src, metadata_errors="ignore") as c:
      has_audio = bool(c.streams.audio)
      a = c.streams.audio[0] if has_audio else None
      audio_start = float(a.start_time * a.time_base) if a is not None and a.start_time is not None else 0.0
  except (av.error.FFmpegError, UnicodeDecodeError) as e:
    return [], {**entry, "status": "skipped", "reason": f"cannot be decoded: {media._short(e)}"}
  try:
    if not has_audio:
      raise Skip("has no audio track (the clips need speech)")
    lms, counts, info = track_video(src, s)
    audio = media.load_audio(src, sample_rate=s.sample_rate, max_seconds=24 * 3600.0, allow_silence=True)
    # Sound in sync with the first frame: drop (or pad) what lies before (after) it.
    shift = int(round((info.get("start", 0.0) - audio_start) * s.sample_rate))
    audio = audio[shift:] if shift >= 0 else np.pad(audio, (-shift, 0))
    segs, dropped = segments(lms, counts, info["cuts"], s)
    notes = []
    if info.get("vfr"):
      notes.append("variable frame rate: resampled by time stamps")
    if info.get("damaged"):
      notes.append(f"damaged after some frames ({info['damaged']}); the frames before it kept")
    for reason, frames in dropped.items():
      notes.append(f"{reason}: {frames} frames" if reason != "scene cuts" else f"{frames} scene cut(s): split")
    clips_span = []
    for a, b in segs:
      for lo in range(a, b, s.max_frames):
        hi = min(b, lo + s.max_frames)
        if hi - lo >= s.min_frames:
          clips_span.append((lo, hi))
        else:
          notes.append(f"frames {lo}..{hi - 1}: too short ({hi - lo} < {s.min_frames} frames)")
    if not clips_span:
      main = max(dropped, key=dropped.get) if dropped else "too short"
      if main == "scene cuts" or not dropped:
        main = f"too short (no stretch of {s.min_frames} frames with one face)"
      raise Skip(f"{main}; " + "; ".join(notes) if notes else main)
    records_out = _cut_clips(path, identity, s, lms, audio, clips_span, entry, src)
    entry.update(status="ok", notes=notes)
    return records_out, entry
  except Skip as e:
    return [], {**entry, "status": "skipped", "reason": str(e)}
  except UserError as e:  # e.g. audio that cannot be decoded
    return [], {**entry, "status": "skipped", "reason": cli.one_line(e)}


def _cut_clips(path, identity, s: Settings, lms, audio, spans, entry, src) -> list[bytes]:
  """Pass 2: decode again (`src`: the file to decode) and cut each span's frames with its smoothed crop boxes."""
  boxes = np.full((len(lms), 3), np.nan)
  for t, lm in enumerate(lms):
    if lm is not None:
      boxes[t] = faces.crop_box(lm)
  smoothed = {}
  for a, b in spans:
    smoothed[(a, b)] = faces.smooth_boxes(boxes[a:b], SMOOTH_SECONDS * s.fps)
  frames = {span: [] for span in spans}
  for item in _resampled_frames(src, s.fps):
    if isinstance(item, dict):
      continue
    t, _, frame = item
    for (a, b) in spans:
      if a <= t < b:
        frames[(a, b)].append(faces.cut(frame, smoothed[(a, b)][t - a], s.resolution))
  key = video_key(path)
  spf = s.sample_rate // s.fps
  out = []
  for k, (a, b) in enumerate(spans):
    box = smoothed[(a, b)]
    lm = np.stack([lms[t] for t in range(a, b)]).astype(np.float64)
    corner = box[:, None, :2] - box[:, None, 2:] / 2
    lm_crop = np.concatenate([(lm[..., :2] - corner) / box[:, None, 2:], lm[..., 2:] / box[:, None, 2:]], -1)
    sound = audio[a * spf:b * spf]
    sound = np.pad(sound, (0, (b - a) * spf - len(sound)))
    clip_id = f"{key}-{k:03d}"
    clip = {
        "clip_id": clip_id, "identity": identity_id(identity), "source": path, "fps": s.fps,
        "sample_rate": s.sample_rate, "frames": np.stack(frames[(a, b)]), "audio": sound.astype(np.float32),
        "labels": face_labels.labels_from_landmarks(lm_crop),
        "landmarks": lm_crop.astype(np.float16), "crop_box": box.astype(np.float32),
        "attrs": {"identity_name": identity, "split": split_of(identity, s.benchmark_share),
                  "start_s": a / s.fps, "video": os.path.basename(path)},
    }
    out.append(records.encode_clip(clip))
    entry["clips"].append(clip_id)
    entry["frames"] += b - a
  return out


# --------------------------------------------------------------------------- the corpus


def _work(task):
  path, identity, s, work = task
  if paths.is_local(path):
    records_out, entry = process_video(path, identity, s)
  else:
    # PyAV and the audio loader read local files: a gs:// video is downloaded for its two passes.
    fd, local = tempfile.mkstemp(prefix="vasa_jax-", suffix=os.path.splitext(path)[1])
    try:
      with os.fdopen(fd, "wb") as f, paths.path(path).open("rb") as src:
        shutil.copyfileobj(src, f, 1 << 22)
    except FileNotFoundError:  # Listed but not there: a skip. Other errors may pass: they raise, nothing is marked done.
      records_out, entry = [], {"video": path, "identity": identity, "clips": [], "frames": 0, "status": "skipped",
                                "reason": "does not exist"}
    else:
      records_out, entry = process_video(path, identity, s, local=local)
    finally:
      os.remove(local)
  _write_done(work, video_key(path), records_out, entry)
  return entry


def partial_name(final: str) -> str:
  """Where a file bound for `final` is written first: beside it locally (renamed in), in a local
  scratch file for `gs://` (ArrayRecord writes only local files; uploaded whole by `paths.put`)."""
  if paths.is_local(final):
    return final + ".partial"
  fd, tmp = tempfile.mkstemp(prefix="vasa_jax-", suffix="-" + os.path.basename(final) + ".partial")
  os.close(fd)
  return tmp


def _write_done(work: str, key: str, records_out: list[bytes], entry: dict) -> None:
  """A video's records and report entry, each under a temporary name first: a video counts as
  done only once its .json exists, which is put in place last."""
  from array_record.python import array_record_module  # pylint: disable=import-outside-toplevel
  final = os.path.join(work, f"{key}.array_record")
  if records_out:
    tmp = partial_name(final)
    with interrupt.removed_on_interrupt(tmp):
      w = array_record_module.ArrayRecordWriter(tmp, "group_size:1,uncompressed")
      for r in records_out:
        w.write(r)
      w.close()
      paths.put(tmp, final)
  final = os.path.join(work, f"{key}.json")
  tmp = partial_name(final)
  with interrupt.removed_on_interrupt(tmp):
    with open(tmp, "w") as f:
      json.dump(entry, f)
    paths.put(tmp, final)


def open_work(out: str) -> str:
  """CORPUS/.prepare, created. A gs:// CORPUS is tried with a small write first, so a missing bucket or
  missing rights is one clear error now, not after the first video's minutes of work."""
  work = os.path.join(out, WORK)
  if paths.is_local(out):
    paths.make_folder(work)
    return work
  probe = paths.path(os.path.join(work, ".write-test"))
  try:
    probe.write_text("")
    probe.unlink()
  except ImportError:
    raise UserError(f"--out {out}: writing to gs:// needs gcsfs: pip install 'vasa_jax[gcs]'") from None
  except Exception as e:  # pylint: disable=broad-except  # gcsfs raises OSError, HttpError or auth errors
    raise UserError(f"--out {out}: cannot write there ({type(e).__name__}: {cli.one_line(e)}); a gs:// corpus "
                    "needs an existing bucket that Google's application default credentials may write to") from None
  return work


def done_keys(work: str) -> set[str]:
  """The keys of the videos finished in `work` (their .json is there): one listing, not a request per video."""
  folder = paths.path(work)
  names = [p.name for p in folder.iterdir()] if folder.exists() else []
  return {n[:-len(".json")] for n in names if n.endswith(".json")}


def read_entry(work: str, key: str) -> dict:
  return json.loads(paths.path(os.path.join(work, f"{key}.json")).read_text())


def assemble(out: str, work: str, videos: list[tuple[str, str]], s: Settings) -> dict:
  """Rebuilds the corpus (shards, indices, manifest) from the finished videos' records, atomically."""
  from array_record.python import array_record_module  # pylint: disable=import-outside-toplevel
  entries, seen, done = [], set(), done_keys(work)
  with records.CorpusWriter(out, resolution=s.resolution, fps=s.fps, sample_rate=s.sample_rate,
                            overwrite=True) as writer:
    for path, identity in videos:
      key = video_key(path)
      if key in seen or key not in done:
        continue
      seen.add(key)
      entries.append(read_entry(work, key))
      if not entries[-1]["clips"]:
        continue
      reader = array_record_module.ArrayRecordReader(os.path.join(work, f"{key}.array_record"))
      for i in range(reader.num_records()):
        writer.add_record(split_of(identity, s.benchmark_share), reader.read([i])[0])
      reader.close()
  return {"videos": entries}


def settings(args) -> Settings:
  """The per-video settings from the command line (shared with `prepare_beam`), range-checked."""
  cfg = args.config
  cli.check_range("--benchmark-share", args.benchmark_share, 0.0, 1.0)
  cli.check_range("--min-seconds", args.min_seconds, 0.04, 3600.0)
  cli.check_range("--clip-seconds", args.clip_seconds, args.min_seconds, 3600.0)
  if not faces.available():
    raise UserError(f"prepare needs the face detector: {faces.INSTALL_HINT}")
  return Settings(fps=int(cfg.data.fps), resolution=int(args.resolution or cfg.face.image_size),
                  sample_rate=int(cfg.media.sample_rate), min_frames=max(1, round(args.min_seconds * cfg.data.fps)),
                  max_frames=max(1, round(args.clip_seconds * cfg.data.fps)), benchmark_share=args.benchmark_share)


def pending(videos: list[tuple[str, str]], work: str) -> tuple[list[tuple[str, str]], int]:
  """The videos (first listing of each) without a finished work file, and how many distinct videos there are."""
  todo, seen, done = [], set(), done_keys(work)
  for path, identity in videos:
    key = video_key(path)
    if key not in seen and key not in done:
      todo.append((path, identity))
    seen.add(key)
  return todo, len(seen)


def write_report(out: str, report: dict, seconds: float, s: Settings, **extra) -> dict:
  """Completes `assemble`'s report with totals, writes prepare_report.json atomically and says so."""
  ok = [e for e in report["videos"] if e["status"] == "ok"]
  report.update(clips=sum(len(e["clips"]) for e in ok), skipped=len(report["videos"]) - len(ok),
                seconds_this_run=round(seconds, 2), settings=dataclasses.asdict(s), **extra)
  paths.write_bytes(os.path.join(out, REPORT), json.dumps(report, indent=1).encode())
  print(f"prepare: {report['clips']} clips from {len(ok)} videos, {report['skipped']} skipped "
        f"(reasons in {os.path.join(out, REPORT)}); this run {seconds:.1f} s", file=sys.stderr)
  return report


def run(args) -> dict:
  cli.check_range("--workers", args.workers, 1, 256)
  s = settings(args)
  videos = list_videos(args.videos)
  work = open_work(args.out)
  todo, total = pending(videos, work)
  print(f"prepare: {total} videos, {total - len(todo)} already done, {len(todo)} to do", file=sys.stderr)
  t0 = time.time()
  tasks = [(path, identity, s, work) for path, identity in todo]
  if args.workers > 1 and len(tasks) > 1:
    with multiprocessing.get_context("spawn").Pool(args.workers) as pool:
      for entry in pool.imap_unordered(_work, tasks):
        _say(entry)
  else:
    for task in tasks:
      _say(_work(task))
  seconds = time.time() - t0
  return write_report(args.out, assemble(args.out, work, videos, s), seconds, s)


def _say(entry: dict) -> None:
  what = f"{len(entry['clips'])} clip(s)" if entry["status"] == "ok" else f"skipped: {entry['reason']}"
  print(f"  {entry['video']}: {what}", file=sys.stderr, flush=True)


def main(args) -> int:
  run(args)
  print(paths.path(args.out))
  return 0


def add_corpus_arguments(p) -> None:
  """The arguments `prepare` and `prepare_beam` share."""
  p.add_argument("--videos", required=True, help="a folder of videos (searched recursively; the first folder "
                 "under it names the identity, VoxCeleb-style) or a text file with one path[,identity] per line; "
                 "local or gs://")
  p.add_argument("--out", required=True, help="corpus folder to write, local or gs://bucket/folder "
                 "(a re-run resumes it)")
  p.add_argument("--resolution", type=int, help="frame size (default: the config's face.image_size)")
  p.add_argument("--clip-seconds", type=float, default=8.0, help="longest clip; longer stretches are split")
  p.add_argument("--min-seconds", type=float, default=2.0, help="shortest clip; shorter stretches are dropped")
  p.add_argument("--benchmark-share", type=float, default=0.1, help="share of identities held out as the "
                 "benchmark split (by a hash of their name: stable as videos are added)")


def parser():
  p = cli.make_parser("python -m vasa_jax.data.prepare",
                      "Turn real talking-head videos into a corpus of face-aligned clips (the synthetic corpus' "
                      "record format) for training; resumable.", config=True, default_config="demo")
  add_corpus_arguments(p)
  p.add_argument("--workers", type=int, default=1, help="videos processed in parallel (one core each)")
  return p


if __name__ == "__main__":
  cli.main_entry(main, parser())
