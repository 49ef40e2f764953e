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
  assert wm.checkpoint_tag("ckpt") == tag                               # A name that is not hex: hashed.
  assert wm.checkpoint_tag("b026f98220889c71") == 0xB026F9                 # A hex digest: its first 6 digits,
  assert wm.checkpoint_tag("B026F9") == 0xB026F9                           # so payload and metadata read alike.
  assert wm.make_payload("ckpt", 5) == (2 << 60) | (tag << 36) | 5
  big = (1 << 36) - 1
  assert wm.parse_payload(wm.make_payload("ckpt", big)) == {"version": 2, "checkpoint_tag": f"{tag:06x}",
                                                              "generation_id": big}
  assert wm.make_payload("ckpt", 0) & big == 0
  for bad in (-1, 1 << 36):
    with pytest.raises(ValueError):
      wm.make_payload("ckpt", bad)
  fresh = {wm.parse_payload(wm.make_payload("ckpt"))["generation_id"] for _ in range(32)}
  assert len(fresh) == 32 and all(0 <= g < 1 << 36 for g in fresh)     # Random ids: 36 bits each.


def test_layout_has_an_eighth_pilot_cells_and_spreads_every_bit_evenly():
  chips, onehot = wm._layout()
  assert chips.shape == (G, G) and set(np.unique(chips)) == {-1.0, 1.0}
  assert 0.45 < (chips > 0).mean() < 0.55
  assert onehot.shape == (G * G, ecc.CODED_BITS + 1) and (onehot.sum(1) == 1).all()
  per_bit = onehot.sum(0)
  assert per_bit[-1] == G * G // 8
  # 896 data cells over 188 bits: the first 144 bits get 5 cells, the rest 4.
  data = G * G - G * G // 8
  np.testing.assert_array_equal(per_bit[:-1], np.where(np.arange(ecc.CODED_BITS) < data % ecc.CODED_BITS,
                                                       data // ecc.CODED_BITS + 1, data // ecc.CODED_BITS))
  pilot = onehot[:, -1].reshape(G, G)
  assert 0.7 < pilot[:G // 2].sum() / pilot[G // 2:].sum() < 1.4            # Spread over the frame, not a block.
  order, starts = wm._groups()                                              # The sums' fast path: same groups.
  np.testing.assert_array_equal(np.diff(np.append(starts, G * G)), per_bit)
  np.testing.assert_array_equal(onehot.argmax(1)[order], np.repeat(np.arange(ecc.CODED_BITS + 1), per_bit.astype(int)))


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


def test_spread_matrix_fills_each_cell_with_a_short_cross_fade_at_its_borders():
  np.testing.assert_allclose(wm._spread_matrix(G), np.eye(G))             # One pixel per cell: the cell.
  s = wm._spread_matrix(10 * G)                                            # 10 pixels per cell.
  np.testing.assert_allclose(s.sum(1), 1.0, rtol=1e-6)
  np.testing.assert_allclose(s[:3, 0], 1.0)                                # Inside the first cell: that cell.
  np.testing.assert_allclose(s[13:17, 1], 1.0)                             # The middle of cell 1: only cell 1.
  # Pixel 9 (centre 9.5 of 10: 0.45 cells from the centre of cell 0, 0.05 into the 0.3-cell fade).
  np.testing.assert_allclose(s[9, :2], [(0.65 - 0.45) / 0.3, (0.65 - 0.55) / 0.3], rtol=1e-5)
  np.testing.assert_allclose(s[-1, -1], 1.0)
  hard = wm._spread_matrix(4 * G, edge=0.0)                                # No fade: a plain box.
  np.testing.assert_array_equal(hard, np.kron(np.eye(G), np.ones((4, 1))))


def test_wave_is_a_smoothed_square_wave_of_period_one_second():
  t = np.linspace(0, 2, 2001)
  w = wm.wave(t)
  assert np.abs(w).max() <= 1.0 and w.mean() == pytest.approx(0.0, abs=1e-3)
  assert (np.abs(w) > 0.999).mean() > 0.75                                # Plateaus most of the time.
  np.testing.assert_allclose(wm.wave(t + 1.0), w, atol=1e-9)
  assert wm.wave(0.25) == pytest.approx(1.0) and wm.wave(0.75) == pytest.approx(-1.0)
  assert np.abs(np.diff(wm.wave(np.arange(50) / 25))).max() < 1.3         # A flip takes ~3 frames at 25 fps.


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


def test_texture_mask_from_flat_to_textured():  # noqa: D103
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


def test_energy_z_is_the_standardised_sum_of_both_images_group_energies():
  rng = np.random.default_rng(1)
  pair = [rng.random((2 * G, 2 * G)).astype(np.float32) for _ in range(2)]
  hyp_y, hyp_x = wm._hypotheses()[:11], wm._hypotheses()[:2]
  z = wm._energy_z(pair, hyp_y, hyp_x, [0.1, 0.2], chunk=4)
  assert z.shape == (11, 2)
  chips, onehot = wm._layout()
  k = onehot.shape[1]
  for i in (0, 5, 10):
    for j in (0, 1):
      q = 0.0
      for img, sigma in zip(pair, [0.1, 0.2]):
        r, _ = wm._residuals(img, [hyp_y[i]], [hyp_x[j]], sigma)
        soft, energy = wm._group_sums(r[0, 0], chips, onehot)
        q += (soft ** 2 / energy).sum()
      assert z[i, j] == pytest.approx((q - 2 * k) / np.sqrt(4 * k), rel=1e-4)
  assert abs(float(z[0, 0])) < 4                                           # Noise: about N(0, 1).


def test_downsample_box_averages_to_at_most_the_given_side():
  y = np.arange(10 * 7, dtype=np.float32).reshape(10, 7)
  out = wm._downsample(y, 4)                                          # Factors 3 and 2; the ragged edge is cut.
  np.testing.assert_allclose(out, y[:9, :6].reshape(3, 3, 3, 2).mean((1, 3)))
  np.testing.assert_array_equal(wm._downsample(y, 10), y)


def test_demodulator_cancels_a_still_host_a_fade_and_a_slow_drift_and_returns_each_harmonic():
  rng = np.random.default_rng(2)
  host = rng.random((16, 16)).astype(np.float32)
  drift = rng.random((16, 16)).astype(np.float32)
  pattern = rng.normal(size=(16, 16)).astype(np.float32)
  t = np.arange(60) / 25 + 0.3                                             # A trimmed start: t0 = 0.3 s.
  d = wm.Demodulator(most=16)
  for ti in t:
    u = ti - 0.3
    y = (host * (1 - 0.1 * u) + 0.02 * drift * u ** 3                      # Fading host, cubic drift, mark:
         + 0.01 * np.cos(2 * np.pi * ti) * pattern + 0.004 * np.sin(6 * np.pi * ti) * pattern)
    d.add(np.repeat(y[..., None], 3, -1), ti)
  images = d.images()
  assert len(images) == 2 * len(wm.HARMONICS)                             # cos, sin of 1, 3 and 5 Hz.
  expected = [0.01 * pattern, 0, 0, 0.004 * pattern, 0, 0]                 # In luminance units.
  for img, want in zip(images, expected):
    np.testing.assert_allclose(img, want, atol=2e-4)
  still = wm.Demodulator(most=16)
  for ti in t[:25]:
    still.add(np.repeat(host[..., None], 3, -1), ti)
  assert all(np.abs(img).max() < 1e-6 for img in still.images())
  short = wm.Demodulator(most=16)                                          # Fewer frames than terms: None.
  for ti in t[:5]:
    short.add(np.repeat(host[..., None], 3, -1), ti)
  assert short.images() is None
  assert wm.Demodulator().images() is None


def test_harmonic_amplitudes_are_the_waves_sine_series():
  b = wm._harmonic_amplitudes((1, 3, 5))
  t = np.arange(1000) / 1000 * wm.PERIOD_S
  approx = sum(bk * np.sin(2 * np.pi * k * t / wm.PERIOD_S) for bk, k in zip(b, (1, 3, 5)))
  assert b[0] > b[1] > b[2] > 0                                            # The flips live in 3 and 5 Hz.
  assert np.mean((approx - wm.wave(t)) ** 2) < 0.02 * np.mean(wm.wave(t) ** 2)   # 98% of its energy.


@pytest.mark.parametrize("phase", [0.0, 0.3, 0.77])
def test_decoder_finds_the_waves_phase_and_sign_from_the_harmonics(phase):
  chips, onehot = wm._layout()
  signs = wm.coded_signs(0x2B02_6F98_2012_3456)
  cells = (chips * (onehot @ signs).reshape(G, G)).astype(np.float32)
  pattern = np.kron(cells, np.ones((2, 2), np.float32))
  b = wm._harmonic_amplitudes(wm.HARMONICS)
  rng = np.random.default_rng(3)
  images = []
  for bk, k in zip(b, wm.HARMONICS):                                       # A clock `phase` of a period ahead.
    th = 2 * np.pi * k * phase
    images += [bk * np.sin(th) * pattern, bk * np.cos(th) * pattern]
  images = [(0.01 * img + 0.01 * rng.normal(size=img.shape)).astype(np.float32) for img in images]
  payload, z_pilot, agree, z_K = wm._decode_at(images, wm._pair_sigmas(images), 0.0, 1.0, 0.0, 1.0)
  assert payload == 0x2B02_6F98_2012_3456 and z_pilot > 0 and agree > 0.99
  assert np.mean(np.sign(z_K) == signs) > 0.99
