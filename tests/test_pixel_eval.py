"""Label-space stage 2, the read-out network and the pixel-level evaluation, end to end on the tiny config."""

import json

import jax
import numpy as np
import pytest

import corpora
from vasa_jax import bundle, cli, evaluate, label_motion, media, readout, sample, stream
from vasa_jax.data import synthetic
from vasa_jax.train import __main__ as train_main
from vasa_jax.train import export

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
  """Stage 1 (2 steps) + stage 2 on labels (2 steps) -> bundle; a read-out trained 30 steps."""
  root = tmp_path_factory.mktemp("pixel")
  clips = str(root / "syn64")
  corpora.synthetic_64(clips, identities=20, frames=24, seed=4)
  run1, run2 = str(root / "run1"), str(root / "run2")
  common = ["--config", "tiny", "--steps", "2"]
  assert cli.run(train_main.main, train_main.parser(), common + ["--data", clips, "--workdir", run1]) == 0
  assert cli.run(train_main.main, train_main.parser(),
                 common + ["--stage", "2", "--data", clips, "--workdir", run2,
                           "--config.motion_train.motion_source=labels"]) == 0
  out = str(root / "bundle")
  export.export(run1, run2, out)
  ro = str(root / "readout")
  meta = readout.train(clips, ro, steps=30, batch=8, log=lambda *_: None)
  return {"clips": clips, "bundle": out, "readout": ro, "meta": meta, "run2": run2}


def test_readout_saves_loads_and_reports_its_accuracy(tiny):
  meta = tiny["meta"]
  assert set(meta["benchmark_accuracy"]) == set(synthetic.LABEL_NAMES)
  for v in meta["benchmark_accuracy"].values():
    assert v["mae"] >= 0 and -1 <= v["corr"] <= 1
  r = readout.Readout.load(tiny["readout"])
  frames = np.random.default_rng(0).integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
  a, b = r(frames), r(frames.astype(np.float32) / 255.0)
  assert set(a) == set(synthetic.LABEL_NAMES) and a["mouth_open"].shape == (3,)
  np.testing.assert_allclose(a["blink"], b["blink"], rtol=1e-5)
  with pytest.raises(Exception, match="64px"):
    r(np.zeros((1, 32, 32, 3), np.uint8))


def test_label_space_bundle_streams_and_still_keeps_the_pose(tiny):
  model = bundle.load(tiny["bundle"])
  audio = media.load_audio(sample.EXAMPLE_AUDIO)[:16000]
  portrait = media.load_image(sample.EXAMPLE_IMAGE)
  s = stream.StreamingSampler(model, portrait, steps=2, seed=1, watermark=None, still=True)
  assert s.label_space
  # The portrait's pose survives the trip to label space and back (distance <-> log scale).
  first = s.first_motion * np.asarray(s.std) + np.asarray(s.mean)
  back = label_motion.to_latents(first[None], synthetic.LABEL_NAMES, s.portrait_motion[6:])[0]
  np.testing.assert_allclose(back, s.portrait_motion, rtol=1e-4, atol=1e-5)
  # With --still every generated frame keeps exactly that pose.
  s.add_audio(audio)
  windows = list(s.motion_windows(final=True))
  assert windows and all(np.allclose(w[:, :6], s.portrait_motion[:6], atol=1e-5) for w in windows)
  s2 = stream.StreamingSampler(model, portrait, steps=2, seed=1, watermark=None, still=True)
  frames = np.stack(list(stream.generate(s2, audio)))
  assert frames.shape == (25, 64, 64, 3) and frames.dtype == np.uint8


