"""Procedural 3D heads: identities from an integer id, ray-cast per pixel.

A head is a union of analytic ellipsoids (skull, jaw, nose, ears, eyeballs,
hair volumes, earrings) plus a neck and shoulders. Every pixel casts a
perspective ray; the nearest hit wins (so the nose really occludes the far
cheek on a turn) and is shaded with Lambert + ambient + Blinn specular. Facial
features (lips, mouth interior, teeth, tongue, brows, eyelids, iris, pupil,
glasses) are painted as functions of the hit point's head-local 3D coordinates,
so they move and foreshorten with the head.

Coordinates. Camera at the origin looking down -z; x right, y up (image right
and image up). Head-local axes coincide with the camera's at zero pose: the face
points to +z, toward the viewer. Units are head units (skull half-height ~1).

Sign conventions of the motion labels (see `synthetic.py` for their ranges):
  yaw > 0    the face turns to the viewer's LEFT (the nose moves left in the image)
  pitch > 0  the face tilts UP (the nose moves up in the image)
  roll > 0   the head tilts counter-clockwise in the image (top of head moves left)
  tx > 0     the head moves right; ty > 0 moves it up (units: half image width)
  distance   camera distance relative to the default; < 1 is closer (bigger head,
             stronger perspective)
  (head-local -> camera rotation R = Rz(roll) @ Rx(-pitch) @ Ry(-yaw), the same
  matrix as `vasa_jax.models.warp.rotation_matrix`)
  gaze_theta > 0 the eyes look to the viewer's left; gaze_phi > 0 they look up;
             both are angles in the head's own frame (0, 0 looks along the face)
  blink      0 open .. 1 closed; brow, smile in [-1, 1]; mouth_* in [0, 1]
"""

import dataclasses
import functools

import numpy as np

# Camera: distance for `distance == 1` and tan of half the field of view. The
# field of view is fixed, so a closer camera gives a bigger head and stronger
# perspective, like a real lens.
CAM_DIST = 4.5
TAN_HALF_FOV = 0.36
HEAD_Y = 0.12  # head centre sits a little above the image centre (room for shoulders)

_SKIN_PALETTE = np.array([
    [0.98, 0.84, 0.74], [0.93, 0.75, 0.62], [0.85, 0.64, 0.49], [0.74, 0.52, 0.36],
    [0.60, 0.40, 0.26], [0.45, 0.29, 0.18], [0.32, 0.20, 0.13]], np.float32)
_HAIR_COLOURS = np.array([
    [0.04, 0.03, 0.03], [0.16, 0.10, 0.06], [0.33, 0.20, 0.10], [0.55, 0.38, 0.20],
    [0.86, 0.72, 0.42], [0.58, 0.22, 0.08], [0.62, 0.61, 0.60], [0.90, 0.90, 0.88],
    [0.20, 0.25, 0.60], [0.75, 0.30, 0.55]], np.float32)
_HAIR_P = np.array([18, 20, 16, 10, 10, 7, 7, 4, 4, 4], np.float64)
_EYE_COLOURS = np.array([
    [0.25, 0.13, 0.05], [0.12, 0.07, 0.03], [0.25, 0.45, 0.75], [0.25, 0.50, 0.30],
    [0.45, 0.35, 0.15], [0.45, 0.50, 0.55]], np.float32)
HAIR_STYLES = ("bald", "short", "medium", "long")
_NO_HIT = np.float32(np.inf)


