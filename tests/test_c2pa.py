"""C2PA signing: manifest contents round trip, verify's report, bad credentials leave the video untouched.

The chain is a throwaway self-signed root CA plus an ES256 end-entity cert. It is
on no trust list, so c2pa-python 0.38.1 reports the manifest as validation_state
"Valid" (claim signature and BMFF hash check out) with one failure code,
`signingCredential.untrusted` -- never "Trusted".
"""

import datetime
import json
import os
import sys

import numpy as np
import pytest

c2pa = pytest.importorskip("c2pa")

from cryptography import x509  # noqa: E402  (c2pa-python depends on cryptography)
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID  # noqa: E402

from vasa_jax import c2pa_sign, cli, media, provenance, verify  # noqa: E402
from vasa_jax.errors import UserError  # noqa: E402

PAYLOAD = "0123456789abcdef"
CHECKPOINT = "deadbeef" * 8


def _key_usage(**on):
  names = ("digital_signature", "content_commitment", "key_encipherment", "data_encipherment", "key_agreement",
           "key_cert_sign", "crl_sign", "encipher_only", "decipher_only")
  return x509.KeyUsage(**{n: on.get(n, False) for n in names})


def _cert(subject, subject_key, issuer, issuer_key, *, ca):
  now = datetime.datetime.now(datetime.timezone.utc)
  name = lambda cn: x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn),
                               x509.NameAttribute(NameOID.ORGANIZATION_NAME, "vasa_jax test")])
  b = (x509.CertificateBuilder().subject_name(name(subject)).issuer_name(name(issuer))
       .public_key(subject_key.public_key()).serial_number(x509.random_serial_number())
       .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=7))
       .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
       .add_extension(x509.SubjectKeyIdentifier.from_public_key(subject_key.public_key()), critical=False)
       .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False))
  if ca:
    b = b.add_extension(_key_usage(key_cert_sign=True, crl_sign=True), critical=True)
  else:  # What C2PA requires of a signing certificate.
    b = (b.add_extension(_key_usage(digital_signature=True), critical=True)
         .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False))
  return b.sign(issuer_key, hashes.SHA256())


def _pem_key(key):
  return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                           serialization.NoEncryption())


@pytest.fixture(scope="module")
def creds(tmp_path_factory):
  d = tmp_path_factory.mktemp("creds")
  root_key, key, other_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
  root = _cert("test root", root_key, "test root", root_key, ca=True)
  leaf = _cert("test signer", key, "test root", root_key, ca=False)
  (d / "chain.pem").write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in (leaf, root)))
  (d / "key.pem").write_bytes(_pem_key(key))
  (d / "other.pem").write_bytes(_pem_key(other_key))
  (d / "root.pem").write_bytes(root.public_bytes(serialization.Encoding.PEM))
  (d / "root_key.pem").write_bytes(_pem_key(root_key))
  return {n: str(d / f"{n}.pem") for n in ("chain", "key", "other", "root", "root_key")}


@pytest.fixture
def video(tmp_path):
  frames = np.random.default_rng(0).integers(0, 256, (10, 64, 64, 3), dtype=np.uint8)
  audio = (0.3 * np.sin(2 * np.pi * 440 * np.arange(int(0.4 * media.SAMPLE_RATE)) / media.SAMPLE_RATE))
  return media.write_video(str(tmp_path / "talk.mp4"), frames, 25, audio.astype(np.float32))


