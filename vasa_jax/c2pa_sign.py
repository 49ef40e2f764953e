"""Optional C2PA manifest on a finished mp4, signed with the user's own certificate.

Needs the `c2pa` extra (`pip install 'vasa_jax[c2pa]'`, which brings c2pa-python
and cryptography). The manifest states that the video was made by a trained
model (IPTC digital source type `trainedAlgorithmicMedia`) and carries the
watermark payload and checkpoint hash. Without a `tsa_url` no timestamp
authority is contacted, so signing works offline; the signature is then only
valid while the certificate is.
"""

import dataclasses
import os
import shutil
import tempfile

from vasa_jax import interrupt, media, provenance
from vasa_jax.errors import UserError

AI_SOURCE_TYPE = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
ASSERTION_LABEL = "org.vasa_jax.provenance"
_CERT_ACCEPTED = "a PEM certificate chain, signing certificate first"
_KEY_ACCEPTED = "an unencrypted PEM private key (EC P-256/P-384/P-521, RSA or Ed25519)"
_CURVE_ALGS = {"secp256r1": "es256", "secp384r1": "es384", "secp521r1": "es512"}


@dataclasses.dataclass(frozen=True)
class Credentials:
  """A checked certificate chain and key, normalised to PEM, and the C2PA algorithm they sign with."""
  alg: str
  cert_chain_pem: bytes
  private_key_pem: bytes


def _import_c2pa():
  try:
    import c2pa
  except ImportError:
    raise UserError("C2PA signing needs c2pa-python: pip install 'vasa_jax[c2pa]'") from None
  return c2pa


def load_credentials(cert_chain_pem_path: str, private_key_pem_path: str) -> Credentials:
  """Reads and checks the chain and key (cheap: call it before generating to fail early)."""
  _import_c2pa()
  from cryptography import x509
  from cryptography.hazmat.primitives import serialization
  from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

  media.require_file(cert_chain_pem_path, "C2PA certificate", _CERT_ACCEPTED)
  media.require_file(private_key_pem_path, "C2PA private key", _KEY_ACCEPTED)
  try:
    with open(cert_chain_pem_path, "rb") as f:
      certs = x509.load_pem_x509_certificates(f.read())
  except (OSError, ValueError) as e:
    raise UserError(f"C2PA certificate {cert_chain_pem_path!r} could not be read ({e}); expected {_CERT_ACCEPTED}")
  try:
    with open(private_key_pem_path, "rb") as f:
      key = serialization.load_pem_private_key(f.read(), password=None)
  except TypeError:  # cryptography's way of saying "this key is encrypted".
    raise UserError(f"C2PA private key {private_key_pem_path!r} is encrypted; expected {_KEY_ACCEPTED}")
  except (OSError, ValueError) as e:
    raise UserError(f"C2PA private key {private_key_pem_path!r} could not be read ({e}); expected {_KEY_ACCEPTED}")
  if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name in _CURVE_ALGS:
    alg = _CURVE_ALGS[key.curve.name]
  elif isinstance(key, rsa.RSAPrivateKey):
    alg = "ps256"  # C2PA allows RSA only with PSS padding.
  elif isinstance(key, ed25519.Ed25519PrivateKey):
    alg = "ed25519"
  else:
    kind = key.curve.name if isinstance(key, ec.EllipticCurvePrivateKey) else type(key).__name__
    raise UserError(f"C2PA private key {private_key_pem_path!r} has unsupported type {kind}; expected {_KEY_ACCEPTED}")
  spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
  if certs[0].public_key().public_bytes(*spki) != key.public_key().public_bytes(*spki):
    raise UserError(f"C2PA private key {private_key_pem_path!r} does not match the signing certificate (the first "
                    f"one) in {cert_chain_pem_path!r}; give the key that belongs to that certificate")
  chain = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)
  key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption())
  return Credentials(alg, chain, key_pem)


def manifest(title: str, *, payload_hex: str | None, checkpoint_hash: str) -> dict:
  """The manifest definition: who made the video, that a trained model made it, and its watermark."""
  data = {"checkpoint_hash": checkpoint_hash, "ai_generated": True, "disclosure": provenance.DISCLOSURE,
          "watermark": "on" if payload_hex else "off (disabled by the user)"}
  if payload_hex:
    data["watermark_payload"] = payload_hex
  return {
      "claim_generator_info": [{"name": provenance.GENERATOR, "version": provenance._version()}],
      "title": title,
      "format": "video/mp4",
      "assertions": [
          {"label": "c2pa.actions",
           "data": {"actions": [{"action": "c2pa.created", "digitalSourceType": AI_SOURCE_TYPE}]}},
          {"label": ASSERTION_LABEL, "data": data},
      ],
  }


def sign_c2pa(mp4_path: str, cert_chain_pem_path: str, private_key_pem_path: str, *,
              payload_hex: str | None, checkpoint_hash: str, tsa_url: str | None = None) -> str:
  """Embeds a signed C2PA manifest into `mp4_path` in place; returns the path.

  `payload_hex` is None for a video made without the watermark. The signed file
  is written beside the original and renamed over it, so on any failure the
  original is untouched and nothing is left behind.
  """
  c2pa = _import_c2pa()
  creds = load_credentials(cert_chain_pem_path, private_key_pem_path)
  media.require_file(mp4_path, "video", "an mp4 written by vasa_jax")
  definition = manifest(os.path.basename(mp4_path), payload_hex=payload_hex, checkpoint_hash=checkpoint_hash)
  fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(mp4_path)}.", suffix=".c2pa-tmp",
                             dir=os.path.dirname(os.path.abspath(mp4_path)))
  with interrupt.removed_on_interrupt(tmp):
    try:
      info = c2pa.C2paSignerInfo(creds.alg, creds.cert_chain_pem, creds.private_key_pem, tsa_url)
      with (c2pa.Signer.from_info(info) as signer, c2pa.Builder(definition) as builder,
            open(mp4_path, "rb") as src, os.fdopen(fd, "w+b") as dst):
        fd = None
        builder.sign(signer, "video/mp4", src, dst)
      shutil.copymode(mp4_path, tmp)  # mkstemp makes the file private; keep the video's own permissions.
      os.replace(tmp, mp4_path)
    except BaseException as e:
      if fd is not None:
        os.close(fd)
      os.unlink(tmp)
      if isinstance(e, c2pa.C2paError):
        raise UserError(f"C2PA signing of {mp4_path!r} with {cert_chain_pem_path!r} failed: {e}; expected a "
                        "signing certificate with digitalSignature key usage and an emailProtection or "
                        "documentSigning extended key usage") from e
      raise
  return mp4_path