@dataclasses.dataclass(frozen=True)
class Identity:
  """Appearance of one synthetic person (all lengths in head units)."""
  identity_id: int
  skull_r: tuple      # skull ellipsoid radii (x, y, z)
  jaw_w: float        # jaw ellipsoid half-width
  jaw_len: float      # jaw ellipsoid half-height
  skin: tuple
  hair: tuple
  hair_style: int     # index into HAIR_STYLES
  hairline: float     # forehead hairline height (y)
  hair_volume: float  # how far the hair stands out from the skull
  eye_colour: tuple
  eye_sep: float      # half distance between eye centres
  eye_y: float
  eye_r: float
  iris: float         # iris angular radius (radians) on the eye sphere
  nose_size: float
  nose_len: float
  mouth_w: float
  mouth_y: float
  lip_th: float
  lip_colour: tuple
  brow_th: float
  brow_arch: float
  ear_size: float
  glasses: bool
  glasses_colour: tuple
  glasses_r: float
  earrings: bool
  earring_colour: tuple
  shirt: tuple
  bg0: tuple
  bg1: tuple
  bg_angle: float
  blush: float


def _hsv(h, s, v):
  k = (np.array([5.0, 3.0, 1.0]) + h * 6.0) % 6.0
  return tuple(float(x) for x in v - v * s * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0))


def identity_params(identity_id: int) -> Identity:
  """Deterministic appearance for an integer identity id."""
  rng = np.random.default_rng(np.random.SeedSequence([int(identity_id), 0x1D5EED]))
  u = rng.uniform
  t = u(0, len(_SKIN_PALETTE) - 1)
  i = int(t)
  skin = _SKIN_PALETTE[i] * (1 - (t - i)) + _SKIN_PALETTE[min(i + 1, len(_SKIN_PALETTE) - 1)] * (t - i)
  skin = np.clip(skin * u(0.95, 1.05, 3), 0, 1)
  hair = _HAIR_COLOURS[rng.choice(len(_HAIR_COLOURS), p=_HAIR_P / _HAIR_P.sum())]
  hair = np.clip(hair * u(0.85, 1.15, 3), 0, 1)
  style = int(rng.choice(4, p=[0.12, 0.33, 0.3, 0.25]))
  lip = np.clip(skin * np.array([0.9, 0.5, 0.52]) * u(0.8, 1.0) + np.array([0.12, 0.0, 0.03]), 0, 1)
  bg_h = u(0, 1)
  return Identity(
      identity_id=int(identity_id),
      skull_r=(u(0.68, 0.8), u(0.92, 1.0), u(0.84, 0.92)),
      jaw_w=u(0.5, 0.66), jaw_len=u(0.62, 0.76),
      skin=tuple(float(x) for x in skin), hair=tuple(float(x) for x in hair),
      hair_style=style, hairline=u(0.42, 0.62), hair_volume=u(0.03, 0.1),
      eye_colour=tuple(float(x) for x in _EYE_COLOURS[rng.integers(len(_EYE_COLOURS))]),
      eye_sep=u(0.25, 0.33), eye_y=u(0.08, 0.17), eye_r=u(0.11, 0.135), iris=u(0.42, 0.52),
      nose_size=u(0.8, 1.25), nose_len=u(0.85, 1.2),
      mouth_w=u(0.17, 0.25), mouth_y=u(-0.5, -0.42), lip_th=u(0.035, 0.06),
      lip_colour=tuple(float(x) for x in lip),
      brow_th=u(0.025, 0.055), brow_arch=u(0.0, 0.05), ear_size=u(0.85, 1.2),
      glasses=bool(u() < 0.25), glasses_colour=_hsv(u(), u(0, 0.6), u(0.05, 0.35)),
      glasses_r=u(0.15, 0.2),
      earrings=bool(u() < 0.2), earring_colour=((0.95, 0.78, 0.3) if u() < 0.6 else (0.85, 0.86, 0.9)),
      shirt=_hsv(u(), u(0.2, 0.8), u(0.25, 0.9)),
      bg0=_hsv(bg_h, u(0.05, 0.5), u(0.35, 0.95)), bg1=_hsv((bg_h + u(-0.15, 0.15)) % 1, u(0.05, 0.5), u(0.2, 0.8)),
      bg_angle=u(0, 2 * np.pi), blush=u(0.0, 0.12))


# --------------------------------------------------------------------------------------
# Geometry