def test_evaluate_takes_a_bundle_and_reads_pixels(tiny, tmp_path, capsys):
  out_json = str(tmp_path / "s1.json")
  assert cli.run(evaluate.main, evaluate.parser(),
                 ["--checkpoint", tiny["bundle"], "--data", tiny["clips"], "--readout", tiny["readout"],
                  "--json", out_json]) == 0
  table = capsys.readouterr().out
  assert "inside the mouth region" in table and "mouth opening" in table
  res = json.load(open(out_json))
  assert 0 < res["mouth_psnr"] < 80 and 0 < res["eyes_psnr"] < 80
  assert -1 <= res["mouth_corr_out"] <= 1 and -1 <= res["blink_corr_gt"] <= 1
  # The corpus' renders as a ruler: the true frames read their own labels back.
  assert "same ruler on the true frames" in table
  assert res["mouth_px_gt"] > 0.9 and -1 <= res["mouth_px_out"] <= 1 and -1 <= res["blink_px_out"] <= 1
  # Every emotion asked of stage 1 through the labels, read back from its pixels.
  assert "each emotion asked of" in table and res["transfer_portraits"] >= 1
  assert 0 <= res["emotion_transfer_acc"] <= 1 and set(res["emotion_transfer_per"]) == set(synthetic.EMOTIONS)
  assert np.isfinite(res["smile_slope"]) and np.isfinite(res["brow_slope"])
  out_json = str(tmp_path / "s2.json")
  assert cli.run(evaluate.main, evaluate.parser(),
                 ["--stage", "2", "--checkpoint", tiny["bundle"], "--data", tiny["clips"], "--readout",
                  tiny["readout"], "--max-clips", "1", "--steps", "2", "--cfg-audio", "0.5",
                  "--speech", sample.EXAMPLE_AUDIO, "--json", out_json]) == 0
  assert "lip sync" in capsys.readouterr().out
  res = json.load(open(out_json))
  row = res["runs"][0]
  assert res["clips"] == 1 and row["steps"] == 2
  for k in ("mouth_corr", "mouth_corr_speech", "delta_p_ratio", "gaze_err_deg", "distance_err", "emotion_acc",
            "mouth_px", "mouth_px_speech", "blink_px_per_min", "blink_px_ratio", "gaze_err_deg_px",
            "distance_err_px", "emotion_acc_px"):
    assert np.isfinite(row[k]), k
  assert res["truth"]["mouth_px"] > 0.9   # The ruler on the true frames of the clip.
  # The control ruler on the true frames: their gaze and distance are the clip's own, up to its drift.
  assert res["truth"]["gaze_err_deg_px"] < 4.0 and res["truth"]["distance_err_px"] < 0.05
  # Stage 2 on a bundle without a read-out is refused with a clear message.
  assert cli.run(evaluate.main, evaluate.parser(),
                 ["--stage", "2", "--checkpoint", tiny["bundle"], "--data", tiny["clips"]]) == 2
  assert "--readout" in capsys.readouterr().err
  # Outputs are checked before the run: an existing --json is kept unless --overwrite, and --strip is refused
  # where it cannot be made.
  before = open(out_json).read()
  assert cli.run(evaluate.main, evaluate.parser(),
                 ["--checkpoint", tiny["bundle"], "--data", tiny["clips"], "--json", out_json]) == 2
  assert "already exists; pass --overwrite" in capsys.readouterr().err and open(out_json).read() == before
  assert cli.run(evaluate.main, evaluate.parser(), ["--checkpoint", tiny["bundle"], "--data", tiny["clips"],
                                                    "--strip", str(tmp_path / "strip.png")]) == 2
  assert "--strip is for stage 2 on a bundle" in capsys.readouterr().err


