"""The watermark's numpy geometry and payload, by value: cells, tents, high-pass, crop bounds, pilot statistic.

Embedding and detection end to end (and through H.264) are in test_watermark.py and
test_math_watermark.py; these check the pieces they are built from on hand-made inputs.
"""

import hashlib

import numpy as np
import pytest

from vasa_jax import ecc, watermark as wm

G = wm.GRID


def test_payload_bit_layout():
  tag = int.from_bytes(hashlib.sha256(b"ckpt").digest()[:3], "big")
  assert wm.checkpoint_tag("ckpt") == tag
  assert wm.make_payload("ckpt", 5) == (1 << 60) | (tag << 36) | 5
  big = (1 << 36) - 1
  assert wm.parse_payload(wm.make_payload("ckpt", big)) == {"version": 1, "checkpoint_tag": f"{tag:06x}",
                                                              "generation_id": big}
  assert wm.make_payload("ckpt", 0) & big == 0
  for bad in (-1, 1 << 36):
    with pytest.raises(ValueError):
      wm.make_payload("ckpt", bad)
  fresh = {wm.parse_payload(wm.make_payload("ckpt"))["generation_id"] for _ in range(32)}
  assert len(fresh) == 32 and all(0 <= g < 1 << 36 for g in fresh)     # Random ids: 36 bits each.