def rotation(yaw, pitch, roll) -> np.ndarray:
  """Head-local -> camera rotation for the sign conventions in the module docstring."""
  cy, sy = np.cos(-yaw), np.sin(-yaw)
  cp, sp = np.cos(-pitch), np.sin(-pitch)
  cr, sr = np.cos(roll), np.sin(roll)
  ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
  rx = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
  rz = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
  return rz @ rx @ ry  # same order as vasa_jax.models.warp.rotation_matrix


def head_center(tx, ty, distance) -> np.ndarray:
  """Camera-space head centre; (tx, ty) is where it projects, in half-image units."""
  d = CAM_DIST * distance
  return np.array([tx * d * TAN_HALF_FOV, (ty + HEAD_Y / (CAM_DIST * TAN_HALF_FOV)) * d * TAN_HALF_FOV, -d])


def project(point_cam) -> np.ndarray:
  """Camera-space point -> normalised image coords (u right, v down) in [-1, 1]."""
  p = np.asarray(point_cam, np.float64)
  return np.stack([p[..., 0] / (-p[..., 2] * TAN_HALF_FOV), -p[..., 1] / (-p[..., 2] * TAN_HALF_FOV)], -1)


def _skin_surface_z(ident, x, y):
  """Front surface depth of the skull/jaw union at head-local (x, y) (for placing eyes)."""
  z = -np.inf
  for c, r in (_skull(ident), _jaw(ident, 0.0)):
    q = 1 - ((x - c[0]) / r[0]) ** 2 - ((y - c[1]) / r[1]) ** 2
    if q > 0:
      z = max(z, c[2] + r[2] * np.sqrt(q))
  return z


def _skull(ident):
  return np.array([0.0, 0.1, -0.05]), np.array(ident.skull_r)


def _jaw(ident, mouth_open):
  # The jaw drops a little with the mouth so the chin moves like a real one.
  return np.array([0.0, -0.3 - 0.07 * mouth_open, 0.1]), np.array([ident.jaw_w, ident.jaw_len, 0.74])


@functools.lru_cache(maxsize=256)
def _static_parts(ident: Identity):
  """Primitives that do not move with the face: (name, centre, radii) in head-local units."""
  parts = []
  sk_c, sk_r = _skull(ident)
  parts.append(("nose", np.array([0.0, -0.12 - 0.04 * (ident.nose_len - 1), 0.86]),
                np.array([0.085 * ident.nose_size, 0.19 * ident.nose_len, 0.16 * ident.nose_size])))
  ex = sk_r[0] * 0.97
  for s in (-1, 1):
    parts.append(("ear", np.array([s * ex, 0.02, -0.08]), np.array([0.08, 0.19, 0.13]) * ident.ear_size))
  for s in (-1, 1):
    x = s * ident.eye_sep
    z = _skin_surface_z(ident, x, ident.eye_y) - 0.5 * ident.eye_r
    parts.append(("eye", np.array([x, ident.eye_y, z]), np.full(3, ident.eye_r)))
  if ident.earrings:
    for s in (-1, 1):
      parts.append(("earring", np.array([s * (ex + 0.02), -0.24 * ident.ear_size, -0.06]), np.full(3, 0.045)))
  style = HAIR_STYLES[ident.hair_style]
  v = ident.hair_volume
  if style != "bald":
    # The cap sits behind the face front, so it only shows on top, at the sides and back.
    back = {"short": 0.1, "medium": 0.08, "long": 0.07}[style]
    parts.append(("hair", np.array([0.0, 0.17, sk_c[2] - back]),
                  np.array([sk_r[0] + v, sk_r[1] + v + 0.02, sk_r[2] + 0.02])))
  if style == "long":
    # Kept behind the neck so a nod never swings it in front of the chin.
    parts.append(("hair", np.array([0.0, -0.4, -0.45]), np.array([sk_r[0] + v + 0.08, 0.95, 0.45])))
  if style == "medium":
    parts.append(("hair", np.array([0.0, -0.05, -0.25]), np.array([sk_r[0] + v + 0.03, 0.75, 0.62])))
  return tuple(parts)


