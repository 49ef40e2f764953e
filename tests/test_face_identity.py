"""Identity similarity on real faces, with known answers: the astronaut (Eileen Collins) moved and zoomed
over a background and cut to a 128^2 face crop is the same person; Grace Hopper (matplotlib's sample
photo) is not; a picture without a face gives NaN with the reason, and the CLI refuses it."""

import math

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("dlib")

import face_media  # noqa: E402
from vasa_jax import cli, face_identity  # noqa: E402

pytestmark = pytest.mark.skipif(not face_identity.available(), reason=face_identity.INSTALL_HINT)


def _hopper() -> np.ndarray:
  from matplotlib import cbook  # pylint: disable=import-outside-toplevel
  with Image.open(cbook.get_sample_data("grace_hopper.jpg")) as im:
    return np.asarray(im.convert("RGB"))


def test_same_person_close_other_person_far():
  portrait = face_media.astronaut()
  frames, _ = face_media.moving_head_frames(30, fps=25.0)
  crop = np.asarray(Image.fromarray(face_media.head()).resize((128, 128), Image.BILINEAR))
  same = face_identity.identity_similarity(portrait, [*frames[::10], crop])
  assert same["faces"] == same["frames"] == 4
  assert same["distance_max"] < 0.35 and same["cosine_mean"] > 0.97 and same["same_person"] == 1.0
  other = face_identity.identity_similarity(portrait, [_hopper()])
  assert other["faces"] == 1
  assert other["distance_mean"] > face_identity.SAME_PERSON and other["same_person"] == 0.0
  assert other["distance_mean"] > same["distance_max"] + 0.3
  # Float frames in [0, 1] (what the samplers render) give the same answer.
  again = face_identity.identity_similarity(portrait.astype(np.float32) / 255.0, [crop.astype(np.float32) / 255.0])
  assert abs(again["distance_mean"] - face_identity.compare(face_identity.embed(portrait),
                                                           face_identity.embed(crop))[0]) < 1e-6


def test_no_face_gives_nan_with_a_reason(tmp_path, capsys):
  bg = face_media.background(240, 320)
  r = face_identity.identity_similarity(bg, [face_media.astronaut()])
  assert math.isnan(r["distance_mean"]) and r["reason"] == "no face found in the portrait"
  r = face_identity.identity_similarity(face_media.astronaut(), [bg, bg])
  assert r["faces"] == 0 and math.isnan(r["same_person"]) and "any of the 2 frames" in r["reason"]
  pooled = face_identity.pooled([r, face_identity.identity_similarity(face_media.astronaut(), [face_media.head()])])
  assert pooled["scored"] == 1 and pooled["same_person"] == 1.0
  # The command line: a portrait without a face is refused in one line.
  Image.fromarray(bg).save(tmp_path / "bg.png")
  Image.fromarray(face_media.astronaut()).save(tmp_path / "a.png")
  Image.fromarray(_hopper()).save(tmp_path / "h.png")
  assert cli.run(face_identity.main, face_identity.parser(),
                 ["--portrait", str(tmp_path / "bg.png"), "--images", str(tmp_path / "a.png")]) == 2
  assert "no face found" in capsys.readouterr().err
  assert cli.run(face_identity.main, face_identity.parser(),
                 ["--portrait", str(tmp_path / "a.png"), "--images", str(tmp_path / "a.png"), str(tmp_path / "h.png")]) == 0
  out = capsys.readouterr().out.splitlines()
  assert out[0].startswith("model: dlib face_recognition_resnet_model_v1")
  assert "same person (< 0.6) in 100%" in out[1] and "in 0%" in out[2]
