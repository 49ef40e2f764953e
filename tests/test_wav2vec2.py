"""The Flax wav2vec2 port against a tiny random PyTorch `Wav2Vec2Model`, saved and converted."""

import json

import jax
import numpy as np
import pytest

from vasa_jax.errors import UserError
from vasa_jax.models import wav2vec2



@pytest.fixture(name="torch")
def _torch_fixture():
  """torch and transformers are test-only; without them these tests skip."""
  pytest.importorskip("transformers")
  return pytest.importorskip("torch")


def _tiny_torch_model(feat_extract_norm: str, stable: bool, pos_kernel: int = 16):
  import torch  # pylint: disable=import-outside-toplevel
  import transformers  # pylint: disable=import-outside-toplevel
  torch.manual_seed(0)
  cfg = transformers.Wav2Vec2Config(
      hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
      conv_dim=(16, 16, 16), conv_kernel=(10, 3, 3), conv_stride=(5, 2, 2),
      num_conv_pos_embeddings=pos_kernel, num_conv_pos_embedding_groups=2,
      feat_extract_norm=feat_extract_norm, do_stable_layer_norm=stable, conv_bias=stable,
      mask_time_prob=0.0)
  model = transformers.Wav2Vec2Model(cfg).eval()
  # Random norms and biases too, so a swapped or skipped tensor cannot hide.
  with torch.no_grad():
    for p in model.parameters():
      p.add_(0.2 * torch.randn_like(p))
  return model


def _torch_forward(model, audio_BxL):
  import torch  # pylint: disable=import-outside-toplevel
  with torch.no_grad():
    out = model(torch.from_numpy(audio_BxL), output_hidden_states=True)
  return out.last_hidden_state.numpy(), [h.numpy() for h in out.hidden_states]


@pytest.mark.parametrize("norm,stable,pos_kernel", [("group", False, 16), ("layer", True, 15)])
def test_matches_pytorch(torch, tmp_path, norm, stable, pos_kernel):
  model = _tiny_torch_model(norm, stable, pos_kernel)
  model.save_pretrained(tmp_path)
  assert (tmp_path / "model.safetensors").exists()
  audio_BxL = np.random.default_rng(1).standard_normal((2, 1000)).astype(np.float32)
  want_last, want_hidden = _torch_forward(model, audio_BxL)

  module, params = wav2vec2.load_wav2vec2(str(tmp_path))
  assert module.cfg.do_stable_layer_norm == stable
  last, hidden = jax.jit(lambda p, a: module.apply(p, a, output_hidden_states=True))(params, audio_BxL)
  assert last.shape == want_last.shape == (2, wav2vec2.num_output_frames(module.cfg, 1000), 32)
  np.testing.assert_array_less(np.abs(np.asarray(last) - want_last).max(), 1e-4)
  assert len(hidden) == len(want_hidden) == 3
  for got, want in zip(hidden, want_hidden):
    np.testing.assert_array_less(np.abs(np.asarray(got) - want).max(), 1e-4)


def test_pytorch_bin_and_old_weight_norm_names(torch, tmp_path):
  model = _tiny_torch_model("group", False)
  model.config.save_pretrained(tmp_path)
  state = model.state_dict()
  # Older checkpoints store weight_g/weight_v and may carry a `wav2vec2.` prefix.
  renamed = {}
  for k, v in state.items():
    k = k.replace("parametrizations.weight.original0", "weight_g")
    k = k.replace("parametrizations.weight.original1", "weight_v")
    renamed["wav2vec2." + k] = v
  torch.save(renamed, tmp_path / "pytorch_model.bin")
  audio_BxL = np.random.default_rng(2).standard_normal((1, 800)).astype(np.float32)
  want_last, _ = _torch_forward(model, audio_BxL)
  module, params = wav2vec2.load_wav2vec2(str(tmp_path))
  got = module.apply(params, audio_BxL)
  np.testing.assert_array_less(np.abs(np.asarray(got) - want_last).max(), 1e-4)


def test_safetensors_reader_matches_library(torch, tmp_path):
  safetensors_torch = pytest.importorskip("safetensors.torch")
  tensors = {"a": torch.randn(3, 4), "b": torch.arange(5, dtype=torch.int64),
             "c": torch.randn(2, 2).to(torch.bfloat16)}
  safetensors_torch.save_file(tensors, tmp_path / "x.safetensors")
  got = wav2vec2.read_safetensors(str(tmp_path / "x.safetensors"))
  for k, v in tensors.items():
    np.testing.assert_array_equal(got[k].astype(np.float64), v.double().numpy())


def test_frame_aligned_features(torch, tmp_path):
  model = _tiny_torch_model("group", False)
  model.save_pretrained(tmp_path)
  module, params = wav2vec2.load_wav2vec2(str(tmp_path))
  cfg = module.cfg
  assert cfg.total_stride == 20 and cfg.receptive_field == 40
  # The tiny model's stride is 20 samples; at 400 fps a video frame is 2 strides,
  # as a 25 fps frame is 2 strides of a real (stride 320) model.
  audio = np.random.default_rng(3).standard_normal(1010).astype(np.float32)
  feats = wav2vec2.wav2vec2_per_frame(module, params, audio, fps=400, sample_rate=16000)
  assert feats.shape == (26, 32)  # ceil(1010 / 40) frames
  # Reference: normalise, pad to whole frames + (field - stride), average pairs.
  padded = np.zeros(26 * 40 + 20, np.float32)
  padded[:1010] = (audio - audio.mean()) / np.sqrt(audio.var() + 1e-7)
  want, _ = _torch_forward(model, padded[None])
  assert want.shape[1] == 52
  np.testing.assert_allclose(np.asarray(feats), want[0].reshape(26, 2, 32).mean(1), atol=1e-4)
  with pytest.raises(UserError, match="not a multiple"):
    wav2vec2.wav2vec2_per_frame(module, params, audio, fps=25, sample_rate=16010)


def test_missing_files_are_user_errors(tmp_path):
  with pytest.raises(UserError, match="not a directory"):
    wav2vec2.load_wav2vec2(str(tmp_path / "nope"))
  with pytest.raises(UserError, match="config.json"):
    wav2vec2.load_wav2vec2(str(tmp_path))
  (tmp_path / "config.json").write_text(json.dumps({"model_type": "wav2vec2"}))
  with pytest.raises(UserError, match="model.safetensors"):
    wav2vec2.load_wav2vec2(str(tmp_path))
  (tmp_path / "config.json").write_text(json.dumps({"model_type": "hubert"}))
  with pytest.raises(UserError, match="hubert"):
    wav2vec2.load_wav2vec2(str(tmp_path))


def test_safetensors_reader_without_torch(tmp_path):
  # Hand-written file: 8-byte little-endian header size, JSON header, raw buffers.
  a = np.arange(6, dtype=np.float32).reshape(2, 3)
  b = np.array([1.5, -2.0], np.float16)
  header = {"__metadata__": {"format": "pt"},
            "a": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]},
            "b": {"dtype": "F16", "shape": [2], "data_offsets": [24, 28]}}
  head = json.dumps(header).encode()
  path = tmp_path / "t.safetensors"
  path.write_bytes(len(head).to_bytes(8, "little") + head + a.tobytes() + b.tobytes())
  got = wav2vec2.read_safetensors(str(path))
  np.testing.assert_array_equal(got["a"], a)
  np.testing.assert_array_equal(got["b"], b)
  path.write_bytes(len(head).to_bytes(8, "little") + head + a.tobytes())
  with pytest.raises(UserError, match="truncated"):
    wav2vec2.read_safetensors(str(path))