_BODY = (("neck", np.array([0.0, -1.0, -0.15]), np.array([0.4, 0.65, 0.38])),
         ("shirt", np.array([0.0, -1.95, -0.3]), np.array([1.45, 0.62, 0.7])))


def _rowdot(a_Nx3, v):
  # Elementwise rather than BLAS: results must not depend on how pixels are
  # chunked or on BLAS threading, so equal seeds give equal bytes everywhere.
  return a_Nx3[:, 0] * v[0] + a_Nx3[:, 1] * v[1] + a_Nx3[:, 2] * v[2]


def _ray_ellipsoid(o, d_Nx3, c, r):
  """Nearest positive hit distance of rays o + t d with an axis-aligned ellipsoid (inf on miss)."""
  oc = ((o - c) / r).astype(np.float32)
  dd = d_Nx3 * (1.0 / r).astype(np.float32)
  a = np.einsum("ij,ij->i", dd, dd)
  b = _rowdot(dd, oc)
  cc = np.float32(oc @ oc - 1.0)
  disc = b * b - a * cc
  hit = disc > 0
  t = np.full(len(a), _NO_HIT, np.float32)
  sq = np.sqrt(disc[hit])
  t0 = (-b[hit] - sq) / a[hit]
  t[hit] = np.where(t0 > 0, t0, _NO_HIT)
  return t


@functools.lru_cache(maxsize=8)
def _pixel_rays(res: int) -> np.ndarray:
  """Un-normalised camera-space ray directions for a res x res image, [res*res, 3]."""
  s = (np.arange(res, dtype=np.float32) + 0.5) / res * 2 - 1
  u, v = np.meshgrid(s, -s)
  d = np.stack([u * TAN_HALF_FOV, v * TAN_HALF_FOV, -np.ones_like(u)], -1).reshape(-1, 3)
  d.setflags(write=False)
  return d


@functools.lru_cache(maxsize=256)
def _background(ident: Identity, res: int) -> np.ndarray:
  s = (np.arange(res, dtype=np.float32) + 0.5) / res * 2 - 1
  u, v = np.meshgrid(s, s)
  w = np.clip(0.5 + 0.35 * (u * np.cos(ident.bg_angle) + v * np.sin(ident.bg_angle)), 0, 1)[..., None]
  img = np.array(ident.bg0, np.float32) * (1 - w) + np.array(ident.bg1, np.float32) * w
  img *= (1 - 0.18 * (u * u + v * v))[..., None]  # soft vignette
  img = img.reshape(-1, 3).astype(np.float32)
  img.setflags(write=False)
  return img


# --------------------------------------------------------------------------------------
# Painting: colours as functions of head-local hit points


def _smooth(edge_dist, soft):
  """0..1 coverage from a signed distance (positive inside), anti-aliased over `soft`."""
  return np.clip(0.5 + edge_dist / soft, 0.0, 1.0)


def _mix(col, paint, alpha):
  col += (np.asarray(paint, np.float32) - col) * alpha[:, None]


