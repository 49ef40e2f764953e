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


def _one_in(p: float) -> str:
  return f"1 in {1 / p:,.0f}" if p > 0 else "0"


def report(path: str, max_frames: int = 500) -> dict:
  """Everything `verify` prints, as a dict."""
  result = watermark.detect(path, max_frames=max_frames)
  tags = media.read_metadata(path)
  out = {
      "file": path,
      "watermark_found": result.found,
      "payload": f"{result.payload:016x}" if result.payload is not None else None,
      "payload_fields": result.fields,
      # Found: the chance that a video without the mark passes the CRC-24 check this many times
      # by luck. Not found: nothing (a small number next to "not found" reads as evidence).
      "false_match_chance": result.false_match,
      "signal": round(result.signal, 1),
      "bit_agreement": round(result.bit_agreement, 3),
      "frames_used": result.frames_used,
      "seconds_used": round(result.seconds, 2),
      "crop": [round(c, 3) for c in result.crop],
      "metadata": {k: v for k, v in tags.items() if k not in ("major_brand", "minor_version", "compatible_brands")},
      "c2pa": c2pa_status(path),
  }
  claimed = tags.get("watermark_payload")
  if claimed and result.payload is not None:
    out["metadata_matches_watermark"] = claimed == out["payload"]
  checkpoint = tags.get("checkpoint_hash")
  if checkpoint and result.payload is not None:
    # The payload carries the first 6 hex digits of the checkpoint hash (payload version 2).
    out["checkpoint_matches_metadata"] = watermark.checkpoint_tag(checkpoint) == (result.payload >> 36) & 0xFFFFFF
  return out


def format_report(info: dict) -> str:
  """The report as `verify` prints it (the app's verify tab shows the same text)."""
  lines = []
  if info["watermark_found"]:
    f = info["payload_fields"]
    lines.append(f"watermark: FOUND (payload {info['payload']}: checkpoint {f['checkpoint_tag']}..., "
                 f"generation {f['generation_id']}, version {f['version']})")
    lines.append(f"confidence: an unmarked video passes this check by chance about "
                 f"{_one_in(info['false_match_chance'])} times (read from {info['frames_used']} frames, "
                 f"{info['seconds_used']:.1f} s)")
  else:
    lines.append(f"watermark: not found (read {info['frames_used']} frames, {info['seconds_used']:.1f} s; "
                 "a still image, a clip under 1 s or a heavily processed copy can lose it)")
  if "checkpoint_matches_metadata" in info:
    lines.append(f"metadata: checkpoint {info['metadata'].get('checkpoint_hash')} "
                 f"{'matches' if info['checkpoint_matches_metadata'] else 'does NOT match'} the watermark's "
                 f"checkpoint {info['payload_fields']['checkpoint_tag']}...; payload "
                 f"{'matches' if info.get('metadata_matches_watermark') else 'does NOT match'}")
  meta = info["metadata"]
  lines.append("metadata: " + (", ".join(f"{k}={v}" for k, v in meta.items()) if meta else "none"))
  lines.append(f"c2pa: {info['c2pa']}")
  return "\n".join(lines)


def _main(args) -> int:
  info = report(args.video, args.max_frames)
  print(json.dumps(info, indent=2) if args.json else format_report(info))
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