def test_layout_has_a_quarter_pilot_cells_and_spreads_every_bit_evenly():
  chips, onehot = wm._layout()
  assert chips.shape == (G, G) and set(np.unique(chips)) == {-1.0, 1.0}
  assert 0.45 < (chips > 0).mean() < 0.55
  assert onehot.shape == (G * G, ecc.CODED_BITS + 1) and (onehot.sum(1) == 1).all()
  per_bit = onehot.sum(0)
  assert per_bit[-1] == G * G // 4
  # 3,072 data cells over 188 bits: the first 64 bits get 17 cells, the rest 16.
  np.testing.assert_array_equal(per_bit[:-1], np.where(np.arange(ecc.CODED_BITS) < 3 * G * G // 4 % ecc.CODED_BITS,
                                                       17, 16))
  pilot = onehot[:, -1].reshape(G, G)
  assert 0.8 < pilot[:G // 2].sum() / pilot[G // 2:].sum() < 1.25            # Spread over the frame, not a block.


def test_coded_signs_are_the_code_as_plus_minus_one_then_the_pilot():
  payload = wm.make_payload("x", 77)
  signs = wm.coded_signs(payload)
  assert signs.shape == (ecc.CODED_BITS + 1,) and signs.dtype == np.float32 and signs[-1] == 1.0
  np.testing.assert_array_equal(signs[:-1], 2.0 * ecc.encode(payload) - 1.0)


def test_cell_matrix_averages_the_pixels_of_each_cell_and_marks_covered_cells():
  m, valid = wm._cell_matrix(3 * G)
  for g in (0, 17, G - 1):
    np.testing.assert_allclose(m[g, 3 * g:3 * g + 3], 1 / 3)
    assert m[g].sum() == pytest.approx(1.0) and np.count_nonzero(m[g]) == 3
  assert valid.all()
  # The right half of the original side, seen at G pixels: two pixels per cell from G/2 on.
  m, valid = wm._cell_matrix(G, offset=0.5, scale=0.5)
  np.testing.assert_array_equal(valid, np.arange(G) >= G // 2)
  np.testing.assert_allclose(m[G // 2 + 3, 6:8], 0.5)
  assert m[:G // 2].sum() == 0
  # A cell that only partly shows is kept with at least half its pixels: 2 of 4 yes, 1 of 4 no.
  _, valid = wm._cell_matrix(4 * G, offset=0.5 / G)
  assert valid[0] == 1.0 and valid[1:].all()
  m, valid = wm._cell_matrix(4 * G, offset=0.8 / G)
  assert valid[0] == 0.0 and valid[1:].all()
  np.testing.assert_array_equal(m[0, :1], [1.0])                       # A one-pixel cell is that pixel.


def test_spread_matrix_is_a_tent_through_the_cell_centres():
  np.testing.assert_allclose(wm._spread_matrix(G), np.eye(G))
  s = wm._spread_matrix(2 * G)
  np.testing.assert_allclose(s.sum(1), 1.0, rtol=1e-6)
  np.testing.assert_allclose(s[0, :2], [1.0, 0.0])                   # Before the first centre: clamped.
  np.testing.assert_allclose(s[1, :2], [0.75, 0.25])
  np.testing.assert_allclose(s[2, :2], [0.25, 0.75])
  np.testing.assert_allclose(s[-1, -2:], [0.0, 1.0])


def test_highpass_subtracts_the_mean_of_the_valid_neighbours():
  ones = np.ones((G, G))
  assert np.abs(wm._highpass(3.0 * ones, ones, np)).max() < 1e-12
  impulse = np.zeros((2, G, G))                                       # Batched: the last two axes are the grid.
  impulse[1, 10, 20] = 1.0
  impulse[1, 0, 0] = 1.0
  r = wm._highpass(impulse, ones, np)
  assert np.abs(r[0]).max() == 0
  assert r[1, 10, 20] == 1.0 and r[1, 9, 19] == pytest.approx(-1 / 8) and r[1, 11, 21] == pytest.approx(-1 / 8)
  assert r[1, 0, 1] == pytest.approx(-1 / 5) and r[1, 1, 1] == pytest.approx(-1 / 8)  # Edge cells: 5 neighbours.
  valid = ones.copy()
  valid[10, 21] = 0.0                                                 # An invalid neighbour neither counts nor shows.
  cells = impulse[1].copy()
  cells[10, 21] = 5.0
  r = wm._highpass(cells, valid, np)
  assert r[10, 21] == 0.0 and r[10, 20] == 1.0 and r[11, 21] == pytest.approx(-1 / 7)
  assert r[10, 22] == 0.0 and r[11, 22] == 0.0
  pair = np.zeros((G, G))
  pair[5, 5:7] = 1.0                                 # Two valid cells, each the other's only neighbour.
  cells = np.full((G, G), 9.0)                                        # Invalid cells' values do not count.
  cells[5, 5:7] = 1.0, 3.0
  r = wm._highpass(cells, pair, np)
  assert r[5, 5] == pytest.approx(-2.0) and r[5, 6] == pytest.approx(2.0)


def test_texture_mask_from_flat_to_textured():
  np.testing.assert_allclose(wm._texture_mask(np.array([0.0, 0.04, 1e9])), [0.5, 1.25, 2.0], rtol=1e-6)


def test_hypotheses_and_bounds_agree_with_the_cell_matrix():
  hyps = wm._hypotheses()
  assert hyps[0] == (0.0, 1.0) and sum(s == 1.0 for _, s in hyps) == 1
  assert [o for o, s in hyps if s == 0.95] == pytest.approx([0.0, 1 / 64, 2 / 64, 3 / 64])
  assert all(o + s <= 1.0 + 1e-9 for o, s in hyps)
  assert len(wm._hypotheses((0.9,), 0.05)) == 3
  b, valid = wm._bounds(2 * G, [(0.0, 1.0)])
  np.testing.assert_array_equal(b[0], 2 * np.arange(G + 1))
  assert valid.all()
  some = [(0.0, 1.0), (0.05, 0.9), (0.2, 0.8), (0.1, 0.85), (0.5 / G, 1.0), (0.8 / G, 0.95)]
  for n in (150, 2 * G):
    b, valid = wm._bounds(n, some)
    for i, (o, s) in enumerate(some):
      m, v = wm._cell_matrix(n, o, s)
      for g in range(G):
        np.testing.assert_array_equal(np.nonzero(m[g])[0], np.arange(b[i, g], b[i, g + 1]))
      np.testing.assert_array_equal(valid[i], v)


def test_residuals_are_the_clipped_normalised_highpass_of_the_cell_means():
  rng = np.random.default_rng(0)
  cells = rng.normal(size=(G, G)).astype(np.float32)
  y = np.kron(cells, np.ones((2, 3), np.float32))                     # Each cell 2 x 3 pixels.
  r, sigma = wm._residuals(y, [(0.0, 1.0)], [(0.0, 1.0)], sigma=0.5)
  assert r.shape == (1, 1, G, G) and sigma == 0.5
  want = np.clip(wm._highpass(cells, np.ones((G, G)), np) / 0.5, -2.5, 2.5)
  np.testing.assert_allclose(r[0, 0], want, rtol=1e-4, atol=1e-5)
  assert (np.abs(r) == 2.5).any()
  _, sigma = wm._residuals(y, [(0.0, 1.0)], [(0.0, 1.0)])
  assert sigma == pytest.approx(1.4826 * np.median(np.abs(wm._highpass(cells, np.ones((G, G)), np))) + 1e-6,
                                rel=1e-4)
  # One pixel per cell: the cells are the pixels.
  r, _ = wm._residuals(cells, [(0.0, 1.0)], [(0.0, 1.0)], sigma=1.0)
  np.testing.assert_allclose(r[0, 0], np.clip(wm._highpass(cells, np.ones((G, G)), np), -2.5, 2.5), atol=1e-5)
  # The robust scale comes from the valid cells only (a crop of the lower half: the upper half is not seen).
  r, _ = wm._residuals(y, [(0.5, 0.5)], [(0.0, 1.0)], sigma=1.0)
  seen = r[0, 0] != 0
  assert 0.45 < seen.mean() < 0.55
  _, sigma = wm._residuals(y, [(0.5, 0.5)], [(0.0, 1.0)])
  assert sigma == pytest.approx(1.4826 * np.median(np.abs(r[0, 0][seen])) + 1e-6, rel=1e-4)


def test_group_sums_count_each_bits_cells():
  chips, onehot = wm._layout()
  soft, energy = wm._group_sums(2.0 * chips, chips, onehot)
  np.testing.assert_allclose(soft, 2.0 * onehot.sum(0))
  np.testing.assert_allclose(energy, 4.0 * onehot.sum(0))
  soft, _ = wm._group_sums(np.stack([chips, -chips]), chips, onehot)  # Leading axes are kept.
  np.testing.assert_allclose(soft[1], -onehot.sum(0))


def test_pilot_z_is_the_pilot_correlation_under_each_hypothesis_in_any_chunking():
  rng = np.random.default_rng(1)
  y = rng.random((2 * G, 2 * G)).astype(np.float32)
  hyp_y, hyp_x = wm._hypotheses()[:11], wm._hypotheses()[:2]
  z, sigma = wm._pilot_z(y, hyp_y, hyp_x, 0.1, chunk=4)
  assert z.shape == (11, 2) and sigma == 0.1
  chips, onehot = wm._layout()
  for i in (0, 5, 10):
    for j in (0, 1):
      r, _ = wm._residuals(y, [hyp_y[i]], [hyp_x[j]], 0.1)
      soft, energy = wm._group_sums(r[0, 0], chips, onehot)
      assert z[i, j] == pytest.approx(soft[-1] / np.sqrt(energy[-1]), rel=1e-4)


def test_downsample_box_averages_to_at_most_the_given_side():
  y = np.arange(10 * 7, dtype=np.float32).reshape(10, 7)
  out = wm._downsample(y, 4)                                          # Factors 3 and 2; the ragged edge is cut.
  np.testing.assert_allclose(out, y[:9, :6].reshape(3, 3, 3, 2).mean((1, 3)))
  np.testing.assert_array_equal(wm._downsample(y, 10), y)


def test_mean_luma_of_uint8_and_float_frames():
  frames = np.zeros((2, 2, 3, 3), np.uint8)
  frames[0, ..., 0] = 255
  frames[1, ..., 1] = 51
  want = (0.299 * 255 + 0.587 * 51) / 2 / 255
  np.testing.assert_allclose(wm.mean_luma(frames), np.full((2, 3), want), rtol=1e-6)
  np.testing.assert_allclose(wm.mean_luma(frames.astype(np.float32) / 255), np.full((2, 3), want), rtol=1e-6)
