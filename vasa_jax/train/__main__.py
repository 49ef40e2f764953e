"""`python -m vasa_jax.train`: train stage 1 (face latent space) or stage 2 (motion).

Resumes automatically from WORKDIR/checkpoints; Ctrl-C or SIGTERM saves first.
"""

import logging

import jax

from vasa_jax import cli, paths
from vasa_jax.data import pipeline, records, synthetic
from vasa_jax.errors import UserError
from vasa_jax.label_motion import DYN_LABELS
from vasa_jax.train import extract_motion, loop, stage1, stage2


def build_stage1(cfg, corpus_dir: str):
  corpus = records.open_corpus(corpus_dir)
  if cfg.data.split not in corpus.splits:
    raise UserError(f"corpus {corpus_dir} has no split {cfg.data.split!r}; it has: {', '.join(corpus.splits)}")
  height, width = corpus.manifest["resolution"]
  if (height, width) != (cfg.face.image_size, cfg.face.image_size):
    raise UserError(f"corpus {corpus_dir} is {width}x{height}px but the config renders "
                    f"{cfg.face.image_size}px; set --config.face.image_size or use a matching corpus")
  identities = corpus.manifest["splits"][cfg.data.split]["identities"]
  encoders_only = cfg.train.trainable == "motion_encoders"
  # The identity net classifies the training identities; a refit of the motion encoders never runs it,
  # so a corpus of any number of faces will do there.
  if not encoders_only and len(identities) > cfg.idnet.num_classes:
    raise UserError(f"corpus split {cfg.data.split!r} has {len(identities)} identities but "
                    f"idnet.num_classes is {cfg.idnet.num_classes}; raise --config.idnet.num_classes")
  label_std = None
  if encoders_only:
    if not cfg.train.init_from:
      raise UserError("train.trainable='motion_encoders' re-fits a trained run's encoders: give "
                      "--config.train.init_from=RUN (a teacher-label stage-1 run folder)")
    label_std = stage1.label_spreads(corpus, cfg.data.split)
  elif cfg.train.trainable != "all":
    raise UserError(f"train.trainable must be 'all' or 'motion_encoders', got {cfg.train.trainable!r}")
  if not 0.0 <= cfg.data.cross_clip_driver <= 1.0:
    raise UserError(f"data.cross_clip_driver is a share of drivers, in [0, 1]; got {cfg.data.cross_clip_driver}")
  if not 0.0 <= cfg.data.rare_driver <= 1.0:
    raise UserError(f"data.rare_driver is a share of drivers, in [0, 1]; got {cfg.data.rare_driver}")
  rare_labels = tuple(n.strip() for n in cfg.data.rare_labels.split(",") if n.strip()) or DYN_LABELS
  unknown = [n for n in rare_labels if n not in DYN_LABELS]
  if unknown:
    raise UserError(f"data.rare_labels: unknown label {unknown[0]!r}; accepted: {', '.join(DYN_LABELS)} "
                    "(comma-separated, or empty for all)")
  class_of = {} if encoders_only else {int(i): n for n, i in enumerate(identities)}
  task = stage1.Stage1(cfg, cfg.idnet.num_classes, class_of=class_of, label_std=label_std)
  per_process = cfg.train.batch_size // jax.process_count()
  dataset = pipeline.stage1_dataset(corpus, cfg.data.split, batch_size=per_process, seed=cfg.seed,
                                    num_workers=cfg.data.workers, rare_share=cfg.data.rare_driver,
                                    rare_labels=rare_labels, regions=cfg.loss.face_regions > 0,
                                    cross_clip_share=cfg.data.cross_clip_driver)
  return task, dataset


