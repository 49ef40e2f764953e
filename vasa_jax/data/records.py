"""Clip records in ArrayRecord shards: the one import for code that writes or reads a corpus.

The pieces live in three modules, one concept each:

  records_format   the bytes of one clip record (encode_clip / decode_clip, CRC,
                   schema version) and the corpus folder's file names and manifest
  records_writer   CorpusWriter: clips -> shards + per-split indices + manifest, atomically
  records_reader   open_corpus -> Corpus: manifest, grain sources, ClipIndex per split

`records_format`'s docstring describes the byte layout and the folder.
"""

from vasa_jax.data.records_format import (  # noqa: F401
    CORPUS_FORMAT, FRAME_CODECS, MANIFEST_NAME, SCHEMA_VERSION, CorruptRecord, clip_header, clip_num_frames,
    decode_clip, encode_clip, index_name, per_frame_keys, shard_name, verify_record)
from vasa_jax.data.records_reader import ClipIndex, Corpus, open_corpus  # noqa: F401
from vasa_jax.data.records_writer import CorpusWriter  # noqa: F401
