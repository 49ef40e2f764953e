"""The benchmark command runs its real code paths end to end (tiny config) and writes JSON."""

import json

import pytest

from vasa_jax import bench, cli


@pytest.mark.slow
def test_bench_tiny_prints_and_writes_json(tmp_path, capsys):
  out = str(tmp_path / "bench.json")
  argv = ["--configs", "tiny", "--pipeline", "tiny", "--seconds", "1", "--repeats", "1", "--json", out]
  assert cli.run(bench.main, bench.parser(), argv) == 0
  text = capsys.readouterr().out
  assert "matmul peak" in text and "first-frame latency" in text and "streaming" in text
  assert "live: sound in -> frame ready" in text
  res = json.load(open(out))
  assert res["matmul_peak_gflops"] > 0 and res["face"][0]["decode_gflop_per_frame"] > 0
  pipe = res["pipeline"][0]
  assert pipe["offline_fps"] > 0 and pipe["streaming_rtf"] > 0
  assert pipe["diffusion_gflop_per_second_of_motion"] > 0
  # Numbers that must agree with each other, not merely be positive.
  assert res["matmul_peak_gflops"] > 1.0                        # Any CPU since 2005; a unit slip is 1e3 off.
  for mode in ("offline", "streaming"):                         # frames / seconds of audio = 25 fps.
    assert pipe[f"{mode}_fps"] * pipe[f"{mode}_rtf"] == pytest.approx(25.0, rel=0.05), mode
  assert pipe["gflop_per_frame"] == pytest.approx(
      pipe["diffusion_gflop_per_second_of_motion"] / 25 + pipe["decode_gflop_per_frame"], rel=1e-6)
  lv = pipe["live"]  # Every frame of the 1 s clip is either shown (and timed) or dropped as late.
  assert lv["frames"] + lv["dropped"] == 25 and lv["frames"] >= 1
  assert 0 < lv["median"] <= lv["p95"] <= lv["max"] and lv["shown_fps"] == pytest.approx(lv["frames"], rel=1e-6)
  face = res["face"][0]
  assert face["decode_fps"] * face["decode_ms_per_frame"] == pytest.approx(1000.0, rel=1e-6)
  # The pipeline decodes with the same face model (plus the watermark) as the face benchmark.
  assert 0.9 < pipe["decode_gflop_per_frame"] / face["decode_gflop_per_frame"] < 1.5


@pytest.mark.slow
def test_diffusion_flops_count_every_step():
  # XLA costs a loop body once; the benchmark must count every DDIM step. Two more steps
  # must add two guided denoising calls: 3 variants (all conditions, audio dropped, gaze dropped)
  # x ~2 FLOPs per DiT weight per token.
  import jax
  import numpy as np
  from vasa_jax import config
  from vasa_jax.motion import MotionModel
  cfg = config.load("tiny")
  two, four = (bench.bench_pipeline("tiny", 1e11, seconds=1, full_clip=False, steps=n) for n in (2, 4))
  per_window = lambda r: r["diffusion_gflop_per_second_of_motion"] * 1e9 * cfg.data.window / 25  # noqa: E731
  params = MotionModel(cfg, 6 + cfg.face.z_dyn).init(jax.random.key(0))["dit"]
  n_weights = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params) if x.ndim == 2)
  tokens = 3 + cfg.data.context + cfg.data.window
  assert two["guided_passes"] == four["guided_passes"] == 3
  expected = 2 * two["guided_passes"] * 2 * n_weights * tokens
  assert 0.6 < (per_window(four) - per_window(two)) / expected < 1.6


def test_an_existing_json_is_refused_before_any_timing(tmp_path, capsys):
  out = tmp_path / "bench.json"
  out.write_text("{}")
  assert cli.run(bench.main, bench.parser(), ["--configs", "tiny", "--pipeline", "--json", str(out)]) == 2
  err = capsys.readouterr()
  assert "already exists; pass --overwrite" in err.err and "matmul peak" not in err.out
  assert out.read_text() == "{}"