def _paint_face(ident, m, p, col, soft):
  """Skin surfaces: mouth, lips, brows, blush, glasses. p: head-local points [n, 3]."""
  x, y, z = p[:, 0], p[:, 1], p[:, 2]
  front = _smooth(z - 0.15, 0.1)
  # Mouth: an ellipse whose size follows open/width/round; smile bends the centre line.
  o, wd, rd, sm = m["mouth_open"], m["mouth_width"], m["mouth_round"], m["smile"]
  half_w = ident.mouth_w * (1.0 + 0.3 * wd - 0.38 * rd + 0.12 * max(sm, 0.0))
  half_h = 0.004 + 0.12 * o * (1.0 + 0.25 * rd)
  my = ident.mouth_y - 0.045 * o
  xn = x / half_w
  yc = my + 0.07 * sm * xn * xn - 0.01 * sm
  inner = 1 - xn * xn - ((y - yc) / half_h) ** 2
  inner_d = inner * min(half_w, half_h) * 0.5
  lip_up = ident.lip_th * (1 + 0.6 * rd)
  lip_lo = ident.lip_th * (1.25 + 0.6 * rd)
  dy = y - yc
  outer_h = np.where(dy > 0, half_h + lip_up, half_h + lip_lo)
  xo = x / (half_w + 0.025)
  outer_d = (1 - xo * xo - (dy / outer_h) ** 2) * 0.5 * lip_up
  # A cupid's-bow dip in the upper lip for a more face-like mouth.
  outer_d -= np.where(dy > 0, 0.012 * np.exp(-(x / 0.03) ** 2), 0.0)
  a_lip = _smooth(outer_d, soft) * front
  _mix(col, ident.lip_colour, a_lip)
  a_in = _smooth(inner_d, soft) * front
  if o > 0.02:
    top = yc + half_h * np.sqrt(np.clip(1 - xn * xn, 0, 1))
    bottom = yc - half_h * np.sqrt(np.clip(1 - xn * xn, 0, 1))
    interior = np.zeros_like(col) + np.array([0.16, 0.03, 0.04], np.float32)
    teeth = (_smooth(y - (top - 0.028), soft) * _smooth(0.8 - np.abs(xn), 0.1))[:, None]
    interior = interior * (1 - teeth) + np.array([0.9, 0.88, 0.82], np.float32) * teeth
    tongue = _smooth(bottom + (0.02 + 0.15 * half_h) * (1 - xn * xn) - y, soft) * _smooth(half_h - 0.05, 0.02)
    interior = interior * (1 - tongue[:, None]) + np.array([0.62, 0.22, 0.24], np.float32) * tongue[:, None]
    col += (interior - col) * a_in[:, None]
  else:
    _mix(col, (0.2, 0.06, 0.06), _smooth(soft * 0.7 - np.abs(dy), soft) * (np.abs(xn) < 1) * front)
  # Brows: arched bands above the eyes that move with `brow`.
  by0 = ident.eye_y + ident.eye_r + 0.07 + 0.07 * m["brow"]
  for s in (-1, 1):
    bx = x - s * ident.eye_sep
    xt = bx / 0.19
    by = by0 + ident.brow_arch * (1 - xt * xt) - 0.02 * s * xt * min(m["brow"], 0) * 2
    th = ident.brow_th * (1 - 0.5 * np.clip(s * xt, 0, 1))
    d = np.minimum(th * 0.5 - np.abs(y - by), (1 - np.abs(xt)) * 0.19)
    _mix(col, np.array(ident.hair) * 0.7, _smooth(d, soft) * front)
  # Cheek blush.
  for s in (-1, 1):
    r2 = ((x - s * (ident.eye_sep + 0.05)) / 0.14) ** 2 + ((y - ident.eye_y + 0.28) / 0.1) ** 2
    _mix(col, (0.85, 0.35, 0.35), ident.blush * (1 + 0.8 * max(sm, 0)) * np.exp(-r2) * front)
  _paint_glasses(ident, p, col, soft)


def _paint_glasses(ident, p, col, soft):
  if not ident.glasses:
    return
  x, y, z = p[:, 0], p[:, 1], p[:, 2]
  front = _smooth(z - 0.2, 0.05)
  th = 0.028
  d = np.full(len(x), -1.0, np.float32)
  for s in (-1, 1):
    rho = np.sqrt((x - s * ident.eye_sep) ** 2 + ((y - ident.eye_y + 0.01) / 0.8) ** 2)
    d = np.maximum(d, th * 0.5 - np.abs(rho - ident.glasses_r))
  inner_x = ident.eye_sep - ident.glasses_r
  bridge = np.minimum(0.012 - np.abs(y - ident.eye_y - 0.03), inner_x + 0.01 - np.abs(x))
  d = np.maximum(d, bridge * front)
  arm = np.minimum(0.012 - np.abs(y - ident.eye_y - 0.03), np.abs(x) - (ident.eye_sep + ident.glasses_r - 0.01))
  arm = np.minimum(arm, z + 0.2)
  alpha = np.maximum(_smooth(d, soft) * front, _smooth(arm, soft))
  _mix(col, ident.glasses_colour, alpha)