def test_export_takes_stage_2_over_from_a_bundle(tiny, tmp_path):
  """A retrained stage 1 ships with the label-space stage 2 a bundle already has, unchanged."""
  old = bundle.load(tiny["bundle"])
  run1 = json.load(open(f"{tiny['bundle']}/bundle.json"))["stage1"]["source"]
  out = str(tmp_path / "re")
  export.export(run1, tiny["bundle"], out)
  new = bundle.load(out)
  for a, b in zip(jax.tree.leaves(old.motion_params), jax.tree.leaves(new.motion_params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  np.testing.assert_array_equal(new.mean, old.mean)
  meta_old, meta_new = (json.load(open(f"{p}/bundle.json"))["stage2"] for p in (tiny["bundle"], out))
  assert meta_new["source"] == meta_old["source"] and meta_new["step"] == meta_old["step"]
  assert new.digest == old.digest   # Same weights in both stages: same content hash.


def test_export_takes_stage_1_over_from_a_bundle(tiny, tmp_path):
  """A retrained stage 2 ships with the stage 1 a bundle already has, unchanged."""
  old = bundle.load(tiny["bundle"])
  out = str(tmp_path / "re")
  export.export(tiny["bundle"], tiny["run2"], out)
  new = bundle.load(out)
  for a, b in zip(jax.tree.leaves(old.face_params), jax.tree.leaves(new.face_params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  meta_old, meta_new = (json.load(open(f"{p}/bundle.json"))["stage1"] for p in (tiny["bundle"], out))
  assert meta_new["source"] == meta_old["source"] and meta_new["step"] == meta_old["step"]
  assert new.face_cfg.to_dict() == old.face_cfg.to_dict()
  assert new.digest == old.digest   # run2 is the stage 2 the bundle was made from.


def test_export_of_one_bundle_for_both_stages_reads_it_once(tiny, tmp_path, monkeypatch):
  """A bundle given as both stages is copied as it is, and read from disk once."""
  reads = []
  load = bundle.load
  monkeypatch.setattr(bundle, "load", lambda path, *a, **k: reads.append(path) or load(path, *a, **k))
  out = str(tmp_path / "copy")
  export.export(tiny["bundle"], tiny["bundle"], out)
  assert reads == [tiny["bundle"]]
  assert bundle.load(out).digest == load(tiny["bundle"]).digest


def test_evaluate_drives_the_decoder_with_the_true_labels_on_request(tiny, tmp_path, capsys):
  runs = {}

  def run(how):
    out_json = str(tmp_path / f"{how}.json")
    assert cli.run(evaluate.main, evaluate.parser(),
                   ["--checkpoint", tiny["bundle"], "--data", tiny["clips"], "--motion-from", how,
                    "--json", out_json]) == 0
    runs[how] = json.load(open(out_json))

  for how in ("encoders", "labels"):
    run(how)
  assert "driven by the true labels" in capsys.readouterr().out
  assert runs["labels"]["motion_from"] == "labels" and runs["encoders"]["motion_from"] == "encoders"
  # An untrained pose encoder reads nothing like the true pose: the two drives render different frames.
  assert abs(runs["labels"]["self_psnr"] - runs["encoders"]["self_psnr"]) > 1e-3
  assert abs(runs["labels"]["cross_psnr"] - runs["encoders"]["cross_psnr"]) > 1e-3
  # Half of each: the true pose with the expression as read, and the converse. The untrained encoders
  # read neither part right, so each renders frames unlike both the encoders' and the labels'. The tiny
  # decoder barely draws expression: runs that differ only in it differ by ~1e-4 dB, in pose by more.
  for how in ("labels-pose", "labels-expression"):
    run(how)
    assert runs[how]["motion_from"] == how
    for other in ("encoders", "labels"):
      same_pose = (how, other) in (("labels-pose", "labels"), ("labels-expression", "encoders"))
      least = 1e-5 if same_pose else 1e-3
      assert abs(runs[how]["self_psnr"] - runs[other]["self_psnr"]) > least, (how, other)
  out = capsys.readouterr().out
  assert "driven by the true pose and the expression the encoders read" in out
  assert "driven by the pose the encoders read and the true expression labels" in out
  assert cli.run(evaluate.main, evaluate.parser(),
                 ["--checkpoint", tiny["bundle"], "--data", tiny["clips"], "--motion-from", "truth"]) == 2
