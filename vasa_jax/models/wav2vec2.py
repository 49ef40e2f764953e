"""Flax port of Hugging Face's `Wav2Vec2Model`, a converter from a local checkpoint,
and wav2vec2 features aligned to video frames.

The module mirrors `transformers.Wav2Vec2Model` in inference: a strided conv
feature extractor ("group" norm on the first layer for base models, "layer" norm
on every layer for large/XLSR), a feature projection, a grouped positional conv
(weight-normalised in PyTorch; folded into a plain kernel here) and a transformer
encoder, post-LN ("base") or pre-LN ("stable layer norm", large/XLSR). Parameter
names follow the PyTorch module names so the converter is a name-for-name copy.

Not ported: SpecAugment masking and dropout (training only), adapters, padding
attention masks (give one clip per row, all rows the same length).

Stage 2 uses it when `audio.features = "wav2vec2"` (`motion.MotionModel`): frozen,
on the K + W frames of audio of each window, inside the jitted step (`window_features`).
Stage 2 reads weights only in our converted format (`save_converted` / `load_converted`):

    python -m vasa_jax.models.wav2vec2 --convert HF_DIR OUT

turns a Hugging Face wav2vec2 folder that the user downloaded (config.json and
model.safetensors, or pytorch_model.bin with torch installed) into OUT/wav2vec2.json
(the architecture, where it came from, a digest) and OUT/wav2vec2.msgpack (Flax
params, float32). No pretrained weights ship with vasa_jax.
"""

import argparse
import dataclasses
import functools
import hashlib
import json
import math
import os
import re
import shutil
import sys
import tempfile
from typing import Any, Sequence

import flax.linen as nn
import flax.serialization
import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np

from vasa_jax.errors import UserError

_ACTIVATIONS = {
    "gelu": lambda x: nn.gelu(x, approximate=False),
    "gelu_new": lambda x: nn.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: nn.gelu(x, approximate=True),
    "relu": nn.relu,
    "silu": nn.silu,
    "swish": nn.silu,
}


@dataclasses.dataclass(frozen=True)
class Wav2Vec2Config:
  """The architecture fields of a Hugging Face wav2vec2 `config.json` (HF defaults)."""
  hidden_size: int = 768
  num_hidden_layers: int = 12
  num_attention_heads: int = 12
  intermediate_size: int = 3072
  hidden_act: str = "gelu"
  layer_norm_eps: float = 1e-5
  feat_extract_norm: str = "group"
  feat_extract_activation: str = "gelu"
  conv_dim: tuple[int, ...] = (512,) * 7
  conv_stride: tuple[int, ...] = (5, 2, 2, 2, 2, 2, 2)
  conv_kernel: tuple[int, ...] = (10, 3, 3, 3, 3, 2, 2)
  conv_bias: bool = False
  num_conv_pos_embeddings: int = 128
  num_conv_pos_embedding_groups: int = 16
  do_stable_layer_norm: bool = False
  # From preprocessor_config.json: zero-mean unit-variance input per clip.
  do_normalize: bool = True

  @classmethod
  def from_hf_dict(cls, d: dict[str, Any], source: str = "config") -> "Wav2Vec2Config":
    """Reads the fields we use from a HF config dict; rejects what we do not port."""
    model_type = d.get("model_type", "wav2vec2")
    if model_type != "wav2vec2":
      raise UserError(f"{source}: model_type is {model_type!r}; only 'wav2vec2' checkpoints are supported")
    if d.get("add_adapter") or d.get("adapter_attn_dim") is not None:
      raise UserError(f"{source}: wav2vec2 adapters (add_adapter/adapter_attn_dim) are not supported")
    kw = {}
    for f in dataclasses.fields(cls):
      if f.name in d:
        v = d[f.name]
        kw[f.name] = tuple(v) if isinstance(v, list) else v
    cfg = cls(**kw)
    if cfg.feat_extract_norm not in ("group", "layer"):
      raise UserError(f"{source}: feat_extract_norm is {cfg.feat_extract_norm!r}; expected 'group' or 'layer'")
    for act in (cfg.hidden_act, cfg.feat_extract_activation):
      if act not in _ACTIVATIONS:
        raise UserError(f"{source}: activation {act!r} is not supported; expected one of {sorted(_ACTIVATIONS)}")
    if not len(cfg.conv_dim) == len(cfg.conv_stride) == len(cfg.conv_kernel):
      raise UserError(f"{source}: conv_dim, conv_stride and conv_kernel must have the same length")
    return cfg

  @property
  def total_stride(self) -> int:
    """Input samples per output frame (320 for the standard models: 50 Hz at 16 kHz)."""
    return math.prod(self.conv_stride)

  @property
  def receptive_field(self) -> int:
    """Input samples that one output frame of the conv extractor sees (400 standard)."""
    field, jump = 1, 1
    for k, s in zip(self.conv_kernel, self.conv_stride):
      field += (k - 1) * jump
      jump *= s
    return field


