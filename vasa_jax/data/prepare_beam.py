"""`prepare` as an Apache Beam pipeline: the same corpus, byte for byte, on many cores or machines.

    python -m vasa_jax.data.prepare_beam --videos DIR|LIST --out CORPUS --config configs/demo.py \\
        [-- BEAM OPTIONS]

Without Beam options it runs on this machine, one worker per core. After `--`, any Beam runner:

    # A Flink or Spark cluster whose workers all mount the videos and CORPUS (NFS, Lustre, ...):
    ... -- --runner=FlinkRunner --flink_master=HOST:8081 --environment_type=PROCESS \\
           --environment_config='{"command": "/opt/apache/beam/boot"}' --parallelism=64
    ... -- --runner=SparkRunner --spark_master_url=spark://HOST:7077 --environment_type=PROCESS \\
           --environment_config='{"command": "/opt/apache/beam/boot"}'

    # Dataflow, whose workers share only GCS: videos and corpus on gs://, workers in a container built
    # from Beam's SDK image with `pip install 'vasa_jax[faces,beam,gcs]'` (README: "On gs:// and Dataflow"):
    python -m vasa_jax.data.prepare_beam --videos gs://BUCKET/vox/ --out gs://BUCKET/corpora/real512 \\
        --config configs/paper.py -- --runner=DataflowRunner --project=PROJECT --region=REGION \\
        --temp_location=gs://BUCKET/dataflow/tmp --sdk_container_image=REGION-docker.pkg.dev/PROJECT/REPO/IMAGE

Every worker needs `pip install 'vasa_jax[faces,beam]'` (and the `gcs` extra for gs:// folders).

The pipeline, each step a Beam stage that the runner spreads over its workers:
  1. videos -> `prepare.process_video` (the local path's own function) -> the same per-video work
     files in CORPUS/.prepare/ (so this path and the local one resume each other's runs);
  2. all videos' clip counts -> a plan: which clip goes to which shard, in the order the local path
     writes them (videos in listing order, `CLIPS_PER_SHARD` clips per shard and split);
  3. shards -> written in parallel into a hidden staging folder, each with its index entries;
then this process moves the shards in and writes the index, manifest and report (`records.CorpusWriter`),
so the corpus holds the same shards, index and manifest as `prepare`'s (bar the creation time and command).
On gs:// every file is written locally and uploaded whole (`paths.put`), the manifest last.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sys
import time
import uuid

from vasa_jax import cli, interrupt, paths
from vasa_jax.data import prepare, records, records_format
from vasa_jax.errors import UserError

# What `records.CorpusWriter` puts in a shard by default: the local path's shards.
CLIPS_PER_SHARD = 256
STAGING = ".beam-staging-"
INSTALL_HINT = "pip install 'vasa_jax[beam]'"


def _process(task: tuple, s: prepare.Settings, work: str) -> tuple[int, str, str, int]:
  """One video -> its work files (unless an earlier run left them); (order, key, identity, clips)."""
  order, path, identity = task
  key = prepare.video_key(path)
  if not paths.path(os.path.join(work, f"{key}.json")).exists():
    prepare._work((path, identity, s, work))  # pylint: disable=protected-access
  return order, key, identity, len(prepare.read_entry(work, key)["clips"])


def plan_shards(done: list[tuple[int, str, str, int]], benchmark_share: float,
                clips_per_shard: int = CLIPS_PER_SHARD) -> list[tuple[str, int, list[tuple[str, int]]]]:
  """(split, shard number, [(video key, record index), ...]) of every shard, as `prepare.assemble` fills them."""
  shards: dict[str, list[list[tuple[str, int]]]] = {}
  for _, key, identity, clips in sorted(done):
    split = shards.setdefault(prepare.split_of(identity, benchmark_share), [])
    for i in range(clips):
      if not split or len(split[-1]) == clips_per_shard:
        split.append([])
      split[-1].append((key, i))
  return [(split, n, refs) for split, lst in sorted(shards.items()) for n, refs in enumerate(lst)]


def _write_shard(shard: tuple[str, int, list], work: str, staging: str) -> str:
  """Copies a shard's records from the work files into staging/<shard name>, with a .json of its
  index entries; both under temporary names first, so a retried bundle rewrites them whole. On
  `gs://` the .json also carries the shard's size and hash, so the last step need not read it back."""
  from array_record.python import array_record_module  # pylint: disable=import-outside-toplevel
  split, n, refs = shard
  name = records.shard_name(split, n)
  final = os.path.join(staging, name)
  meta = {"split": split, "n": n, "clip_ids": [], "identities": [], "num_frames": []}
  readers = {}
  tmp = prepare.partial_name(final)
  writer = array_record_module.ArrayRecordWriter(tmp, records_format.ARRAY_RECORD_OPTIONS)
  try:
    for key, i in refs:
      if key not in readers:
        readers[key] = array_record_module.ArrayRecordReader(os.path.join(work, f"{key}.array_record"))
      record = readers[key].read([i])[0]
      writer.write(record)
      header = records.clip_header(record)
      meta["clip_ids"].append(str(header["clip_id"]))
      meta["identities"].append(int(header["identity"]))
      meta["num_frames"].append(int(header["num_frames"]))
  finally:
    writer.close()
    for r in readers.values():
      r.close()
  if not paths.is_local(final):
    meta.update(bytes=os.path.getsize(tmp), sha256=records_format.file_sha256(tmp))
  paths.put(tmp, final)
  tmp = prepare.partial_name(final + ".json")
  with open(tmp, "w") as f:
    json.dump(meta, f)
  paths.put(tmp, final + ".json")
  return name


