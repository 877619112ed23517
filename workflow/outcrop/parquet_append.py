"""Append rows to a Parquet file in place: the rows already there are never read or written again.

A Parquet file is its row groups, then a footer (Thrift, compact protocol) that lists them with
their byte offsets, then the footer's length and ``PAR1``. Adding a scene to a coast's tables (the
index's id table, the clusters' labels) adds row groups; copying the ten million kept rows into a
new file to do so cost more than everything else an added scene needs. Here the new rows are
written by pyarrow into a buffer, and then:

1. the file's old footer (with its length and magic) is kept beside it, ``{file}.tail``;
2. the new row groups are written over the old footer, where it began;
3. the new footer follows: pyarrow's footer of the new rows (schema, key-value metadata as given)
   with the old row groups put first and the new ones' byte offsets moved to where they now lie.

pyarrow cannot write row groups at an offset, nor edit a footer, so the footer is decoded and
encoded here with a small generic reader and writer of Thrift's compact protocol; only the
offset fields of row groups and column chunks (parquet.thrift) are touched. The file keeps its
inode, and its bytes up to the old footer stay as they were. A write that fails half way is undone
from ``{file}.tail`` (:func:`restore`); the tail is removed when the append is complete.

Crash safety: the tail is written whole (temporary file, fsync, rename) before the file is touched,
and the appended file is fsynced before the tail is removed; so at any moment either the file is
complete, or a whole tail is there to put it back as it was. This module writes the file in place
by design (``open(path, 'r+b')``), which tests/test_atomic.py lists as an exemption.
"""

from __future__ import annotations

import io
import os
import struct
from pathlib import Path
from typing import Any

from outcrop.io import atomic_path

MAGIC = b"PAR1"
# Thrift compact protocol types.
STOP, TRUE, FALSE, BYTE, I16, I32, I64, DOUBLE, BINARY, LIST, SET, MAP, STRUCT = range(13)
# parquet.thrift field ids of the offsets a moved row group carries.
ROW_GROUPS, NUM_ROWS = 4, 3  # FileMetaData
RG_COLUMNS, RG_FILE_OFFSET, RG_ORDINAL = 1, 5, 7  # RowGroup
CC_FILE_OFFSET, CC_META, CC_OFFSET_INDEX, CC_COLUMN_INDEX = 2, 3, 4, 6  # ColumnChunk
CM_OFFSETS = (9, 10, 11, 14)  # ColumnMetaData: data, index, dictionary page; bloom filter