def _layer_norm(eps: float, name: str) -> nn.LayerNorm:
  # Two-pass variance to match PyTorch to ~1e-6 on unnormalised inputs.
  return nn.LayerNorm(epsilon=eps, use_fast_variance=False, name=name)


class _ConvLayer(nn.Module):
  """One strided conv of the feature extractor, with its optional norm and activation."""
  cfg: Wav2Vec2Config
  index: int

  @nn.compact
  def __call__(self, x_BxLxC: jax.Array) -> jax.Array:
    cfg, i = self.cfg, self.index
    dim = cfg.conv_dim[i]
    x = nn.Conv(dim, (cfg.conv_kernel[i],), strides=(cfg.conv_stride[i],), padding="VALID",
                use_bias=cfg.conv_bias, name="conv")(x_BxLxC)
    if cfg.feat_extract_norm == "layer":
      x = _layer_norm(1e-5, "layer_norm")(x)
    elif i == 0:
      # GroupNorm with one group per channel: each channel normalised over time.
      x = nn.GroupNorm(num_groups=dim, epsilon=1e-5, use_fast_variance=False, name="layer_norm")(x)
    return _ACTIVATIONS[cfg.feat_extract_activation](x)


class _FeatureExtractor(nn.Module):
  """Strided conv stack from raw samples `[B, L]` to `[B, N, conv_dim[-1]]`."""
  cfg: Wav2Vec2Config

  @nn.compact
  def __call__(self, audio_BxL: jax.Array) -> jax.Array:
    x = audio_BxL[..., None]
    for i in range(len(self.cfg.conv_dim)):
      x = _ConvLayer(self.cfg, i, name=f"conv_layers_{i}")(x)
    return x


class _FeatureProjection(nn.Module):
  cfg: Wav2Vec2Config

  @nn.compact
  def __call__(self, feats_BxNxC: jax.Array) -> jax.Array:
    x = _layer_norm(self.cfg.layer_norm_eps, "layer_norm")(feats_BxNxC)
    return nn.Dense(self.cfg.hidden_size, name="projection")(x)


