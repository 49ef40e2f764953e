"""The watermark's ECC against published values: CRC-24/OpenPGP, the (133, 171) code's impulse response, Viterbi."""

import numpy as np
import pytest

from vasa_jax import ecc


def _bits_of_bytes(data: bytes):
  return np.array([(byte >> (7 - i)) & 1 for byte in data for i in range(8)], np.uint8)


def test_crc24_matches_the_openpgp_check_values():
  assert ecc.crc24(_bits_of_bytes(b"123456789")) == 0x21CF02      # RFC 4880's CRC-24 check value.
  assert ecc.crc24(np.zeros(0, np.uint8)) == 0xB704CE              # Empty input: the initial register.
  assert ecc.crc24(_bits_of_bytes(b"a")) != ecc.crc24(_bits_of_bytes(b"b"))


def test_bit_conversions_round_trip_most_significant_first():
  assert ecc.int_to_bits(0b1011, 6).tolist() == [0, 0, 1, 0, 1, 1]
  assert ecc.bits_to_int(np.array([1, 0, 1, 1])) == 11
  for v in (0, 1, 2**63 + 12345, 2**64 - 1):
    assert ecc.bits_to_int(ecc.int_to_bits(v, 64)) == v


def test_convolutional_code_impulse_response_is_the_generators():
  out = ecc._conv_encode(np.array([1, 0, 0, 0, 0, 0, 0], np.uint8)).reshape(-1, 2)
  assert out[:, 0].tolist() == [(0o133 >> t) & 1 for t in range(7)]
  assert out[:, 1].tolist() == [(0o171 >> t) & 1 for t in range(7)]
  assert not ecc._conv_encode(np.zeros(10, np.uint8)).any()
  # Linear over GF(2): the code of a sum is the sum of the codes.
  a, b = np.random.default_rng(0).integers(0, 2, (2, 30)).astype(np.uint8)
  np.testing.assert_array_equal(ecc._conv_encode(a ^ b), ecc._conv_encode(a) ^ ecc._conv_encode(b))


def test_encode_layout_and_range():
  assert ecc.CODED_BITS == 188 and ecc.INFO_BITS == 88
  payload = 0x1234_5678_9ABC_DEF0
  coded = ecc.encode(payload)
  assert coded.shape == (188,) and coded.dtype == np.uint8
  info = np.concatenate([ecc.int_to_bits(payload, 64), ecc.int_to_bits(ecc.crc24(ecc.int_to_bits(payload, 64)), 24),
                         np.zeros(6, np.uint8)])
  np.testing.assert_array_equal(coded, ecc._conv_encode(info))
  for bad in (-1, 2**64):
    with pytest.raises(ValueError):
      ecc.encode(bad)
  assert ecc.encode(2**64 - 1).shape == (188,) and ecc.encode(0).shape == (188,)


@pytest.mark.parametrize("payload", [0, 1, 0xFFFF_FFFF_FFFF_FFFF, 0x1234_5678_9ABC_DEF0])
def test_viterbi_corrects_scattered_errors_and_the_crc_rejects_noise(payload):
  signs = 2.0 * ecc.encode(payload) - 1.0
  assert ecc.decode(signs)[0] == payload
  np.testing.assert_array_equal(ecc.viterbi(signs)[:88][:64], ecc.int_to_bits(payload, 64))
  noisy = signs.copy()
  noisy[5::10] *= -1                                # 10% hard errors, spread out.
  found, recoded = ecc.decode(noisy)
  assert found == payload
  np.testing.assert_array_equal(recoded, ecc.encode(payload))
  # Soft values: weak wrong bits lose against strong right ones.
  soft = signs * np.random.default_rng(1).uniform(0.5, 1.5, signs.size)
  soft[::4] = -0.2 * signs[::4]
  assert ecc.decode(soft)[0] == payload
  rng = np.random.default_rng(2)
  assert all(ecc.decode(rng.normal(size=188))[0] is None for _ in range(20))


def test_a_codeword_with_a_wrong_crc_is_rejected():
  bits = ecc.int_to_bits(42, 64)
  wrong = np.concatenate([bits, ecc.int_to_bits(ecc.crc24(bits) ^ 1, 24), np.zeros(6, np.uint8)])
  found, recoded = ecc.decode(2.0 * ecc._conv_encode(wrong) - 1.0)
  assert found is None
  np.testing.assert_array_equal(recoded, ecc._conv_encode(wrong))
