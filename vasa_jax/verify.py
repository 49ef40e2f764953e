"""Checks a video for the vasa_jax watermark and provenance metadata.

    python -m vasa_jax.verify VIDEO [--json]

Exit status: 0 when the watermark is found, 1 when it is not, 2 for bad input
(a missing, empty or undecodable file).
"""

import json

from vasa_jax import cli, media, watermark

FOUND, NOT_FOUND = 0, 1


def c2pa_status(path: str) -> str:
  """'none', 'not checked (...)' or who made the active manifest and whether its signature holds."""
  try:
    import c2pa  # Optional extra: `pip install 'vasa_jax[c2pa]'`.
  except ImportError:
    return "not checked (c2pa-python is not installed)"
  try:
    with c2pa.Reader(path) as reader:
      store = json.loads(reader.json())
  except Exception:  # The library raises its own error types for "no manifest".
    return "none"
  active = store.get("manifests", {}).get(store.get("active_manifest", ""), {})
  # Claim v2 manifests name their generator only in claim_generator_info.
  info = (active.get("claim_generator_info") or [{}])[0]
  generator = active.get("claim_generator") or "/".join(str(info[k]) for k in ("name", "version") if k in info)
  # "Trusted": signer on the validator's trust list; "Valid": signature and hashes hold, signer unknown.
  state = store.get("validation_state", "")
  text = f"manifest by {generator or 'unknown'}, signature {'valid' if state in ('Valid', 'Trusted') else 'invalid'}"
  if state == "Trusted":
    text += ", signer trusted"
  failures = [s.get("code", "?") for s in store.get("validation_status", [])]
  return text + (f" ({', '.join(failures)})" if failures else "")


def report(path: str, max_frames: int = 500) -> dict:
  """Everything `verify` prints, as a dict."""
  result = watermark.detect(path, max_frames=max_frames)
  tags = media.read_metadata(path)
  out = {
      "file": path,
      "watermark_found": result.found,
      "payload": f"{result.payload:016x}" if result.payload is not None else None,
      "payload_fields": result.fields,
      "confidence_z": round(result.confidence, 2),
      "p_value": result.p_value,
      "bit_agreement": round(result.bit_agreement, 3),
      "frames_used": result.frames_used,
      "crop": [round(c, 3) for c in result.crop],
      "metadata": {k: v for k, v in tags.items() if k not in ("major_brand", "minor_version", "compatible_brands")},
      "c2pa": c2pa_status(path),
  }
  claimed = tags.get("watermark_payload")
  if claimed and result.payload is not None:
    out["metadata_matches_watermark"] = claimed == out["payload"]
  return out


def _main(args) -> int:
  info = report(args.video, args.max_frames)
  if args.json:
    print(json.dumps(info, indent=2))
  else:
    if info["watermark_found"]:
      print(f"watermark: FOUND  payload {info['payload']}  {info['payload_fields']}")
    else:
      print("watermark: not found")
    print(f"confidence: pilot z={info['confidence_z']}  p<={info['p_value']:.2g}  "
          f"bit agreement {info['bit_agreement']:.1%}  over {info['frames_used']} frames")
    if "metadata_matches_watermark" in info:
      print(f"metadata payload matches watermark: {info['metadata_matches_watermark']}")
    meta = info["metadata"]
    print("metadata: " + (", ".join(f"{k}={v}" for k, v in meta.items()) if meta else "none"))
    print(f"c2pa: {info['c2pa']}")
  return FOUND if info["watermark_found"] else NOT_FOUND


def _parser():
  parser = cli.make_parser("python -m vasa_jax.verify",
                           "Check a video for the vasa_jax invisible watermark, provenance metadata and C2PA "
                           "manifest. Exit status 0: watermark found; 1: not found; 2: bad input.")
  parser.add_argument("video", help="video file (mp4, mov, mkv, webm)")
  parser.add_argument("--json", action="store_true", help="print the report as JSON")
  parser.add_argument("--max-frames", type=int, default=500, help="frames to read (evidence is averaged over them)")
  return parser


if __name__ == "__main__":
  cli.main_entry(_main, _parser())