def pipeline_options(beam_args: list[str]):
  """Beam options; with no --runner, one worker process per core of this machine (videos are
  CPU-bound, and decoding and tflite hold the GIL for long stretches, so threads would not do)."""
  from apache_beam.options.pipeline_options import PipelineOptions  # pylint: disable=import-outside-toplevel
  if not any(a.startswith("--runner") for a in beam_args):
    defaults = {"--direct_num_workers": "0", "--direct_running_mode": "multi_processing"}
    beam_args = [*beam_args, *(f"{k}={v}" for k, v in defaults.items()
                               if not any(a.startswith(k) for a in beam_args))]
  return PipelineOptions(beam_args)


def _runner(opts):
  """No --runner: the DirectRunner's batch engine (FnApiRunner) itself. Beam's DirectRunner would
  first try its Prism runner, a binary it downloads on first use, which an offline machine lacks."""
  if opts.get_all_options().get("runner"):
    return None
  from apache_beam.runners.portability.fn_api_runner import FnApiRunner  # pylint: disable=import-outside-toplevel
  return FnApiRunner()


def _build(p, beam, tasks, s: prepare.Settings, work: str, staging: str) -> None:
  _ = (p
       | "videos" >> beam.Create(tasks)
       | "spread videos" >> beam.Reshuffle()
       | "process video" >> beam.Map(_process, s=s, work=work)
       | "all videos" >> beam.combiners.ToList()
       | "plan shards" >> beam.FlatMap(plan_shards, benchmark_share=s.benchmark_share)
       | "spread shards" >> beam.Reshuffle()
       | "write shard" >> beam.Map(_write_shard, work=work, staging=staging))