def _paint_eye(ident, m, p, centre, col, soft):
  """Eyeball: white, iris, pupil toward the gaze; eyelids close with `blink`."""
  q = (p - centre) / ident.eye_r
  th, ph = m["gaze_theta"], m["gaze_phi"]
  g = np.array([-np.sin(th) * np.cos(ph), np.sin(ph), np.cos(th) * np.cos(ph)], np.float32)
  ang = np.arccos(np.clip(_rowdot(q, g), -1, 1))
  asoft = soft / ident.eye_r
  white = np.array([0.93, 0.91, 0.88], np.float32)
  base = np.zeros_like(col) + white * (0.85 + 0.15 * q[:, 2:3])
  iris = _smooth(ident.iris - ang, asoft)
  ring = np.clip((ang / ident.iris) ** 4, 0, 1)  # darker limbal ring at the iris edge
  iris_col = np.array(ident.eye_colour, np.float32) * (1.1 - 0.5 * ring[:, None])
  base += (iris_col - base) * iris[:, None]
  pupil = _smooth(0.42 * ident.iris - ang, asoft)
  base += (np.array([0.02, 0.02, 0.02], np.float32) - base) * pupil[:, None]
  # Lids: an almond opening between a lower and an upper curve; blink drives the
  # upper lid down to the lower one, so blink == 1 leaves no eyeball visible.
  xq, yq = q[:, 0], q[:, 1]
  lower = -0.42 + 0.2 * xq * xq + 0.12 * max(m["smile"], 0.0)
  upper_open = 0.6 - 0.35 * xq * xq + 0.08 * m["brow"]
  upper = lower + (upper_open - lower) * (1 - float(np.clip(m["blink"], 0, 1)))
  inside = np.minimum(upper - yq, yq - lower) * ident.eye_r
  a_open = _smooth(inside, soft) if m["blink"] < 0.999 else np.zeros_like(inside)
  lid = np.array(ident.skin, np.float32) * 0.9
  out = np.zeros_like(col) + lid
  out += (base - out) * a_open[:, None]
  lash = _smooth(0.035 * ident.eye_r + soft * 0.5 - np.abs(yq - upper) * ident.eye_r, soft)
  lash *= (np.abs(xq) < 0.95)
  out += (np.array([0.05, 0.03, 0.03], np.float32) - out) * (lash * 0.9)[:, None]
  col[:] = out
  _paint_glasses(ident, p, col, soft)


def _hair_on_skull(ident, p, soft):
  """Coverage of painted hair on the skull: above the hairline and at the back."""
  if HAIR_STYLES[ident.hair_style] == "bald":
    x, y, z = p[:, 0], p[:, 1], p[:, 2]
    return 0.35 * _smooth(-z - 0.1 + 0.2 * np.abs(y), 0.05) * _smooth(0.3 - y, 0.1)
  x, y, z = p[:, 0], p[:, 1], p[:, 2]
  zf = np.clip(z / 0.8, 0, 1)
  line = ident.hairline * zf + (0.2 + 0.1 * np.abs(x)) * (1 - zf)
  line += 0.08 * (np.abs(x) / 0.5) ** 2 * zf  # receding temples
  return _smooth(y - line, soft)


_CHUNK = 1 << 14  # pixels per pass: keeps the per-pixel temporaries in cache at 512^2