class _PositionalConv(nn.Module):
  """Grouped conv over time added to the input; PyTorch's weight norm is folded into `conv`."""
  cfg: Wav2Vec2Config

  @nn.compact
  def __call__(self, x_BxNxD: jax.Array) -> jax.Array:
    k = self.cfg.num_conv_pos_embeddings
    pos = nn.Conv(self.cfg.hidden_size, (k,), padding=[(k // 2, k // 2)],
                  feature_group_count=self.cfg.num_conv_pos_embedding_groups, name="conv")(x_BxNxD)
    if k % 2 == 0:
      pos = pos[:, :-1]  # Symmetric padding of an even kernel yields one frame too many.
    return _ACTIVATIONS[self.cfg.feat_extract_activation](pos)


class _Attention(nn.Module):
  cfg: Wav2Vec2Config

  @nn.compact
  def __call__(self, x_BxNxD: jax.Array) -> jax.Array:
    d, h = self.cfg.hidden_size, self.cfg.num_attention_heads
    split = lambda t: t.reshape(*t.shape[:-1], h, d // h)  # -> BxNxHxK
    q = split(nn.Dense(d, name="q_proj")(x_BxNxD)) * (d // h) ** -0.5
    k = split(nn.Dense(d, name="k_proj")(x_BxNxD))
    v = split(nn.Dense(d, name="v_proj")(x_BxNxD))
    w_BxHxNxN = jax.nn.softmax(jnp.einsum("bqhk,bshk->bhqs", q, k), axis=-1)
    out_BxNxHxK = jnp.einsum("bhqs,bshk->bqhk", w_BxHxNxN, v)
    return nn.Dense(d, name="out_proj")(out_BxNxHxK.reshape(x_BxNxD.shape))


class _FeedForward(nn.Module):
  cfg: Wav2Vec2Config

  @nn.compact
  def __call__(self, x_BxNxD: jax.Array) -> jax.Array:
    x = nn.Dense(self.cfg.intermediate_size, name="intermediate_dense")(x_BxNxD)
    return nn.Dense(self.cfg.hidden_size, name="output_dense")(_ACTIVATIONS[self.cfg.hidden_act](x))


class _EncoderLayer(nn.Module):
  cfg: Wav2Vec2Config

  @nn.compact
  def __call__(self, x_BxNxD: jax.Array) -> jax.Array:
    cfg = self.cfg
    attention = _Attention(cfg, name="attention")
    ln1 = _layer_norm(cfg.layer_norm_eps, "layer_norm")
    ln2 = _layer_norm(cfg.layer_norm_eps, "final_layer_norm")
    ff = _FeedForward(cfg, name="feed_forward")
    if cfg.do_stable_layer_norm:
      x = x_BxNxD + attention(ln1(x_BxNxD))
      return x + ff(ln2(x))
    x = ln1(x_BxNxD + attention(x_BxNxD))
    return ln2(x + ff(x))


class _Encoder(nn.Module):
  """Positional conv, then post-LN layers (base) or pre-LN layers + final norm (stable)."""
  cfg: Wav2Vec2Config

  @nn.compact
  def __call__(self, x_BxNxD: jax.Array) -> tuple[jax.Array, tuple[jax.Array, ...]]:
    cfg = self.cfg
    x_BxNxD = x_BxNxD + _PositionalConv(cfg, name="pos_conv_embed")(x_BxNxD)
    norm = _layer_norm(cfg.layer_norm_eps, "layer_norm")
    if not cfg.do_stable_layer_norm:
      x_BxNxD = norm(x_BxNxD)
    hidden = [x_BxNxD]
    for i in range(cfg.num_hidden_layers):
      x_BxNxD = _EncoderLayer(cfg, name=f"layers_{i}")(x_BxNxD)
      hidden.append(x_BxNxD)
    if cfg.do_stable_layer_norm:
      x_BxNxD = norm(x_BxNxD)
    return x_BxNxD, tuple(hidden)


class Wav2Vec2(nn.Module):
  """`Wav2Vec2Model` forward: audio `[B, L]` (16 kHz) -> hidden states `[B, N, D]` at 50 Hz."""
  cfg: Wav2Vec2Config

  @nn.compact
  def __call__(self, audio_BxL: jax.Array, output_hidden_states: bool = False):
    """Returns last_hidden_state, or (last_hidden_state, hidden states) when asked.

    As in Hugging Face (transformers 5), the hidden states are the encoder's
    input (after the positional embedding, and after the encoder's layer norm
    for post-LN models) followed by each layer's output; with stable layer norm
    the last of them is before the final norm, so it differs from
    last_hidden_state.
    """
    feats_BxNxC = _FeatureExtractor(self.cfg, name="feature_extractor")(audio_BxL)
    x_BxNxD = _FeatureProjection(self.cfg, name="feature_projection")(feats_BxNxC)
    last_BxNxD, hidden = _Encoder(self.cfg, name="encoder")(x_BxNxD)
    return (last_BxNxD, hidden) if output_hidden_states else last_BxNxD


def num_output_frames(cfg: Wav2Vec2Config, num_samples: int) -> int:
  """Frames the conv feature extractor yields for `num_samples` input samples."""
  n = num_samples
  for k, s in zip(cfg.conv_kernel, cfg.conv_stride):
    n = (n - k) // s + 1
  return max(n, 0)


# ---------------------------------------------------------------- checkpoints

_SAFETENSORS_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_,
}


def read_safetensors(path: str) -> dict[str, np.ndarray]:
  """Reads a .safetensors file (8-byte header length, JSON header, raw buffers) with numpy."""
  with open(path, "rb") as f:
    data = f.read()
  if len(data) < 8:
    raise UserError(f"{path}: not a safetensors file (too short)")
  header_len = int.from_bytes(data[:8], "little")
  try:
    header = json.loads(data[8:8 + header_len])
  except (UnicodeDecodeError, json.JSONDecodeError):
    raise UserError(f"{path}: not a safetensors file (unreadable header)") from None
  base = 8 + header_len
  out = {}
  for name, info in header.items():
    if name == "__metadata__":
      continue
    dtype = _SAFETENSORS_DTYPES.get(info["dtype"])
    if dtype is None:
      raise UserError(f"{path}: tensor {name} has unsupported dtype {info['dtype']}")
    begin, end = info["data_offsets"]
    if base + end > len(data):
      raise UserError(f"{path}: tensor {name} runs past the end of the file (truncated download?)")
    out[name] = np.frombuffer(data[base + begin:base + end], dtype=dtype).reshape(info["shape"])
  return out


def _read_torch_bin(path: str) -> dict[str, np.ndarray]:
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError:
    raise UserError(f"{path}: reading pytorch_model.bin needs torch (pip install torch); "
                    "or convert the checkpoint to model.safetensors") from None
  state = torch.load(path, map_location="cpu", weights_only=True)
  return {k: v.detach().float().numpy() if v.is_floating_point() else v.numpy() for k, v in state.items()}


def read_checkpoint(local_dir: str) -> dict[str, np.ndarray]:
  """All tensors of a local HF checkpoint: model.safetensors (single or sharded) or pytorch_model.bin."""
  single = os.path.join(local_dir, "model.safetensors")
  index = os.path.join(local_dir, "model.safetensors.index.json")
  torch_bin = os.path.join(local_dir, "pytorch_model.bin")
  if os.path.isfile(single):
    return read_safetensors(single)
  if os.path.isfile(index):
    with open(index) as f:
      shards = sorted(set(json.load(f)["weight_map"].values()))
    tensors = {}
    for shard in shards:
      tensors.update(read_safetensors(os.path.join(local_dir, shard)))
    return tensors
  if os.path.isfile(torch_bin):
    return _read_torch_bin(torch_bin)
  raise UserError(f"{local_dir}: no weights found; expected model.safetensors, "
                  "model.safetensors.index.json or pytorch_model.bin")


def _weight_norm(g: np.ndarray, v: np.ndarray) -> np.ndarray:
  """PyTorch weight_norm(dim=2) on a conv weight `[O, I, K]`: g `[1, 1, K]` times v / ||v||."""
  v = v.astype(np.float64)
  return g.astype(np.float64) * v / np.sqrt(np.sum(v * v, axis=(0, 1), keepdims=True))


def _torch_name(flax_path: Sequence[str]) -> str:
  """Flax param path -> PyTorch state-dict key: encoder/layers_0/attention/q_proj/kernel ->
  encoder.layers.0.attention.q_proj.weight."""
  *mods, leaf = flax_path
  mods = [re.sub(r"^(conv_layers|layers)_(\d+)$", r"\1.\2", m) for m in mods]
  return ".".join(mods + [{"kernel": "weight", "scale": "weight", "bias": "bias"}[leaf]])


def convert_state_dict(cfg: Wav2Vec2Config, tensors: dict[str, np.ndarray], source: str = "checkpoint"):
  """Maps a HF wav2vec2 state dict (any `wav2vec2.` prefix stripped) to Flax params."""
  module = Wav2Vec2(cfg)
  shapes = jax.eval_shape(lambda: module.init(jax.random.key(0), jnp.zeros((1, cfg.receptive_field))))
  prefixes = [p for p in ("wav2vec2.", "") if any(k.startswith(p + "feature_extractor.") for k in tensors)]
  if not prefixes:
    raise UserError(f"{source}: no wav2vec2 feature_extractor weights found; is this a wav2vec2 checkpoint?")
  sd = {k[len(prefixes[0]):]: v for k, v in tensors.items() if k.startswith(prefixes[0])}

  def convert(path, leaf_shape):
    keys = [getattr(p, "key") for p in path][1:]  # drop "params"
    name = _torch_name(keys)
    if name == "encoder.pos_conv_embed.conv.weight" and name not in sd:
      pairs = [("encoder.pos_conv_embed.conv.weight_g", "encoder.pos_conv_embed.conv.weight_v"),
               ("encoder.pos_conv_embed.conv.parametrizations.weight.original0",
                "encoder.pos_conv_embed.conv.parametrizations.weight.original1")]
      for g, v in pairs:
        if g in sd and v in sd:
          w = _weight_norm(sd[g], sd[v])
          break
      else:
        raise UserError(f"{source}: missing positional conv weights "
                        "(expected weight_g/weight_v or parametrizations.weight.original0/original1)")
    elif name in sd:
      w = sd[name].astype(np.float64)
    else:
      raise UserError(f"{source}: missing tensor {name!r} for this config")
    if keys[-1] == "kernel":
      w = w.T if w.ndim == 2 else w.transpose(2, 1, 0)  # Linear [O, I] -> [I, O]; Conv1d [O, I, K] -> [K, I, O]
    if w.shape != leaf_shape.shape:
      raise UserError(f"{source}: tensor {name!r} has shape {w.shape} after conversion, expected {leaf_shape.shape}")
    return jnp.asarray(w, dtype=jnp.float32)

  return jax.tree_util.tree_map_with_path(convert, shapes)


def load_wav2vec2(local_dir: str):
  """Loads a Hugging Face wav2vec2 checkpoint from a local directory -> (module, params).

  Expects config.json and model.safetensors (or a sharded index, or
  pytorch_model.bin, which needs torch); preprocessor_config.json is optional.
  """
  if not os.path.isdir(local_dir):
    raise UserError(f"{local_dir}: not a directory; expected a Hugging Face wav2vec2 checkpoint "
                    "folder with config.json and model.safetensors")
  config_path = os.path.join(local_dir, "config.json")
  if not os.path.isfile(config_path):
    raise UserError(f"{local_dir}: config.json is missing; expected a Hugging Face wav2vec2 checkpoint folder")
  with open(config_path) as f:
    d = json.load(f)
  pre_path = os.path.join(local_dir, "preprocessor_config.json")
  if os.path.isfile(pre_path):
    with open(pre_path) as f:
      d = {**d, "do_normalize": bool(json.load(f).get("do_normalize", True))}
  cfg = Wav2Vec2Config.from_hf_dict(d, source=config_path)
  params = convert_state_dict(cfg, read_checkpoint(local_dir), source=local_dir)
  return Wav2Vec2(cfg), params


# ------------------------------------------------------ video-frame alignment

def check_frame_rate(cfg: Wav2Vec2Config, fps: int, sample_rate: int) -> int:
  """wav2vec2 frames per video frame (2 for the standard models at 16 kHz, 25 fps)."""
  spf = sample_rate / fps
  if spf != int(spf) or int(spf) % cfg.total_stride:
    raise UserError(f"{sample_rate} Hz at {fps} fps is {spf:g} samples per frame, "
                    f"not a multiple of the wav2vec2 stride {cfg.total_stride}")
  return int(spf) // cfg.total_stride


def window_features(cfg: Wav2Vec2Config, params, audio_BxS: jax.Array, per_frame: int,
                    layer: int | None = None) -> jax.Array:
  """Per-video-frame features `[B, S // (per_frame * stride), D]` of whole-frame audio rows (traceable).

  Each row is one clip or window on its own: with `do_normalize` it is scaled to
  zero mean and unit variance over its samples (Hugging Face's feature extractor
  does this per clip), then zero-padded on the right by `receptive_field -
  stride` samples so the extractor yields exactly `per_frame` wav2vec2 frames
  per video frame, each starting inside it; their mean is the frame's feature.
  The transformer is bidirectional, so every frame's feature depends on the whole
  row. `layer` picks a hidden state (0 = encoder input), default (None) the last.
  """
  x = audio_BxS.astype(jnp.float32)
  if cfg.do_normalize:
    mean = x.mean(-1, keepdims=True)
    x = (x - mean) / jnp.sqrt(jnp.mean((x - mean) ** 2, -1, keepdims=True) + 1e-7)
  x = jnp.pad(x, ((0, 0), (0, cfg.receptive_field - cfg.total_stride)))
  last, hidden = Wav2Vec2(cfg).apply(params, x, output_hidden_states=True)
  h_BxNxD = last if layer is None else hidden[layer]
  b, n, d = h_BxNxD.shape
  return h_BxNxD[:, :n // per_frame * per_frame].reshape(b, n // per_frame, per_frame, d).mean(axis=2)


def wav2vec2_per_frame(module: Wav2Vec2, params, audio: np.ndarray, fps: int = 25,
                       sample_rate: int = 16000, layer: int | None = None) -> jax.Array:
  """wav2vec2 features `[T, D]` of a whole clip, T = ceil(len / (sample_rate / fps)).

  The clip, zero-padded on the right to T whole video frames, is one row of
  `window_features` (normalised over its own samples first). Frame t's conv
  features see samples [t*640, (t+1)*640 + 80) for the standard models; the
  transformer sees the whole clip, so these are offline features, not streaming
  ones (stage 2 computes them per window instead: `motion.MotionModel`).
  """
  cfg = module.cfg
  audio = np.asarray(audio, np.float32)
  if audio.ndim != 1 or audio.size == 0:
    raise UserError(f"wav2vec2 features need non-empty mono audio [samples]; got shape {audio.shape}")
  per = check_frame_rate(cfg, fps, sample_rate)
  if cfg.do_normalize:  # Over the clip's own samples, not the padding.
    audio = (audio - audio.mean()) / np.sqrt(audio.var() + 1e-7)
  spf = per * cfg.total_stride
  padded = np.zeros(-(-audio.size // spf) * spf, np.float32)
  padded[:audio.size] = audio
  return _pooled_hidden(dataclasses.replace(cfg, do_normalize=False), params, jnp.asarray(padded)[None],
                        per, layer)[0]


@functools.partial(jax.jit, static_argnums=(0, 3, 4))
def _pooled_hidden(cfg: Wav2Vec2Config, params, audio_BxL: jax.Array, per: int, layer: int | None) -> jax.Array:
  return window_features(cfg, params, audio_BxL, per, layer)


# ------------------------------------------------- our converted format

CONVERTED_JSON = "wav2vec2.json"
CONVERTED_PARAMS = "wav2vec2.msgpack"
CONVERTED_FORMAT = "vasa_jax.wav2vec2"
CONVERT_COMMAND = "python -m vasa_jax.models.wav2vec2 --convert HF_DIR OUT"


def params_digest(params) -> str:
  """A short content hash of the weights (names, shapes and values)."""
  h = hashlib.sha256()
  for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    a = np.ascontiguousarray(np.asarray(leaf, np.float32))
    h.update(jax.tree_util.keystr(path).encode() + str(a.shape).encode())
    h.update(a.tobytes())
  return h.hexdigest()[:16]


def save_converted(out_dir: str, cfg: Wav2Vec2Config, params, source: str = "") -> str:
  """Writes OUT/wav2vec2.json and OUT/wav2vec2.msgpack; returns the weights' digest."""
  os.makedirs(out_dir, exist_ok=True)
  params = jax.tree.map(lambda a: np.asarray(a, np.float32), params)
  digest = params_digest(params)
  with open(os.path.join(out_dir, CONVERTED_PARAMS), "wb") as f:
    f.write(flax.serialization.msgpack_serialize(params))
  meta = {"format": CONVERTED_FORMAT, "version": 1, "config": dataclasses.asdict(cfg), "source": source,
          "digest": digest}
  with open(os.path.join(out_dir, CONVERTED_JSON), "w") as f:
    json.dump(meta, f, indent=1)
  return digest


def _accepted(key: str) -> str:
  return (f"{key} accepts a folder written by {CONVERT_COMMAND} ({CONVERTED_JSON} + {CONVERTED_PARAMS}; "
          "pretrained weights are not shipped: download a Hugging Face wav2vec2 checkpoint yourself)")


def converted_config(path: str, key: str = "audio.wav2vec2_path") -> Wav2Vec2Config:
  """The architecture of a converted folder; a one-line `UserError` naming `key` if it is not one."""
  if not path:
    raise UserError(f"{key} is empty; {_accepted(key)}")
  meta_path = os.path.join(path, CONVERTED_JSON)
  if not os.path.isdir(path):
    raise UserError(f"{key}={path!r} does not exist; {_accepted(key)}")
  if not os.path.isfile(meta_path):
    hf = os.path.isfile(os.path.join(path, "config.json"))
    what = "a Hugging Face folder, not a converted one" if hf else f"a folder without {CONVERTED_JSON}"
    raise UserError(f"{key}={path!r} is {what}; {_accepted(key)}")
  try:
    with open(meta_path) as f:
      meta = json.load(f)
    if meta.get("format") != CONVERTED_FORMAT:
      raise ValueError(f"format {meta.get('format')!r}")
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in meta["config"].items()}
    return Wav2Vec2Config(**fields)
  except (json.JSONDecodeError, ValueError, KeyError, TypeError) as e:
    raise UserError(f"{key}={path!r}: {CONVERTED_JSON} is not readable ({type(e).__name__}: {e}); "
                    f"{_accepted(key)}") from None


def load_converted(path: str, key: str = "audio.wav2vec2_path") -> tuple[Wav2Vec2Config, Any]:
  """(architecture, Flax params) of a converted folder, checked against the architecture."""
  cfg = converted_config(path, key)
  params_path = os.path.join(path, CONVERTED_PARAMS)
  if not os.path.isfile(params_path):
    raise UserError(f"{key}={path!r} has no {CONVERTED_PARAMS}; {_accepted(key)}")
  with open(params_path, "rb") as f:
    data = f.read()
  try:
    params = flax.serialization.msgpack_restore(data)
  except Exception as e:  # msgpack raises several types for damaged bytes.
    raise UserError(f"{key}={path!r}: {CONVERTED_PARAMS} is damaged ({type(e).__name__}); {_accepted(key)}") from None
  want = jax.eval_shape(lambda: Wav2Vec2(cfg).init(jax.random.key(0), jnp.zeros((1, cfg.receptive_field))))
  flat = lambda t: {jax.tree_util.keystr(k): tuple(np.shape(v))  # noqa: E731
                    for k, v in jax.tree_util.tree_flatten_with_path(t)[0]}
  got_shapes, want_shapes = flat(params), flat(want)
  if got_shapes != want_shapes:
    bad = sorted(set(got_shapes.items()) ^ set(want_shapes.items()))[0][0]
    raise UserError(f"{key}={path!r}: {CONVERTED_PARAMS} does not match the architecture in {CONVERTED_JSON} "
                    f"(first difference at {bad}); convert again with {CONVERT_COMMAND}")
  return cfg, jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), params)


def convert(hf_dir: str, out_dir: str, *, overwrite: bool = False) -> str:
  """A Hugging Face wav2vec2 folder -> our converted folder; returns the weights' digest.

  OUT appears whole or not at all: the files are written to a hidden folder beside it (removed on
  Ctrl-C or an error) that is then renamed. A folder that already holds converted weights is only
  replaced with `overwrite`."""
  from vasa_jax import interrupt  # pylint: disable=import-outside-toplevel
  out_dir = os.path.abspath(out_dir)
  if os.path.exists(out_dir):
    if not os.path.isdir(out_dir):
      raise UserError(f"OUT {out_dir!r} is a file; give a folder (new, or one to replace with --overwrite)")
    if os.listdir(out_dir) and not overwrite:
      raise UserError(f"OUT {out_dir!r} already exists and is not empty; pass --overwrite to replace it, "
                      "or choose another folder")
  parent = os.path.dirname(out_dir)
  if not os.path.isdir(parent):
    raise UserError(f"OUT's parent folder {parent!r} does not exist")
  module, params = load_wav2vec2(hf_dir)
  tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(out_dir)}.", suffix=".partial", dir=parent)
  with interrupt.removed_on_interrupt(tmp):
    try:
      digest = save_converted(tmp, module.cfg, params, source=os.path.abspath(hf_dir))
      if os.path.exists(out_dir):  # --overwrite: the old folder goes only once the new one is complete.
        old = tempfile.mkdtemp(prefix=f".{os.path.basename(out_dir)}.", suffix=".old", dir=parent)
        os.replace(out_dir, os.path.join(old, "x"))
        os.replace(tmp, out_dir)
        shutil.rmtree(old, ignore_errors=True)
      else:
        os.replace(tmp, out_dir)
    except BaseException:
      shutil.rmtree(tmp, ignore_errors=True)
      raise
  return digest


def main(argv: Sequence[str] | None = None) -> int:
  p = argparse.ArgumentParser(
      prog="python -m vasa_jax.models.wav2vec2",
      description="Convert a Hugging Face wav2vec2 checkpoint folder you downloaded (config.json + "
                  "model.safetensors, or pytorch_model.bin with torch installed) to the folder that "
                  "audio.wav2vec2_path names. Nothing is downloaded.")
  p.add_argument("--convert", nargs=2, metavar=("HF_DIR", "OUT"), required=True)
  p.add_argument("--overwrite", action="store_true", help="replace OUT if it already holds files")
  args = p.parse_args(argv)
  try:
    digest = convert(*args.convert, overwrite=args.overwrite)
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  cfg = converted_config(args.convert[1], "OUT")
  print(f"wrote {args.convert[1]}: wav2vec2 {cfg.num_hidden_layers} layers x {cfg.hidden_size}, digest {digest}")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