class Reader:
    """Decodes a compact-protocol struct into ``{field id: (type, value)}`` (lists as (type, [values]))."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def byte(self) -> int:
        self.pos += 1
        return self.data[self.pos - 1]

    def varint(self) -> int:
        shift = result = 0
        while True:
            b = self.byte()
            result |= (b & 0x7F) << shift
            if not b & 0x80:
                return result
            shift += 7

    def zigzag(self) -> int:
        n = self.varint()
        return (n >> 1) ^ -(n & 1)

    def value(self, kind: int) -> Any:
        if kind in (TRUE, FALSE):  # in a container: one byte, 1 = true
            return self.byte() == TRUE
        if kind == BYTE:
            return self.byte()
        if kind in (I16, I32, I64):
            return self.zigzag()
        if kind == DOUBLE:
            self.pos += 8
            return struct.unpack("<d", self.data[self.pos - 8 : self.pos])[0]
        if kind == BINARY:
            n = self.varint()
            self.pos += n
            return self.data[self.pos - n : self.pos]
        if kind in (LIST, SET):
            head = self.byte()
            size, elem = head >> 4, head & 0x0F
            if size == 15:
                size = self.varint()
            return (elem, [self.value(elem) for _ in range(size)])
        if kind == MAP:
            size = self.varint()
            if not size:
                return (0, 0, [])
            types = self.byte()
            return (types >> 4, types & 0x0F, [(self.value(types >> 4), self.value(types & 0x0F)) for _ in range(size)])
        if kind == STRUCT:
            return self.struct()
        raise ValueError(f"unknown Thrift compact type {kind}")

    def struct(self) -> dict[int, tuple[int, Any]]:
        fields: dict[int, tuple[int, Any]] = {}
        last = 0
        while True:
            head = self.byte()
            kind = head & 0x0F
            if kind == STOP:
                return fields
            delta = head >> 4
            field = last + delta if delta else self.zigzag()
            if kind in (TRUE, FALSE):
                fields[field] = (TRUE, kind == TRUE)
            else:
                fields[field] = (kind, self.value(kind))
            last = field


class Writer:
    """Encodes what :class:`Reader` decodes, byte for byte as Thrift's compact protocol writes it."""

    def __init__(self) -> None:
        self.out = bytearray()

    def varint(self, n: int) -> None:
        while True:
            if n < 0x80:
                self.out.append(n)
                return
            self.out.append((n & 0x7F) | 0x80)
            n >>= 7

    def zigzag(self, n: int) -> None:
        self.varint((n << 1) ^ (n >> 63))

    def value(self, kind: int, value: Any) -> None:
        if kind in (TRUE, FALSE):
            self.out.append(TRUE if value else FALSE)
        elif kind == BYTE:
            self.out.append(value & 0xFF)
        elif kind in (I16, I32, I64):
            self.zigzag(value)
        elif kind == DOUBLE:
            self.out += struct.pack("<d", value)
        elif kind == BINARY:
            self.varint(len(value))
            self.out += value
        elif kind in (LIST, SET):
            elem, items = value
            if len(items) < 15:
                self.out.append((len(items) << 4) | elem)
            else:
                self.out.append(0xF0 | elem)
                self.varint(len(items))
            for item in items:
                self.value(elem, item)
        elif kind == MAP:
            key, val, items = value
            self.varint(len(items))
            if items:
                self.out.append((key << 4) | val)
                for k, v in items:
                    self.value(key, k)
                    self.value(val, v)
        elif kind == STRUCT:
            self.struct(value)
        else:
            raise ValueError(f"unknown Thrift compact type {kind}")

    def struct(self, fields: dict[int, tuple[int, Any]]) -> None:
        last = 0
        for field in sorted(fields):
            kind, value = fields[field]
            wire = (TRUE if value else FALSE) if kind in (TRUE, FALSE) else kind
            if 0 < field - last <= 15:
                self.out.append(((field - last) << 4) | wire)
            else:
                self.out.append(wire)
                self.zigzag(field)
            if kind not in (TRUE, FALSE):
                self.value(kind, value)
            last = field
        self.out.append(STOP)


def decode_footer(data: bytes) -> dict[int, tuple[int, Any]]:
    """The FileMetaData struct of a whole Parquet file's bytes (or of its tail)."""
    if data[-4:] != MAGIC:
        raise ValueError("not a Parquet file (no PAR1 at its end)")
    length = struct.unpack("<I", data[-8:-4])[0]
    return Reader(data[-8 - length : -8]).struct()


def encode_footer(meta: dict[int, tuple[int, Any]]) -> bytes:
    """The footer bytes of ``meta``: Thrift, its length, ``PAR1``."""
    writer = Writer()
    writer.struct(meta)
    return bytes(writer.out) + struct.pack("<I", len(writer.out)) + MAGIC


def _shift(fields: dict[int, tuple[int, Any]], ids: tuple[int, ...], by: int) -> None:
    for field in ids:
        if field in fields and fields[field][1] is not None:
            kind, value = fields[field]
            fields[field] = (kind, value + by)


def moved_row_groups(groups: list[dict[int, tuple[int, Any]]], by: int, first_ordinal: int) -> list[dict]:
    """Row groups whose bytes now start ``by`` bytes later in the file, numbered from ``first_ordinal``."""
    for n, group in enumerate(groups):
        _shift(group, (RG_FILE_OFFSET,), by)
        if RG_ORDINAL in group:
            group[RG_ORDINAL] = (I16, first_ordinal + n)
        for chunk in group[RG_COLUMNS][1][1]:
            _shift(chunk, (CC_FILE_OFFSET, CC_OFFSET_INDEX, CC_COLUMN_INDEX), by)
            if CC_META in chunk:
                _shift(chunk[CC_META][1], CM_OFFSETS, by)
    return groups