def render_frame(ident: Identity, m: dict, res: int) -> np.ndarray:
  """One frame, uint8 [res, res, 3]; m maps label names to floats."""
  rays_all, bg = _pixel_rays(res), _background(ident, res)
  col = np.concatenate([_render_pixels(ident, m, res, rays_all[i:i + _CHUNK], bg[i:i + _CHUNK])
                        for i in range(0, len(rays_all), _CHUNK)])
  img = np.clip(col, 0.0, 1.0) ** (1 / 1.15)
  return (img.reshape(res, res, 3) * 255 + 0.5).astype(np.uint8)


def _render_pixels(ident, m, res, rays, bg):
  """Linear RGB [n, 3] of the pixels whose camera rays are `rays` [n, 3]."""
  n_pix = len(rays)
  col = bg.copy()
  rot = rotation(m["yaw"], m["pitch"], m["roll"]).astype(np.float32)
  centre = head_center(m["tx"], m["ty"], m["distance"])
  dist = float(-centre[2])
  soft = 1.2 * 2 * dist * TAN_HALF_FOV / res  # one pixel, in head units, at head depth
  light_cam = np.array([-0.45, 0.55, 0.7], np.float32)
  light_cam /= np.linalg.norm(light_cam)

  # Head: rays in head-local coords, limited to a bounding sphere around the head.
  o_h = (rot.T @ (-centre)).astype(np.float32)
  d_h = sum(rays[:, i:i + 1] * rot[i] for i in range(3))  # == (R^T d) per row
  t_b = _ray_ellipsoid(o_h, d_h, np.array([0.0, -0.3, -0.1]), np.full(3, 1.85))
  sub = np.nonzero(np.isfinite(t_b))[0]
  parts = [("skull",) + _skull(ident), ("jaw",) + _jaw(ident, m["mouth_open"])]
  parts += list(_static_parts(ident))
  d_sub = d_h[sub]
  ts = np.stack([_ray_ellipsoid(o_h, d_sub, c, r) for _, c, r in parts])
  best = np.argmin(ts, 0)
  t_head = ts[best, np.arange(len(sub))]

  # Body (no rotation: the head turns on the neck).
  o_b = (-centre).astype(np.float32)
  tb = np.stack([_ray_ellipsoid(o_b, rays, c, r) for _, c, r in _BODY])
  best_b = np.argmin(tb, 0)
  t_body = tb[best_b, np.arange(n_pix)]

  head_wins = t_head < t_body[sub]
  # Body pixels first; head pixels overwrite them.
  for k, (name, c, r) in enumerate(_BODY):
    idx = np.nonzero((best_b == k) & np.isfinite(t_body))[0]
    idx = np.setdiff1d(idx, sub[head_wins], assume_unique=True)
    if len(idx) == 0:
      continue
    pt = o_b + t_body[idx, None] * rays[idx]
    nrm = (pt - c) / (r * r)
    base = ident.skin if name == "neck" else ident.shirt
    if name == "neck":
      shade_under_chin = _smooth(pt[:, 1] + 0.75 + 0.0 * pt[:, 0], 0.25)
      base = np.array(ident.skin, np.float32) * (0.55 + 0.45 * (1 - shade_under_chin))[:, None]
    col[idx] = _shade(base, nrm, light_cam, rays[idx], 0.05, 8.0)

  light_h = rot.T @ light_cam
  for k, (name, c, r) in enumerate(parts):
    sel = np.nonzero((best == k) & head_wins & np.isfinite(t_head))[0]
    if len(sel) == 0:
      continue
    idx = sub[sel]
    dd = d_sub[sel]
    pt = o_h + t_head[sel, None] * dd
    nrm = (pt - c) / (r * r)
    if name in ("skull", "jaw"):
      nrm = _blend_normal(parts, k, pt, nrm)
    spec, shin = 0.12, 20.0
    if name in ("skull", "jaw", "nose", "ear"):
      base = np.zeros((len(sel), 3), np.float32) + np.array(ident.skin, np.float32)
      if name == "nose":
        qn = (pt - c) / r
        nostril = np.minimum(-0.45 - qn[:, 1], 0.25 - np.abs(np.abs(qn[:, 0]) - 0.45))
        _mix(base, np.array(ident.skin) * 0.35, _smooth(nostril * r[0], soft * 0.7) * (qn[:, 2] > -0.2))
      if name in ("skull", "jaw"):
        _paint_face(ident, m, pt, base, soft)
      if name == "skull":
        hair_a = _hair_on_skull(ident, pt, soft)
        _mix(base, _hair_tex(ident, pt), hair_a)
        spec = 0.12 * (1 - hair_a)  # hair is matte
      if name == "ear":
        _mix(base, np.array(ident.skin) * 0.75, _smooth(0.3 - np.abs((pt[:, 2] - c[2]) / r[2]), 0.1))
    elif name == "eye":
      base = np.zeros((len(sel), 3), np.float32)
      _paint_eye(ident, m, pt, c, base, soft)
      spec, shin = 0.6, 60.0
    elif name == "hair":
      base = _hair_tex(ident, pt)
      spec, shin = 0.18, 12.0
    else:  # earring
      base = np.zeros((len(sel), 3), np.float32) + np.array(ident.earring_colour, np.float32)
      spec, shin = 0.9, 40.0
    col[idx] = _shade(base, nrm, light_h, dd, spec, shin)
  return col


