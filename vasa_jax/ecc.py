"""Error-correcting code for the watermark payload: CRC-24 + rate-1/2 convolutional code.

64 payload bits get a CRC-24 (OpenPGP polynomial), then 6 zero tail bits, and the
94 bits are encoded with the K=7 (133, 171) convolutional code used by 802.11 and
many space links: 188 coded bits. Decoding is soft-decision Viterbi; the CRC then
says whether the decoded word is a real payload, which is what keeps false
matches on unwatermarked video rare (about 2^-24 per decoding attempt).
"""

import numpy as np

PAYLOAD_BITS = 64
CRC_BITS = 24
_CRC_POLY = 0x864CFB
_CRC_INIT = 0xB704CE
_K = 7  # Constraint length: 6 memory bits, 64 trellis states.
_GENERATORS = (0o133, 0o171)
INFO_BITS = PAYLOAD_BITS + CRC_BITS
CODED_BITS = 2 * (INFO_BITS + _K - 1)


def crc24(bits: np.ndarray) -> int:
  """CRC-24/OpenPGP of a bit sequence (most significant first)."""
  reg = _CRC_INIT
  for bit in np.asarray(bits, np.uint8):
    reg ^= int(bit) << 23
    reg = ((reg << 1) ^ _CRC_POLY) if reg & 0x800000 else (reg << 1)
    reg &= 0xFFFFFF
  return reg


def int_to_bits(value: int, n: int) -> np.ndarray:
  return np.array([(value >> (n - 1 - i)) & 1 for i in range(n)], np.uint8)


def bits_to_int(bits: np.ndarray) -> int:
  out = 0
  for bit in np.asarray(bits, np.uint8):
    out = (out << 1) | int(bit)
  return out


def _parity(x: np.ndarray) -> np.ndarray:
  x = np.asarray(x, np.int64)
  out = np.zeros_like(x)
  for i in range(_K):
    out ^= (x >> i) & 1
  return out


def _conv_encode(bits: np.ndarray) -> np.ndarray:
  reg = 0
  out = []
  for bit in bits:
    reg = ((reg << 1) | int(bit)) & ((1 << _K) - 1)
    out.extend(int(_parity(reg & g)) for g in _GENERATORS)
  return np.array(out, np.uint8)


def encode(payload: int) -> np.ndarray:
  """64-bit payload -> 188 coded bits (uint8 0/1)."""
  if not 0 <= payload < 1 << PAYLOAD_BITS:
    raise ValueError(f"payload must be a {PAYLOAD_BITS}-bit unsigned integer, got {payload}")
  bits = int_to_bits(payload, PAYLOAD_BITS)
  info = np.concatenate([bits, int_to_bits(crc24(bits), CRC_BITS), np.zeros(_K - 1, np.uint8)])
  return _conv_encode(info)


# Trellis, built once: state = the last 6 input bits, newest in the lowest bit.
_STATES = 1 << (_K - 1)
_NEXT = np.arange(_STATES)
_PREV = np.stack([_NEXT >> 1, (_NEXT >> 1) | (_STATES >> 1)], axis=1)  # Two predecessors per state.
_INPUT = _NEXT & 1
_REGS = (_PREV << 1) | _INPUT[:, None]  # 7-bit register on each transition.
_OUT_SIGN = np.stack([2 * _parity(_REGS & g) - 1 for g in _GENERATORS], axis=-1).astype(np.float64)


def viterbi(soft: np.ndarray) -> np.ndarray:
  """Soft-decision Viterbi: coded soft values (positive means 1) -> info bits (uint8)."""
  soft_Tx2 = np.asarray(soft, np.float64).reshape(-1, 2)
  steps = soft_Tx2.shape[0]
  metric = np.full(_STATES, -np.inf)
  metric[0] = 0.0
  choice = np.zeros((steps, _STATES), np.uint8)
  for t in range(steps):
    # Branch metrics for both predecessors of every state: [states, 2].
    cand = metric[_PREV] + _OUT_SIGN @ soft_Tx2[t]
    pick = np.argmax(cand, axis=1)
    choice[t] = pick
    metric = cand[_NEXT, pick]
  # The tail bits drive the encoder back to state 0.
  state, bits = 0, np.zeros(steps, np.uint8)
  for t in range(steps - 1, -1, -1):
    bits[t] = _INPUT[state]
    state = _PREV[state, choice[t, state]]
  return bits


def decode(soft: np.ndarray) -> tuple[int | None, np.ndarray]:
  """Coded soft values -> (payload or None if the CRC fails, re-encoded bits of the decision)."""
  info = viterbi(soft)[:INFO_BITS]
  payload_bits, crc_bits = info[:PAYLOAD_BITS], info[PAYLOAD_BITS:]
  payload = bits_to_int(payload_bits)
  recoded = _conv_encode(np.concatenate([info, np.zeros(_K - 1, np.uint8)]))
  ok = crc24(payload_bits) == bits_to_int(crc_bits)
  return (payload if ok else None), recoded