def test_sign_round_trip_and_verify_report(video, creds, capsys):
  c2pa_sign.sign_c2pa(video, creds["chain"], creds["key"], payload_hex=PAYLOAD, checkpoint_hash=CHECKPOINT)
  assert os.listdir(os.path.dirname(video)) == ["talk.mp4"]  # No temporary file left beside it.
  with c2pa.Reader(video) as reader:
    store = json.loads(reader.json())
  active = store["manifests"][store["active_manifest"]]
  gen = active["claim_generator_info"][0]
  assert (gen["name"], gen["version"]) == ("vasa_jax", provenance._version())
  assertions = {a["label"]: a["data"] for a in active["assertions"]}
  # The library writes claim v2, which stores the actions under the versioned label.
  (action,) = assertions["c2pa.actions.v2"]["actions"]
  assert action == {"action": "c2pa.created", "digitalSourceType": c2pa_sign.AI_SOURCE_TYPE}
  ours = assertions[c2pa_sign.ASSERTION_LABEL]
  assert (ours["watermark_payload"], ours["checkpoint_hash"], ours["ai_generated"]) == (PAYLOAD, CHECKPOINT, True)
  assert active["signature_info"]["alg"].lower() == "es256"
  # Self-signed root: signature and hashes valid, signer not on a trust list.
  assert store["validation_state"] == "Valid"
  assert [s["code"] for s in store["validation_status"]] == ["signingCredential.untrusted"]
  assert len(media.read_video(video)[0]) == 10  # Still a playable mp4 with all its frames.

  assert verify.c2pa_status(video) == (f"manifest by vasa_jax/{provenance._version()}, signature valid "
                                       "(signingCredential.untrusted)")
  cli.run(verify._main, verify._parser(), [video])
  assert f"c2pa: manifest by vasa_jax/{provenance._version()}, signature valid" in capsys.readouterr().out


def test_tampered_video_reports_invalid(video, creds):
  c2pa_sign.sign_c2pa(video, creds["chain"], creds["key"], payload_hex=PAYLOAD, checkpoint_hash=CHECKPOINT)
  data = bytearray(open(video, "rb").read())
  mdat = data.index(b"mdat") + 100  # A byte of the encoded frames: covered by the BMFF hash.
  data[mdat] ^= 0xFF
  open(video, "wb").write(bytes(data))
  assert verify.c2pa_status(video).startswith("manifest by vasa_jax/")
  assert "signature invalid" in verify.c2pa_status(video)


def test_bad_credentials_leave_video_untouched(video, creds, tmp_path):
  original = open(video, "rb").read()
  sign = lambda cert, key: c2pa_sign.sign_c2pa(video, cert, key, payload_hex=PAYLOAD, checkpoint_hash=CHECKPOINT)
  with pytest.raises(UserError, match="does not match the signing certificate"):
    sign(creds["chain"], creds["other"])
  with pytest.raises(UserError, match="C2PA certificate .* does not exist"):
    sign(str(tmp_path / "missing.pem"), creds["key"])
  with pytest.raises(UserError, match="C2PA private key .* could not be read"):
    sign(creds["chain"], creds["chain"])
  with pytest.raises(UserError, match="C2PA certificate .* could not be read"):
    sign(creds["key"], creds["key"])
  secp256k1 = tmp_path / "k1.pem"
  secp256k1.write_bytes(_pem_key(ec.generate_private_key(ec.SECP256K1())))
  with pytest.raises(UserError, match="unsupported type secp256k1"):
    sign(creds["chain"], str(secp256k1))
  # Key and cert match, but a CA cert may not sign content: the library refuses mid-signing.
  with pytest.raises(UserError, match="C2PA signing of .* failed"):
    sign(creds["root"], creds["root_key"])
  assert open(video, "rb").read() == original
  assert sorted(os.listdir(tmp_path)) == ["k1.pem", "talk.mp4"]


def test_sample_flags_checked_before_generating(creds, tmp_path, capsys):
  from vasa_jax import sample
  out = ["--out", str(tmp_path / "x.mp4"), "--checkpoint", str(tmp_path / "no_such_bundle")]
  assert cli.run(sample.main, sample.parser(), out + ["--c2pa-cert", creds["chain"]]) == 2
  assert "--c2pa-cert and --c2pa-key go together" in capsys.readouterr().err
  # A wrong key is reported before the model is even loaded (the bundle here does not exist).
  assert cli.run(sample.main, sample.parser(), out + ["--c2pa-cert", creds["chain"], "--c2pa-key", creds["other"]]) == 2
  assert "does not match the signing certificate" in capsys.readouterr().err


def test_missing_library_is_a_user_error(monkeypatch, video, creds):
  monkeypatch.setitem(sys.modules, "c2pa", None)  # Makes `import c2pa` raise ImportError.
  with pytest.raises(UserError, match=r"pip install 'vasa_jax\[c2pa\]'"):
    c2pa_sign.sign_c2pa(video, creds["chain"], creds["key"], payload_hex=PAYLOAD, checkpoint_hash=CHECKPOINT)
  assert verify.c2pa_status(video) == "not checked (c2pa-python is not installed)"