def _blend_normal(parts, k, pt, nrm):
  """Blends skull and jaw normals near their seam so the union reads as one smooth face."""
  other = 1 - k  # skull is part 0, jaw part 1
  _, c, r = parts[other]
  q = (pt - c) / r
  f = np.einsum("ij,ij->i", q, q) - 1.0  # > 0 outside the other ellipsoid
  w = np.exp(-np.maximum(f, 0.0) / 0.12)[:, None] * 0.5
  n_self = nrm / np.linalg.norm(nrm, axis=1, keepdims=True)
  n_other = (pt - c) / (r * r)
  n_other /= np.linalg.norm(n_other, axis=1, keepdims=True)
  return n_self * (1 - w) + n_other * w


def _hair_tex(ident, p):
  """Hair colour with strand-like streaks that follow the head's meridians."""
  ang = np.arctan2(p[:, 0], p[:, 2] + 0.3)
  streak = 0.88 + 0.12 * np.sin(ang * 37.0 + 3.0 * np.sin(p[:, 1] * 5.0))
  return np.array(ident.hair, np.float32) * streak[:, None].astype(np.float32)


def _shade(base, nrm, light, ray_d, spec, shininess):
  """Lambert + ambient + Blinn-Phong specular; all vectors in one frame."""
  n = nrm / np.linalg.norm(nrm, axis=1, keepdims=True)
  v = -ray_d / np.linalg.norm(ray_d, axis=1, keepdims=True)
  lam = np.clip(_rowdot(n, light), 0.0, 1.0)
  h = v + light
  h /= np.linalg.norm(h, axis=1, keepdims=True)
  sp = spec * np.clip(np.einsum("ij,ij->i", n, h), 0, 1) ** shininess
  rim = 0.08 * np.clip(1 - np.einsum("ij,ij->i", n, v), 0, 1) ** 2  # fill light from behind
  return (base * (0.38 + 0.72 * lam + rim)[:, None] + sp[:, None]).astype(np.float32)


def render_frames(ident: Identity, labels: dict, resolution: int) -> np.ndarray:
  """Render every frame of a motion; labels: {name: [T]} -> uint8 [T, res, res, 3]."""
  num = len(labels["yaw"])
  out = np.empty((num, resolution, resolution, 3), np.uint8)
  for t in range(num):
    out[t] = render_frame(ident, {k: float(v[t]) for k, v in labels.items()}, resolution)
  return out
