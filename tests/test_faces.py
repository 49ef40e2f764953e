"""Face detection, landmarks and crops on real photos (scikit-image's astronaut) and synthetic heads."""

import os
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("ai_edge_litert")

import face_media  # noqa: E402
from vasa_jax import faces, jobs, media  # noqa: E402
from vasa_jax.data import synthetic  # noqa: E402
from vasa_jax.errors import UserError  # noqa: E402


def _eyes_and_size(img):
  found = faces.find_faces(img)
  assert len(found) == 1, len(found)
  return faces.face_frame(found[0].landmarks)


def test_astronaut_face_landmarks_and_iris_land_on_the_face():
  img = face_media.astronaut()
  found = faces.find_faces(img)
  assert len(found) == 1
  f = found[0]
  assert f.score > 0.8 and f.presence > 0.9
  x0, y0, x1, y1 = f.box
  # Her face is off-centre: up and to the left of the 512x512 photo's centre.
  assert 150 < x0 < 200 and 250 < x1 < 300 and 40 < y0 < 90 and 150 < y1 < 200
  assert f.landmarks.shape == (478, 3)
  inside = ((f.landmarks[:, 0] > x0 - 20) & (f.landmarks[:, 0] < x1 + 20)
            & (f.landmarks[:, 1] > y0 - 40) & (f.landmarks[:, 1] < y1 + 20))
  assert inside.all()
  for iris, corners in ((faces.IRIS_A, faces.EYE_A), (faces.IRIS_B, faces.EYE_B)):
    a, b = f.landmarks[list(corners), :2]
    c = f.landmarks[iris, :2]
    # The iris centre lies between the eye's corners, close to the line joining them.
    t = np.dot(c - a, b - a) / np.dot(b - a, b - a)
    assert 0.2 < t < 0.8
    assert abs((b - a)[0] * (c - a)[1] - (b - a)[1] * (c - a)[0]) / np.linalg.norm(b - a) < 0.25 * np.linalg.norm(b - a)
  # Mouth below the eyes, nose between.
  eyes = f.landmarks[[faces.IRIS_A, faces.IRIS_B], 1].mean()
  assert eyes < f.landmarks[faces.NOSE_TIP, 1] < f.landmarks[faces.LIP_INNER[0], 1] < f.landmarks[faces.CHIN, 1]


@pytest.mark.parametrize("where", ["top-left", "bottom-right"])
def test_a_face_in_a_corner_is_cropped_centred(where):
  canvas = face_media.background(700, 900)
  center = (120, 120) if where == "top-left" else (790, 590)
  img = face_media.paste(canvas, face_media.head(), center)
  crop, face, box = faces.crop_portrait(img, size=256)
  assert crop.shape == (256, 256, 3) and crop.dtype == np.float32
  # The crop is centred on the face, not on the photo.
  assert np.hypot(box[0] - center[0], box[1] - center[1]) < 40
  eyes, size = _eyes_and_size((crop * 255).round().astype(np.uint8))
  assert abs(eyes[0] - 128) < 256 * 0.06
  assert abs((128 - eyes[1]) / 256 - faces.CROP_CENTER_BELOW_EYES) < 0.05
  assert abs(256 / size - faces.CROP_SCALE) < 0.15


def test_two_faces_largest_by_default_face_index_from_the_left():
  canvas = face_media.background(400, 800)
  img = face_media.paste(canvas, face_media.head(), (200, 200), 0.8)
  img = face_media.paste(img, face_media.head(), (600, 200), 1.2)
  found = faces.find_faces(img)
  assert len(found) == 2
  assert found[0].box[0] > 400            # largest first: the right, bigger one
  _, f, _ = faces.crop_portrait(img)
  assert f.box[0] > 400
  _, f, _ = faces.crop_portrait(img, face_index=0)
  assert f.box[2] < 400
  with pytest.raises(UserError, match=r"--face-index 2 is out of range; 2 face\(s\) found"):
    faces.crop_portrait(img, face_index=2)


def test_no_face_is_a_clear_error():
  with pytest.raises(UserError, match="no face found"):
    faces.crop_portrait(face_media.background(300, 400))


def test_synthetic_heads_are_found_and_framed_as_the_corpus_frames_them():
  """CROP_SCALE frames a face the way the corpus frames its heads: re-cropping a corpus frame
  around its head changes its framing little."""
  portrait = (media.load_image(jobs.DEMO_IMAGE) * 255).round().astype(np.uint8)
  ratios = []
  for img in [portrait] + [synthetic.make_clip(i, 1, 1, 256)["frames"][0] for i in (3, 50, 120)]:
    found = faces.find_faces(img)
    assert len(found) == 1
    box = faces.crop_box(found[0].landmarks)
    ratios.append(box[2] / img.shape[0])
    assert abs(box[0] - img.shape[1] / 2) < 0.12 * img.shape[1]
  assert 0.75 < np.median(ratios) < 1.25, ratios