def build_stage2(cfg, corpus_dir: str):
  corpus = records.open_corpus(corpus_dir)
  if cfg.data.split not in corpus.splits:
    raise UserError(f"corpus {corpus_dir} has no split {cfg.data.split!r}; it has: {', '.join(corpus.splits)}")
  source = cfg.motion_train.motion_source
  if source == "motion":
    stats = extract_motion.load_stats(corpus_dir)
    mean, std = stats["mean"], stats["std"]
    names = None
  elif source == "labels":
    names = list(synthetic.LABEL_NAMES)
    missing = sorted(set(names) - set(corpus.manifest["label_names"]))
    if missing:
      raise UserError(f"corpus {corpus_dir} lacks the labels {missing} that motion_source='labels' needs")
    mean, std = stage2.label_stats(corpus, cfg.data.split, names)
  else:
    raise UserError(f"motion_train.motion_source must be 'motion' or 'labels', got {source!r}")
  task = stage2.Stage2(cfg, mean, std)
  per_process = cfg.motion_train.batch_size // jax.process_count()
  dataset = pipeline.stage2_dataset(corpus, cfg.data.split, batch_size=per_process, window=cfg.data.window,
                                    context=cfg.data.context, seed=cfg.seed, motion_from_labels=names,
                                    num_workers=cfg.data.workers)
  return task, dataset


def init_distributed(args) -> None:
  """Joins a multi-process run (TPU pod workers, several GPU hosts, or local processes).

  Explicit and loud: a failure to reach the coordinator stops the run here rather
  than silently training one process on its own.
  """
  if args.coordinator:
    if args.num_processes is None or args.process_id is None:
      raise UserError("--coordinator needs --num-processes and --process-id")
    # CPU processes need a collectives library to all-reduce; GPUs and TPUs ignore this.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=args.coordinator, num_processes=args.num_processes,
                               process_id=args.process_id)
  elif args.multihost:
    jax.distributed.initialize()  # TPU pods and SLURM/Open MPI clusters describe themselves.
  if jax.process_count() > 1:
    logging.getLogger("vasa_jax.train").warning(
        "process %d of %d, %d local / %d global devices", jax.process_index(), jax.process_count(),
        jax.local_device_count(), jax.device_count())


def main(args) -> int:
  logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                      format="%(asctime)s %(name)s %(levelname)s %(message)s")
  init_distributed(args)

  cfg = args.config
  if not paths.path(args.data).is_dir():
    raise UserError(f"corpus folder {args.data!r} does not exist; write one with python -m vasa_jax.data.synthetic")
  if args.stage == 1:
    task, dataset = build_stage1(cfg, args.data)
    train_cfg = cfg.train
  else:
    task, dataset = build_stage2(cfg, args.data)
    train_cfg = cfg.motion_train
  loop.run(task, cfg, args.workdir, dataset, train_cfg=train_cfg, num_steps=args.steps)
  print(f"checkpoints in {paths.path(args.workdir) / 'checkpoints'}")
  return 0


def parser():
  p = cli.make_parser("python -m vasa_jax.train", "Train vasa_jax: stage 1 (face latent space) or "
                      "stage 2 (motion diffusion). Resumes from WORKDIR automatically.", config=True)
  p.add_argument("--stage", type=int, choices=(1, 2), default=1, help="which stage to train")
  p.add_argument("--data", required=True,
                 help="stage 1: clip corpus (vasa_jax.data.synthetic or prepare); stage 2: motion corpus "
                 "(vasa_jax.train.extract_motion), or a clip corpus with --config.motion_train.motion_source=labels")
  p.add_argument("--workdir", required=True,
                 help="run folder: checkpoints, TensorBoard logs, previews, config.json")
  p.add_argument("--steps", type=int, default=None,
                 help="train at most this many more steps in this invocation (default: up to train.steps)")
  p.add_argument("--verbose", action="store_true", help="log resumes, data and checkpoint events")
  p.add_argument("--multihost", action="store_true",
                 help="join a multi-host run whose environment describes it (TPU pod slice, SLURM)")
  p.add_argument("--coordinator", help="HOST:PORT of process 0, for runs started by hand (launch/local_multiprocess.sh)")
  p.add_argument("--num-processes", type=int, help="with --coordinator: how many processes take part")
  p.add_argument("--process-id", type=int, help="with --coordinator: this process's index")
  return p


if __name__ == "__main__":
  cli.main_entry(main, parser())
