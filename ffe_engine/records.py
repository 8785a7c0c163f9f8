"""Compact event records for a backtest's database.

A backtest with full records writes one `decision` record per bar, each about a kilobyte of JSON that differs from
the one before it in a few numbers. Stored as it is, the events table holds most of the run's bytes. A compact run
stores each record as a Zstandard frame compressed with a dictionary trained on the run's own first records (kept
in the kv table under DICTIONARY_KEY, base64): one record still reads back on its own, in microseconds, and takes
about an eighth of the room. A record that starts with `{` is plain JSON (live runs, and the first records of a
compact run, written before there were enough to train on).
"""

from __future__ import annotations

import base64
from typing import Any

import orjson
import zstandard

DICTIONARY_KEY = "record_dictionary"
DICTIONARY_BYTES = 16_384  # trained on the first records; larger ones shrink records no further
TRAIN_MIN_RECORDS = 1000  # fewer samples than this train a poor dictionary (or none)
LEVEL = 3
MAGIC = b"\x28\xb5\x2f\xfd"  # a Zstandard frame (a JSON object starts with "{")


class RecordPacker:
    """Compresses records with one dictionary: the record writer's side."""

    def __init__(self, dictionary: bytes) -> None:
        self.dictionary = dictionary
        self._c = zstandard.ZstdCompressor(level=LEVEL, dict_data=zstandard.ZstdCompressionDict(dictionary),
                                           write_checksum=False, write_content_size=True, write_dict_id=False)

    def pack(self, record: bytes) -> bytes:
        return self._c.compress(record)


def train(records: list[bytes]) -> bytes | None:
    """A dictionary for a run, trained on its records so far; None while there are too few to train on."""
    if len(records) < TRAIN_MIN_RECORDS:
        return None
    try:
        samples: list[bytes | bytearray | memoryview] = list(records)
        return bytes(zstandard.train_dictionary(DICTIONARY_BYTES, samples).as_bytes())
    except zstandard.ZstdError:  # records too alike or too few bytes: keep them plain, try again later
        return None


def dictionary_text(dictionary: bytes) -> str:
    return base64.b64encode(dictionary).decode()


def dictionary_bytes(text: str) -> bytes:
    return base64.b64decode(text)


class RecordReader:
    """Reads stored records, plain or compact, with the database's dictionary (None: plain records only)."""

    def __init__(self, dictionary: bytes | None) -> None:
        self._d = (zstandard.ZstdDecompressor(dict_data=zstandard.ZstdCompressionDict(dictionary))
                   if dictionary is not None else None)

    def unpack(self, data: Any) -> bytes:
        """A stored record as its JSON bytes (plain records as they are)."""
        if isinstance(data, str):
            return data.encode()
        raw = bytes(data)
        if raw[:4] != MAGIC:
            return raw
        if self._d is None:
            raise ValueError("a compact record, and no record dictionary in this database")
        return bytes(self._d.decompress(raw))

    def load(self, data: Any) -> Any:
        return orjson.loads(self.unpack(data))


def is_compact(data: Any) -> bool:
    return isinstance(data, (bytes, bytearray, memoryview)) and bytes(data[:4]) == MAGIC


def packed_value(obj: Any) -> dict[str, str]:
    """A large value for the kv table (an equity curve): its JSON compressed, as JSON text can carry it. (Level 3:
    a fifth larger than level 19 on an equity curve, and a hundred times faster: a sweep runs this once a run.)"""
    return {"zstd_base64": base64.b64encode(zstandard.ZstdCompressor(level=3).compress(orjson.dumps(obj))).decode()}


def unpacked_value(value: Any) -> Any:
    """A kv value as it was before `packed_value` (other values as they are)."""
    if isinstance(value, dict) and set(value) == {"zstd_base64"}:
        return orjson.loads(zstandard.ZstdDecompressor().decompress(base64.b64decode(value["zstd_base64"])))
    return value


def compress_lines(lines: list[bytes]) -> bytes:
    """Audit lines as one Zstandard frame (the frames of a file read as one stream: `zstd -dc`)."""
    return zstandard.ZstdCompressor(level=1).compress(b"\n".join(lines) + b"\n")


def read_lines(path: Any) -> list[bytes]:
    """Every line of a compressed audit file."""
    with open(path, "rb") as f:
        data = zstandard.ZstdDecompressor().stream_reader(f, read_across_frames=True).read()
    return data.split(b"\n")[:-1]