def tail_path(path: Path) -> Path:
    return path.with_name(path.name + ".tail")


def append_table(
    path: str | os.PathLike[str], table: Any, *, row_group_size: int | None = None, keep_tail: bool = False
) -> int:
    """Append the rows of the Arrow ``table`` to the Parquet file ``path`` in place; returns its new size.

    ``table``'s schema (with its metadata) becomes the file's: give the kept columns, in order, and
    the key-value metadata the whole file should carry (bounds, GeoParquet ``geo``) after the append.
    With ``keep_tail`` the old footer stays in ``{path}.tail`` until :func:`commit`, so that a caller
    whose own state is written after the append can have it undone (:func:`restore`) if that fails.
    """
    import pyarrow.parquet as pq

    path = Path(path)
    buffer = io.BytesIO()
    with pq.ParquetWriter(buffer, table.schema) as writer:
        writer.write_table(table, row_group_size=row_group_size)
    new = buffer.getvalue()
    new_meta = decode_footer(new)
    with open(path, "r+b") as fh:
        size = fh.seek(0, os.SEEK_END)
        fh.seek(size - 8)
        footer_len = struct.unpack("<I", fh.read(4))[0]
        start = size - 8 - footer_len  # where the old footer begins: the new row groups go there
        fh.seek(start)
        tail = fh.read()
        old_meta = decode_footer(tail)
        old_schema = [e.get(4, (0, b""))[1] for e in old_meta[2][1][1]]
        new_schema = [e.get(4, (0, b""))[1] for e in new_meta[2][1][1]]
        if old_schema != new_schema:
            raise ValueError(f"{path}: appended columns {new_schema} differ from the file's {old_schema}")
        backup = tail_path(path)
        # The file's inode and size before the append, then its old footer: whole on disk (written
        # to a temporary, fsynced, renamed) before a byte of the file is touched.
        with atomic_path(backup) as tmp, open(tmp, "wb") as out:
            out.write(struct.pack("<QQ", os.fstat(fh.fileno()).st_ino, size) + tail)
            out.flush()
            os.fsync(out.fileno())
        data_end = len(new) - 8 - struct.unpack("<I", new[-8:-4])[0]
        old_groups = old_meta.get(ROW_GROUPS, (LIST, (STRUCT, [])))[1][1]
        groups = moved_row_groups(new_meta.get(ROW_GROUPS, (LIST, (STRUCT, [])))[1][1], start - 4, len(old_groups))
        meta = dict(new_meta)
        meta[ROW_GROUPS] = (LIST, (STRUCT, old_groups + groups))
        meta[NUM_ROWS] = (I64, old_meta[NUM_ROWS][1] + new_meta[NUM_ROWS][1])
        fh.seek(start)
        fh.write(new[4:data_end])
        fh.write(encode_footer(meta))
        fh.truncate()
        fh.flush()
        os.fsync(fh.fileno())  # the appended file is on disk before its undo record may go
        end = fh.tell()
    if not keep_tail:
        backup.unlink()
    return end


def commit(path: str | os.PathLike[str]) -> None:
    """Make an append kept with ``keep_tail`` final: its undo record goes."""
    tail_path(Path(path)).unlink(missing_ok=True)


def restore(path: str | os.PathLike[str]) -> bool:
    """Undo an append that did not finish (``{path}.tail`` left behind): the file as it was before it.

    Returns whether there was one to undo.
    """
    path = Path(path)
    backup = tail_path(path)
    if not backup.exists():
        return False
    data = backup.read_bytes()
    inode, size = struct.unpack("<QQ", data[:16])
    tail = data[16:]
    if not path.exists() or os.stat(path).st_ino != inode:  # the file was replaced since (a full rewrite)
        backup.unlink()
        return False
    with open(path, "r+b") as fh:
        fh.seek(size - len(tail))
        fh.write(tail)
        fh.truncate(size)
        fh.flush()
        os.fsync(fh.fileno())
    backup.unlink()
    return True
