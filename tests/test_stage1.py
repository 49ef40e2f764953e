"""Stage 1 on the tiny config: shapes, a 2-step train + checkpoint + resume, the CLI."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import corpora
from jitter import jitter
from vasa_jax import cli, config
from vasa_jax.models import face_latent
from vasa_jax.train import __main__ as train_main
from vasa_jax.train import checkpoint


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
  out = str(tmp_path_factory.mktemp("corpus") / "syn64")
  # 20 identities: 18 train, 2 held out for the benchmark (and its cross-identity split).
  corpora.synthetic_64(out, identities=20, frames=12, seed=0)
  return out


@pytest.mark.parametrize("overrides", [(), (("face.gen_widths", "(32, 16)"), ("face.out_shuffle", "2")),
                                       (("face.skip_pixels", "False"),), (("face.skip_channels", "0"),),
                                       (("face.render_unet", "True"), ("face.out_shuffle", "2"),
                                        ("face.enc_vol_blocks", "0"))])
def test_encoder_decoder_shapes_and_self_consistency(overrides):
  cfg = config.load("tiny", overrides).face
  model = face_latent.FaceLatent(cfg)
  img = jax.random.uniform(jax.random.key(0), (2, 64, 64, 3))
  params = model.init(jax.random.key(1), img, img)
  lat = model.apply(params, img, method=model.encode)
  assert lat["v_app"].shape == (2, cfg.vol_depth, cfg.vol_size, cfg.vol_size, cfg.vol_channels)
  assert lat["z_id"].shape == (2, cfg.z_id) and lat["z_dyn"].shape == (2, cfg.z_dyn)
  assert lat["z_pose"].shape == (2, face_latent.POSE_DIM)
  if cfg.skip_channels:
    assert lat["f_app"].shape == (2, 2 * cfg.vol_size, 2 * cfg.vol_size, cfg.skip_channels)
    assert ("src_img" in lat) == cfg.skip_pixels
  assert ("src_dyn" in lat) == cfg.render_unet
  app = {k: lat[k] for k in face_latent.app_keys(cfg)}
  out = model.apply(params, app, lat["z_pose"], lat["z_dyn"], method=model.decode)
  assert out.shape == img.shape and float(out.min()) >= 0.0 and float(out.max()) <= 1.0
  # The decoder really depends on the pose: a different pose renders a different image.
  other = model.apply(params, app, lat["z_pose"] + jnp.array([0.5, 0, 0, 0, 0, 0]),
                      lat["z_dyn"], method=model.decode)
  assert float(jnp.abs(out - other).mean()) > 1e-4


def _events(path):
  """The records of a TensorBoard event file: u64 length, u32 crc, an Event proto, u32 crc."""
  import struct

  from tensorboardX.proto import event_pb2
  data, i = open(path, "rb").read(), 0
  while i < len(data):
    (n,) = struct.unpack("<Q", data[i:i + 8])
    yield event_pb2.Event.FromString(data[i + 12:i + 12 + n])
    i += 12 + n + 4


@pytest.mark.slow
def test_train_two_steps_checkpoint_and_resume_from_the_cli(corpus, tmp_path, capsys):
  workdir = str(tmp_path / "run")
  argv = ["--config", "configs/tiny.py", "--data", corpus, "--workdir", workdir]
  parser = train_main.parser()
  assert cli.run(train_main.main, parser, argv + ["--steps", "2"]) == 0
  assert checkpoint.Checkpointer(workdir).latest_step() == 2
  assert cli.run(train_main.main, parser, argv + ["--steps", "1"]) == 0   # Resumes at 2.
  ckpt = checkpoint.Checkpointer(workdir)
  assert ckpt.latest_step() == 3
  assert ckpt.config(3)["face"]["image_size"] == 64
  log = capsys.readouterr().out
  assert "step 3/3" in log and "steps/s" in log and "examples/s" in log and "of matmul peak" in log and "ETA" in log
  import json
  last = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))][-1]
  # Examples/s is steps/s times the batch; the achieved FLOP/s is a real share of the measured peak.
  batch = json.load(open(os.path.join(workdir, "config.json")))["train"]["batch_size"]
  assert last["perf/examples_per_s"] == pytest.approx(last["perf/steps_per_s"] * batch, rel=1e-6)
  assert last["perf/tflops"] > 0 and 0 < last["perf/peak_fraction"] < 1.5
  previews = sorted(os.listdir(os.path.join(workdir, "previews")))
  assert previews == ["step_0000002.png"]
  # TensorBoard holds the scalars and the preview grid as an image (read back with tensorboardX's protos).
  kinds = {}
  for name in os.listdir(os.path.join(workdir, "tensorboard")):
    for event in _events(os.path.join(workdir, "tensorboard", name)):
      for v in event.summary.value:
        kinds.setdefault(v.tag, set()).add((event.step, v.WhichOneof("value")))
  assert (3, "simple_value") in kinds["perf/peak_fraction"] and (3, "simple_value") in kinds["psnr/recon"]
  assert kinds["preview"] == {(2, "image")}
  # The evaluation command reads the run and prints the paper-style table.
  from vasa_jax import evaluate
  out_json = str(tmp_path / "eval.json")
  assert cli.run(evaluate.main, evaluate.parser(), ["--workdir", workdir, "--data", corpus, "--json", out_json]) == 0
  table = capsys.readouterr().out
  assert "self-reenactment (unseen identities)" in table and "cross-identity vs ground truth" in table
  import json
  res = json.load(open(out_json))
  assert res["step"] == 3 and res["clips"] == 2 and res["cross_clips"] == 2
  assert 0 < res["self_psnr"] < 60 and 0 < res["cross_psnr"] < 60 and "pose_err_out" in res
  from vasa_jax import face_identity
  if face_identity.available():   # The identity extra: rows for the truth and both outputs, scored or n/a.
    assert "identity similarity to the portrait (dlib face_recognition_resnet_model_v1" in table
    assert res["identity_truth"]["portraits"] == res["identity_self"]["portraits"] == 2
    assert res["identity_cross"]["portraits"] == 2
  # Stage-2 data: the run's encoders turn every clip into per-frame motion.
  from vasa_jax.data import records
  from vasa_jax.train import extract_motion
  motion_dir = str(tmp_path / "motion")
  stats = extract_motion.extract(workdir, corpus, motion_dir, batch=8, progress=False)
  cfg = config.load("tiny")
  assert stats["dyn_dims"] == cfg.face.z_dyn and len(stats["mean"]) == 6 + cfg.face.z_dyn
  motion = records.open_corpus(motion_dir)
  clips = records.open_corpus(corpus)
  assert motion.splits == clips.splits and motion.manifest["per_frame_keys"] == ["motion"]
  first = records.decode_clip(motion.source("train")[0])
  assert "frames" not in first and first["motion"].shape == (12, 6 + cfg.face.z_dyn)
  assert np.isfinite(first["motion"]).all() and first["audio"].shape == (12 * 640,)


def test_train_cli_rejects_bad_inputs(corpus, tmp_path):
  parser = train_main.parser()
  base = ["--config", "tiny", "--workdir", str(tmp_path / "w")]
  assert cli.run(train_main.main, parser, base + ["--data", str(tmp_path / "missing")]) == 2
  assert cli.run(train_main.main, parser, base + ["--data", corpus, "--config.face.image_size=128"]) == 2
  assert cli.run(train_main.main, parser, base + ["--data", corpus, "--config.train.stepz=3"]) == 2
  assert not os.path.exists(str(tmp_path / "w" / "checkpoints"))


def test_losses_behave():
  from vasa_jax.train import stage1
  x = jax.random.uniform(jax.random.key(0), (2, 32, 32, 3))
  assert float(stage1.ssim(x, x)) == pytest.approx(1.0, abs=1e-5)
  assert float(stage1.ssim(x, 1 - x)) < 0.5
  assert float(stage1.multiscale_l1(x, x)) == 0.0
  a = jax.random.normal(jax.random.key(1), (4, 8))
  assert float(stage1.batch_cosface(a, a, scale=5.0, margin=0.2)) < float(
      stage1.batch_cosface(a, jnp.roll(a, 1, axis=0), scale=5.0, margin=0.2))
  np.testing.assert_allclose(float(stage1.psnr(x, x)), 100.0, atol=1e-3)


def test_free_dyn_dims_come_from_the_portrait_when_the_decoder_was_trained_so():
  from vasa_jax.face_model import FaceModel, POSE_DIM
  from vasa_jax.label_motion import DYN_LABELS
  img = jax.random.uniform(jax.random.key(0), (1, 64, 64, 3))
  motion = jax.random.normal(jax.random.key(2), (3, POSE_DIM + config.load("tiny").face.z_dyn)) * 0.1
  n = POSE_DIM + len(DYN_LABELS)
  other_free = motion.at[:, n:].add(1.0)
  outs = {}
  for flag in (True, False):
    face = FaceModel(config.load("tiny", (("face.free_dyn_from_portrait", str(flag)),)).face)
    params = face.init(jax.random.key(1))
    # Zero-initialised FiLM and flow heads would hide z_dyn entirely: jitter every weight.
    params = jitter(params, 0.05)
    app = face.encode(params, img)
    outs[flag] = [np.asarray(face.decode_motion(params, app, m)) for m in (motion, other_free)]
  np.testing.assert_array_equal(outs[True][0], outs[True][1])      # The driver's free dims are not read.
  assert np.abs(outs[False][0] - outs[False][1]).mean() > 1e-4       # Without the flag they are.


@pytest.mark.slow
def test_motion_encoder_phase_refits_only_the_encoders_from_another_run(corpus, tmp_path):
  parser = train_main.parser()
  base_dir, enc_dir = str(tmp_path / "base"), str(tmp_path / "enc")
  assert cli.run(train_main.main, parser, ["--config", "tiny", "--data", corpus, "--workdir", base_dir,
                                           "--steps", "1"]) == 0
  _, base, _ = checkpoint.load_ema(base_dir)
  enc = ["--config", "tiny", "--data", corpus, "--workdir", enc_dir, f"--config.train.init_from={base_dir}",
         "--config.train.trainable=motion_encoders", "--config.train.steps=2", "--config.train.lr_gen=1e-3"]
  # Misuse is a one-line error, before anything is written.
  assert cli.run(train_main.main, parser, enc[:6] + ["--config.train.trainable=motion_encoders"]) == 2
  assert cli.run(train_main.main, parser, enc[:6] + ["--config.train.trainable=encoders"]) == 2
  assert cli.run(train_main.main, parser, enc + ["--config.face.z_dyn=24"]) == 2
  assert not os.path.exists(os.path.join(enc_dir, "checkpoints"))
  # The identity net is not part of this phase: fewer classes than the corpus has faces is no error.
  assert cli.run(train_main.main, parser, enc + ["--config.idnet.num_classes=2"]) == 0
  _, state, step = checkpoint.load_run(enc_dir)
  assert step == 2
  for name, before in base["params"].items():
    after = state["params"]["gen"]["params"][name]
    same = all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(after)))
    # The pose and dynamics encoders learn; every other part of the generator is the base run's.
    assert same == (name not in ("pose", "dynamics")), name
  # The anchor is the base run's dynamics encoder, frozen.
  for a, b in zip(jax.tree.leaves(state["params"]["anchor"]), jax.tree.leaves(base["params"]["dynamics"])):
    np.testing.assert_array_equal(a, b)


def test_encoder_loss_terms_are_standardised_errors_and_the_anchor_starts_at_zero():
  from vasa_jax.label_motion import DYN_LABELS
  from vasa_jax.train import stage1
  cfg = config.load("tiny", (("train.trainable", "motion_encoders"),))
  std = {"pose": np.full(6, 0.5, np.float32), "dyn": np.full(len(DYN_LABELS), 0.25, np.float32)}
  task = stage1.Stage1(cfg, 4, label_std=std)
  state = task.init(jax.random.key(0))
  rng = np.random.default_rng(0)
  batch = {w: rng.random((2, 64, 64, 3)).astype(np.float32) for w in ("src", "drv", "other")}
  for w in ("src", "drv", "other"):
    batch[f"{w}_pose"] = rng.normal(size=(2, 6)).astype(np.float32) * 0.1
    batch[f"{w}_dyn"] = rng.random((2, len(DYN_LABELS))).astype(np.float32)
  total, terms = task.encoder_loss(state.params["gen"], state.params["anchor"], batch)
  imgs = np.concatenate([batch["src"], batch["drv"], batch["other"]])
  m = task.face.encode_motion(state.params["gen"], imgs)
  pose = np.concatenate([batch[f"{w}_pose"] for w in ("src", "drv", "other")])
  dyn = np.concatenate([batch[f"{w}_dyn"] for w in ("src", "drv", "other")])
  np.testing.assert_allclose(terms["pose_sup"], np.mean(((np.asarray(m["z_pose"]) - pose) / 0.5) ** 2), rtol=1e-5)
  n = len(DYN_LABELS)
  np.testing.assert_allclose(terms["dyn_sup"], np.mean(((np.asarray(m["z_dyn"])[:, :n] - dyn) / 0.25) ** 2),
                             rtol=1e-5)
  assert float(terms["free_anchor"]) == 0.0
  c = cfg.loss
  np.testing.assert_allclose(total, c.pose_sup * terms["pose_sup"] + c.dyn_sup * terms["dyn_sup"], rtol=1e-6)


def test_init_from_takes_a_bundle_and_checks_it_against_the_config():
  from vasa_jax import bundle
  from vasa_jax.errors import UserError
  from vasa_jax.train import loop, stage1
  demo = bundle.load(bundle.DEMO_BUNDLE)
  task = stage1.Stage1(config.load("demo"), 4)  # The bundle's own config is its last phase's.
  base = loop._warm_start_weights(task, bundle.DEMO_BUNDLE, jax.random.key(0))
  for a, b in zip(jax.tree.leaves(base), jax.tree.leaves(demo.face_params)):
    np.testing.assert_array_equal(a, b)
  with pytest.raises(UserError, match="does not match"):
    loop._warm_start_weights(stage1.Stage1(config.load("tiny"), 4), bundle.DEMO_BUNDLE, jax.random.key(0))


def test_pixel_blend_copies_the_warped_source_where_its_share_is_one():
  """face.pixel_blend: out = share * warped source pixels + (1 - share) * U-Net. Forced to share 1,
  a decode at the source's own pose must give the source's pixels back (the plane warp at zero
  motion is the identity); at its initial share (sigmoid(-2)) it is a 12% mix."""
  cfg = config.load("demo", (("face.pixel_blend", "True"),)).face
  model = face_latent.FaceLatent(cfg)
  img = jax.random.uniform(jax.random.key(0), (2, 128, 128, 3))
  params = model.init(jax.random.key(1), img, img)
  lat = model.apply(params, img, method=model.encode)
  app = {k: lat[k] for k in face_latent.app_keys(cfg)}
  decode = lambda p: model.apply(p, app, lat["z_pose"], lat["z_dyn"], method=model.decode)  # noqa: E731
  blend = params["params"]["renderer"]["blend"]
  assert float(jnp.abs(blend["kernel"]).max()) == 0.0
  np.testing.assert_allclose(np.asarray(blend["bias"]), -2.0)
  plain = face_latent.FaceLatent(config.load("demo").face)
  unet = plain.apply({"params": {k: v for k, v in params["params"].items()}}, app, lat["z_pose"], lat["z_dyn"],
                     method=plain.decode)  # The same weights without the blend: the U-Net's own output.
  share = jax.nn.sigmoid(-2.0)
  np.testing.assert_allclose(np.asarray(decode(params)), np.asarray(share * img + (1 - share) * unet), atol=2e-3)
  ones = jax.tree.map(lambda x: x, params)
  ones["params"]["renderer"]["blend"] = {"kernel": blend["kernel"], "bias": jnp.full_like(blend["bias"], 30.0)}
  np.testing.assert_allclose(np.asarray(decode(ones)), np.asarray(img), atol=2e-3)


def test_init_from_a_bundle_into_a_config_that_adds_pixel_blend_keeps_every_old_weight():
  from vasa_jax import bundle
  from vasa_jax.train import loop, stage1
  demo = bundle.load(bundle.DEMO_BUNDLE)
  task = stage1.Stage1(config.load("demo", (("face.pixel_blend", "True"),)), 4)
  base = loop._warm_start_weights(task, bundle.DEMO_BUNDLE, jax.random.key(0))
  state = task.warm_start(base, jax.random.key(0))
  gen = state.params["gen"]["params"]
  assert set(gen["renderer"]) - set(demo.face_params["params"]["renderer"]) == {"blend"}
  for name, old in demo.face_params["params"].items():
    for a, b in zip(jax.tree.leaves(old), jax.tree.leaves(gen[name])):
      np.testing.assert_array_equal(a, b)
  np.testing.assert_allclose(np.asarray(gen["renderer"]["blend"]["bias"]), -2.0)


def test_dyn_templates_start_as_the_plain_model_and_their_map_moves_with_the_pose():
  """face.dyn_templates: a map drawn in canonical coordinates, warped to the target pose, joins the
  U-Net through a zero-initialised conv. So (1) old weights decode exactly as before the lever, and
  (2) once that conv is live, a blob drawn at the canonical centre shows up in the output at the
  centre for pose zero and 16 px to the right for a translation tx = 0.25 (a quarter of the half-width
  of 128 px): the map follows the head, not the image frame."""
  demo = config.load("demo").face
  cfg = config.load("demo", (("face.dyn_templates", "4"),)).face
  plain, model = face_latent.FaceLatent(demo), face_latent.FaceLatent(cfg)
  img = jax.random.uniform(jax.random.key(0), (1, 128, 128, 3))
  params = model.init(jax.random.key(1), img, img)
  old = {"params": {k: v for k, v in params["params"].items() if k != "dyn_map"}}
  old["params"]["renderer"] = {k: v for k, v in params["params"]["renderer"].items() if k != "dyn_map_in"}
  assert float(jnp.abs(params["params"]["renderer"]["dyn_map_in"]["kernel"]).max()) == 0.0
  lat = model.apply(params, img, method=model.encode)
  app = {k: lat[k] for k in face_latent.app_keys(cfg)}

  def decode(p, m, tx):
    pose = lat["z_pose"].at[:, :3].set(0.0).at[:, 3].set(tx).at[:, 4:].set(0.0)
    return np.asarray(m.apply(p, app, pose, lat["z_dyn"], method=m.decode))

  np.testing.assert_array_equal(decode(params, model, 0.0), decode(old, plain, 0.0))
  live = jax.tree.map(lambda x: x, params)
  live["params"]["renderer"]["dyn_map_in"]["kernel"] = jnp.full_like(
      params["params"]["renderer"]["dyn_map_in"]["kernel"], 0.05)
  templates = params["params"]["dyn_map"]["templates"]
  live["params"]["dyn_map"]["templates"] = jnp.zeros_like(templates)
  blob = jnp.zeros_like(templates).at[:, 30:34, 30:34, :].set(3.0)  # canonical centre of the 64^2 map
  lit = jax.tree.map(lambda x: x, live)
  lit["params"]["dyn_map"]["templates"] = blob
  for tx, want_col in ((0.0, 63.5), (0.25, 79.5)):
    diff = np.abs(decode(lit, model, tx) - decode(live, model, tx)).sum(-1)[0]
    assert diff.max() > 0.05, "the map does not reach the output"
    rows, cols = np.nonzero(diff > 0.5 * diff.max())
    assert abs(cols.mean() - want_col) < 3.0 and abs(rows.mean() - 63.5) < 3.0, (tx, rows.mean(), cols.mean())


def test_motion_rectify_reads_the_face_frontally_and_starts_as_the_plain_encoder():
  """face.motion_rectify: the dynamics encoder also reads the face brought to the canonical frame by
  the pose encoder's reading. At pose zero that view is the frame's own pixels around eyes and mouth;
  a head moved 16 px right (tx = 16 / 63.5: frame units run between the outer pixel centres) and read at that pose gives the same view; a head
  drawn at twice the size and read at log_scale ln 2 too. Weights without the lever decode unchanged."""
  from vasa_jax.models import warp
  rng = np.random.default_rng(0)
  img = jnp.asarray(rng.uniform(size=(1, 128, 128, 3)), jnp.float32)
  half, (cx, cy) = face_latent.RECT_HALF, face_latent.RECT_CENTER

  def view(image, pose):
    rot, trans, scale = face_latent.pose_to_transform(jnp.asarray([pose], jnp.float32))
    grid = warp.canonical_crop_grid(rot, trans, scale, (64, 64), 0.5, (cx, cy), half)
    return np.asarray(warp.sample_volume(image[:, None], grid)[:, 0])

  # Pose zero: the frame's own pixels over the canonical square, read bilinearly (frame coordinates
  # -1 and 1 are the centres of the first and last pixels).
  from scipy import ndimage
  p = np.linspace(-1.0, 1.0, 64)
  rows, cols = np.meshgrid((cy + half * p + 1) / 2 * 127, (cx + half * p + 1) / 2 * 127, indexing="ij")
  want = np.stack([ndimage.map_coordinates(np.asarray(img[0, ..., c]), [rows, cols], order=1) for c in range(3)], -1)
  got = view(img, [0, 0, 0, 0, 0, 0])
  np.testing.assert_allclose(got[0], want, atol=1e-5)
  moved = jnp.roll(img, 16, axis=2)
  np.testing.assert_allclose(view(moved, [0, 0, 0, 16 / 63.5, 0, 0])[0, 4:-4, 4:-4], got[0, 4:-4, 4:-4], atol=1e-5)
  big = jax.image.resize(img, (1, 256, 256, 3), "linear")[:, 64:192, 64:192]  # 2x about the centre
  zoomed = view(big, [0, 0, 0, 0, 0, np.log(2.0)])
  assert np.abs(zoomed[0, 8:-8, 8:-8] - got[0, 8:-8, 8:-8]).mean() < 0.06  # bilinear twice: close, not equal
  assert np.abs(view(big, [0, 0, 0, 0, 0, 0]) - got).mean() > 0.15      # read at the wrong scale: not

  cfg = config.load("demo", (("face.motion_rectify", "True"),)).face
  plain, model = face_latent.FaceLatent(config.load("demo").face), face_latent.FaceLatent(cfg)
  params = model.init(jax.random.key(1), img, img)
  dyn = params["params"]["dynamics"]["Downsampler_0"]
  assert float(jnp.abs(dyn["extra_in"]["kernel"]).max()) == 0.0
  old = jax.tree.map(lambda x: x, params)
  old["params"]["dynamics"]["Downsampler_0"] = {k: v for k, v in dyn.items() if k != "extra_in"}
  np.testing.assert_array_equal(np.asarray(model.apply(params, img, img)), np.asarray(plain.apply(old, img, img)))


def test_rare_labels_are_checked_and_narrow_the_rare_drivers(corpus):
  from vasa_jax.errors import UserError
  bad = config.load("tiny", (("data.rare_driver", "0.5"), ("data.rare_labels", "blink,wink")))
  with pytest.raises(UserError, match="unknown label 'wink'; accepted: mouth_open, .*blink"):
    train_main.build_stage1(bad, corpus)
  cfg = config.load("tiny", (("data.rare_driver", "1.0"), ("data.rare_labels", " blink ")))
  _, dataset = train_main.build_stage1(cfg, corpus)
  from vasa_jax.data import records
  source = records.open_corpus(corpus).source("train")
  batch = next(iter(dataset))
  for b in range(len(batch["drv_frame_B"])):
    # Every driver is among its clip's rarest blink frames (the 10% farthest from the median).
    blink = records.decode_clip(source[int(batch["src_clip_B"][b])], [])["labels"]["blink"]
    dev = np.abs(blink - np.median(blink))
    assert dev[batch["drv_frame_B"][b]] >= np.sort(dev)[-max(1, round(0.1 * len(blink)))]


def test_synthetic_batches_carry_the_drivers_face_regions_and_the_loss_reads_them(corpus):
  from vasa_jax.data import face_regions, records
  from vasa_jax.train import stage1
  cfg = config.load("tiny", (("loss.face_regions", "1.0"),))
  task, dataset = train_main.build_stage1(cfg, corpus)
  raw = next(iter(dataset))
  batch = task.host_batch(raw)
  source = records.open_corpus(corpus).source("train")
  for b in range(len(raw["drv_frame_B"])):
    clip = records.decode_clip(source[int(raw["src_clip_B"][b])], [])
    j = int(raw["drv_frame_B"][b])
    want = face_regions.from_synthetic(clip["identity"], {k: v[j] for k, v in clip["labels"].items()})[0]
    np.testing.assert_allclose(batch["drv_regions"][b], want, rtol=1e-6)
  # Without the loss, no regions are computed or carried.
  _, plain = train_main.build_stage1(config.load("tiny"), corpus)
  assert not any("regions" in k for k in next(iter(plain)))
  state = task.init(jax.random.key(0))
  _, (terms, _) = task.gen_loss(state.params["gen"], state.params, stage1.prepare_batch(batch), 0.0,
                                jax.random.key(1))
  assert np.isfinite(float(terms["face_regions"])) and float(terms["face_regions"]) > 0.0
  without = {k: v for k, v in batch.items() if k != "drv_regions"}
  with pytest.raises(ValueError, match="needs the drivers' eye and mouth regions"):
    task.gen_loss(state.params["gen"], state.params, stage1.prepare_batch(without), 0.0, jax.random.key(1))


def test_remat_decodes_gives_the_same_loss_and_gradient_one_job_at_a_time(corpus):
  """`face.remat_decodes` (the paper config's memory lever) changes how the step's decodes are
  scheduled, not what they compute: same loss terms, same gradient, with every decode job present."""
  from vasa_jax.train import stage1
  base = (("loss.pose_cons", "1.0"), ("loss.dyn_cons", "1.0"), ("loss.cross_id", "0.1"))
  results = {}
  for flag in (False, True):
    cfg = config.load("tiny", (*base, ("face.remat_decodes", str(flag))))
    task, dataset = train_main.build_stage1(cfg, corpus)
    batch = stage1.prepare_batch(task.host_batch(next(iter(dataset))))
    state = task.init(jax.random.key(0))
    # Zero-initialised heads would hide most of the graph from the gradient: jitter every weight.
    gen = jitter(state.params["gen"], 0.02)
    fn = jax.jit(jax.value_and_grad(task.gen_loss, has_aux=True))
    (total, (terms, out)), grads = fn(gen, state.params, batch, 0.0, jax.random.key(1))
    assert {"recon", "cross", "pose_i", "pose_j", "dyn_i", "dyn_j"} <= set(out)
    results[flag] = (float(total), {k: float(v) for k, v in terms.items()}, grads)
  assert results[True][0] == pytest.approx(results[False][0], rel=1e-5)
  assert results[True][1] == pytest.approx(results[False][1], rel=1e-4, abs=1e-6)
  flat_a, flat_b = jax.tree.leaves(results[False][2]), jax.tree.leaves(results[True][2])
  norm = max(float(jnp.abs(g).max()) for g in flat_a)
  assert norm > 0
  for a, b in zip(flat_a, flat_b):
    np.testing.assert_allclose(np.asarray(b), np.asarray(a), atol=1e-4 * norm)