def test_tracked_video_crop_keeps_the_face_centred_and_steady():
  frames, _ = face_media.moving_head_frames(30, fps=25.0)
  crops = faces.crop_video(frames, 25.0, size=128)
  assert crops.shape == (30, 128, 128, 3)
  eyes = np.array([_eyes_and_size(c)[0] for c in crops[::3]])
  assert np.abs(eyes[:, 0] - 64).max() < 128 * 0.08
  # The head moves ~40 px and zooms 12% in the source; in the crop it stays within a few pixels.
  assert eyes.std(0).max() < 3.0


def test_jobs_load_crops_the_portrait_and_refuses_a_faceless_one(tmp_path, capsys):
  img = face_media.paste(face_media.background(500, 700), face_media.head(), (560, 380))
  path = str(tmp_path / "corner.png")
  media.save_image(path, img.astype(np.float32) / 255)
  job = jobs.Job(portrait=path, audio=None, out=str(tmp_path / "o.mp4"))
  portrait = jobs.load(job, sample_rate=16000, max_seconds=10).portrait
  assert portrait.shape[0] == portrait.shape[1] and portrait.shape[0] < 500
  eyes, _ = _eyes_and_size((portrait * 255).round().astype(np.uint8))
  assert abs(eyes[0] / portrait.shape[1] - 0.5) < 0.06
  # --crop none: the central square, as before.
  plain = jobs.load(job, sample_rate=16000, max_seconds=10, crop="none").portrait
  assert plain.shape == (500, 700, 3)
  with pytest.raises(UserError, match="does not go with --crop none"):
    jobs.load(job, sample_rate=16000, max_seconds=10, crop="none", face_index=0)
  # The bundled synthetic portrait is already a corpus frame: not re-cropped by default.
  demo = jobs.Job(portrait=jobs.DEMO_IMAGE, audio=None, out=str(tmp_path / "d.mp4"))
  assert jobs.load(demo, sample_rate=16000, max_seconds=10).portrait.shape == (256, 256, 3)
  faceless = str(tmp_path / "wall.png")
  media.save_image(faceless, face_media.background(300, 300).astype(np.float32) / 255)
  with pytest.raises(UserError, match=r"image '.*wall.png': no face found.*--crop none"):
    jobs.load(jobs.Job(portrait=faceless, audio=None, out=str(tmp_path / "w.mp4")), sample_rate=16000,
              max_seconds=10)


def test_without_the_extra_sample_falls_back_to_the_central_square(tmp_path, monkeypatch, capsys):
  monkeypatch.setattr(faces, "available", lambda: False)
  path = str(tmp_path / "wide.png")
  media.save_image(path, face_media.paste(face_media.background(300, 500), face_media.head(), (100, 150))
                   .astype(np.float32) / 255)
  inputs = jobs.load(jobs.Job(portrait=path, audio=None, out=str(tmp_path / "o.mp4")), sample_rate=16000,
                     max_seconds=10)
  assert inputs.portrait.shape == (300, 500, 3)
  assert "no face detector installed (pip install 'vasa_jax[faces]')" in capsys.readouterr().err


def test_media_check_reports_and_saves_the_crop(tmp_path):
  path = str(tmp_path / "astronaut.png")
  media.save_image(path, face_media.astronaut().astype(np.float32) / 255)
  out = str(tmp_path / "crop.png")
  r = subprocess.run([sys.executable, "-m", "vasa_jax.media", "--image", path, "--save-crop", out],
                     capture_output=True, text=True, cwd=os.path.dirname(os.path.dirname(__file__)))
  assert r.returncode == 0, r.stderr
  assert "1 face(s); the model sees a" in r.stdout
  crop = media.load_image(out)
  assert crop.shape[0] == crop.shape[1] and 150 < crop.shape[0] < 260
  r = subprocess.run([sys.executable, "-m", "vasa_jax.media", "--image", path, "--face-index", "1"],
                     capture_output=True, text=True, cwd=os.path.dirname(os.path.dirname(__file__)))
  assert r.returncode == 2 and r.stderr.strip().splitlines()[-1].startswith("error: image ")
  assert "--face-index 1 is out of range" in r.stderr