def run(args, beam_args: list[str] | None = None) -> dict:
  try:
    import apache_beam as beam  # pylint: disable=import-outside-toplevel
  except ImportError:
    raise UserError(f"the Beam path of prepare needs Apache Beam: {INSTALL_HINT}") from None
  s = prepare.settings(args)
  videos = prepare.list_videos(args.videos)
  out = os.fspath(paths.path(args.out))
  work = prepare.open_work(out)
  todo, total = prepare.pending(videos, work)
  keys, tasks = set(), []
  # Every video in listing order (finished ones give their counts), its path as listed: the records
  # name their source, and the local path's name it so (remote workers need absolute paths).
  for path, identity in videos:
    if prepare.video_key(path) not in keys:
      keys.add(prepare.video_key(path))
      tasks.append((len(tasks), path, identity))
  print(f"prepare (beam): {total} videos, {total - len(todo)} already done, {len(todo)} to do", file=sys.stderr)
  opts = pipeline_options(list(beam_args or []))
  staging = os.path.join(out, STAGING + uuid.uuid4().hex[:12])
  paths.make_folder(staging)
  t0 = time.time()
  # A local staging folder goes on Ctrl-C; a gs:// one is left (hidden, never listed in a manifest).
  with interrupt.removed_on_interrupt(staging) if paths.is_local(staging) else contextlib.nullcontext():
    try:
      try:
        with beam.Pipeline(runner=_runner(opts), options=opts) as p:
          _build(p, beam, tasks, s, work, staging)
      except Exception as e:  # pylint: disable=broad-except
        # Runners wrap a worker's failure in pages of their own frames: its last line is the cause.
        lines = [ln for ln in str(e).splitlines() if ln.strip()]
        raise RuntimeError(f"the Beam pipeline failed: {lines[-1].strip() if lines else type(e).__name__}") from e
      seconds = time.time() - t0
      report = _finish(out, work, staging, videos, s)
    finally:
      paths.remove_tree(staging)
  runner = opts.get_all_options().get("runner") or "DirectRunner (FnApiRunner)"
  return prepare.write_report(out, report, seconds, s, engine=f"beam {runner}")


def _finish(out: str, work: str, staging: str, videos: list[tuple[str, str]], s: prepare.Settings) -> dict:
  """Moves the staged shards in (in split and shard order) and writes index and manifest; the report's entries."""
  from array_record.python import array_record_module  # pylint: disable=import-outside-toplevel
  folder = paths.path(staging)
  metas = [json.loads(p.read_text()) for p in (folder.iterdir() if folder.exists() else [])
           if p.name.endswith(".array_record.json")]
  entries, seen = [], set()
  for path, _ in videos:
    key = prepare.video_key(path)
    if key not in seen:
      seen.add(key)
      entries.append(prepare.read_entry(work, key))
  if sum(len(m["clip_ids"]) for m in metas) != sum(len(e["clips"]) for e in entries):
    raise RuntimeError(f"the staged shards in {staging} hold {sum(len(m['clip_ids']) for m in metas)} clips, "
                       f"the videos {sum(len(e['clips']) for e in entries)}")
  with records.CorpusWriter(out, resolution=s.resolution, fps=s.fps, sample_rate=s.sample_rate,
                            overwrite=True) as writer:
    for m in sorted(metas, key=lambda m: (m["split"], m["n"])):
      path = os.path.join(staging, records.shard_name(m["split"], m["n"]))
      reader = array_record_module.ArrayRecordReader(path)
      first = reader.read([0])[0]
      reader.close()
      writer.add_shard(m["split"], path, m["clip_ids"], m["identities"], m["num_frames"], first,
                       size=m.get("bytes"), sha256=m.get("sha256"))
  return {"videos": entries}


def main(args, beam_args: list[str] | None = None) -> int:
  run(args, beam_args)
  print(paths.path(args.out))
  return 0


def parser():
  p = cli.make_parser("python -m vasa_jax.data.prepare_beam",
                      "prepare's corpus through an Apache Beam pipeline: this machine's cores by default, any "
                      "Beam runner with Beam's options after a lone -- (e.g. -- --runner=FlinkRunner ...)",
                      config=True, default_config="demo")
  prepare.add_corpus_arguments(p)
  return p


def split_argv(argv: list[str]) -> tuple[list[str], list[str]]:
  """(our arguments, Beam's): Beam's follow a lone `--`."""
  if "--" in argv:
    i = argv.index("--")
    return argv[:i], argv[i + 1:]
  return argv, []


if __name__ == "__main__":
  ours, theirs = split_argv(sys.argv[1:])
  sys.exit(cli.run(functools.partial(main, beam_args=theirs), parser(), ours))
