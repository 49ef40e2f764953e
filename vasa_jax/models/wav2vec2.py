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

Where it is meant to go: no config selects it yet, so only its parity test runs it.
It is the alternative audio front end to the log-mel features of `audio.py`: an
`audio.frontend` config key choosing between them in `motion.MotionModel.features`
(frozen wav2vec2 features into `models/audio_encoder.py`), which issue 15 (scale)
wires in together with the corpus-side feature cache.
"""

import dataclasses
import functools
import json
import math
import os
import re
from typing import Any, Sequence

import flax.linen as nn
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

def wav2vec2_per_frame(module: Wav2Vec2, params, audio: np.ndarray, fps: int = 25,
                       sample_rate: int = 16000, layer: int | None = None) -> jax.Array:
  """wav2vec2 features `[T, D]` for video frames, T = ceil(len / (sample_rate / fps)).

  wav2vec2 frame n's receptive field starts at sample n * stride (stride 320 =
  20 ms at 16 kHz). The clip is zero-padded on the right to T whole video frames
  plus (receptive_field - stride) samples, so the extractor yields exactly
  `samples_per_frame / stride` frames (2 at 25 fps) starting inside each video
  frame; their mean is the video frame's feature. Frame t's conv features see
  samples [t*640, (t+1)*640 + 80) for the standard models; the transformer is
  bidirectional over the whole clip, so these features are offline, not
  streaming. `layer` picks a hidden state (0 = encoder input), default the last.
  With `do_normalize` the clip is scaled to zero mean and unit variance first,
  as Hugging Face's feature extractor does.
  """
  cfg = module.cfg
  audio = np.asarray(audio, np.float32)
  if audio.ndim != 1 or audio.size == 0:
    raise UserError(f"wav2vec2 features need non-empty mono audio [samples]; got shape {audio.shape}")
  spf = sample_rate / fps
  if spf != int(spf) or int(spf) % cfg.total_stride:
    raise UserError(f"{sample_rate} Hz at {fps} fps is {spf} samples per frame, "
                    f"not a multiple of the wav2vec2 stride {cfg.total_stride}")
  spf = int(spf)
  if cfg.do_normalize:
    audio = (audio - audio.mean()) / np.sqrt(audio.var() + 1e-7)
  t = -(-audio.size // spf)
  padded = np.zeros(t * spf + cfg.receptive_field - cfg.total_stride, np.float32)
  padded[:audio.size] = audio
  return _pooled_hidden(cfg, params, jnp.asarray(padded)[None], spf // cfg.total_stride, layer)[0]


@functools.partial(jax.jit, static_argnums=(0, 3, 4))
def _pooled_hidden(cfg: Wav2Vec2Config, params, audio_BxL: jax.Array, per: int, layer: int | None) -> jax.Array:
  """Mean of each run of `per` consecutive wav2vec2 frames: `[B, N // per, D]`."""
  last, hidden = Wav2Vec2(cfg).apply(params, audio_BxL, output_hidden_states=True)
  h_BxNxD = last if layer is None else hidden[layer]
  b, n, d = h_BxNxD.shape
  return h_BxNxD[:, :n // per * per].reshape(b, n // per, per, d).mean(axis=2)
