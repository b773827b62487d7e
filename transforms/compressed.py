"""Compressed input files, read to their end marker: a truncated stream is
an error that names the file, never a shorter corpus.

Why not Beam's CompressedFile: it stops at the end of the bytes without
asking the decompressor whether the stream ended, so a .jsonl.gz cut
short (a copy that failed half way, a full disk at export) reads as a
complete file with fewer records, and the run says nothing. The suffixes
and which decompressor each takes are Beam's (CompressionTypes, and the
same decompressor objects its CompressedFile makes); this module only adds
the end check. Concatenated streams (gzip members, bzip2 and xz streams,
zstd frames) are read through, as Beam does.
"""

from __future__ import annotations

import bz2
import io
import lzma
import zlib

import zstandard
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from transforms import paths

_DECOMPRESSORS = {
    CompressionTypes.GZIP: lambda: zlib.decompressobj(zlib.MAX_WBITS | 16),
    CompressionTypes.DEFLATE: zlib.decompressobj,
    CompressionTypes.BZIP2: bz2.BZ2Decompressor,
    CompressionTypes.LZMA: lzma.LZMADecompressor,
    # Beam's window limit: large files need more than zstd's default.
    CompressionTypes.ZSTD: lambda: zstandard.ZstdDecompressor(
        max_window_size=2**31).decompressobj(),
}
_CHUNK = 1 << 16


class Truncated(EOFError):
  """The compressed stream ended before its end marker."""

  def __init__(self, path: str, compressed_bytes: int):
    super().__init__(
        f'{path} is truncated: its compressed data ends after '
        f'{compressed_bytes:,} bytes, before the end-of-stream marker; the '
        'records after the cut are missing (copy or export the file again)')
    self.path = path


def is_compressed(path: str) -> bool:
  """Whether Beam decompresses this file as it reads it: its suffix is one
  of Beam's own (CompressionTypes: .gz, .bz2, .deflate, .zst, .zstd, .xz,
  .lzma), the one place the suffixes are declared."""
  return (CompressionTypes.detect_compression_type(path) !=
          CompressionTypes.UNCOMPRESSED)


def open_file(path: str, opener=None):
  """A binary file object of the file's (decompressed) bytes; seek goes
  forward, or back to the start. A compressed stream that did not end
  reads to its last byte as if it had: check_end says whether it did
  (raising from a read would lose the bytes read with it). `opener`
  opens the stored bytes (default: Beam's FileSystems.open)."""
  opener = opener or _open_stored
  if not is_compressed(path):
    return opener(path)
  kind = CompressionTypes.detect_compression_type(path)
  return io.BufferedReader(_Decompressing(path, _DECOMPRESSORS[kind],
                                          opener), buffer_size=_CHUNK)


# Read-ahead for files of remote file systems (gs://).
_REMOTE_BUFFER = 1 << 20


def _open_stored(path: str):
  """The stored bytes, through Beam's FileSystems. A remote file is read
  through a buffer: Beam's Cloud Storage reader has no peek, so each
  readline() of it read one byte per call (2.3 MB/s on the GCS emulator,
  a CPU cost per byte that no network hides)."""
  f = FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)
  if paths.has_scheme(path):
    return io.BufferedReader(f, buffer_size=_REMOTE_BUFFER)
  return f


def consumed(f):
  """(stored bytes read, decompressed bytes made) so far of a compressed
  file from open_file, or None for an uncompressed one: their ratio
  scales what a prefix holds to the whole file."""
  raw = getattr(f, 'raw', None)
  if not isinstance(raw, _Decompressing):
    return None
  return raw.compressed, raw.tell() + len(raw._pending)


def check_end(f) -> None:
  """After reading `f` (from open_file) to its end: raises Truncated if it
  is a compressed stream that ended before its end marker."""
  raw = getattr(f, 'raw', None)
  if isinstance(raw, _Decompressing) and raw.truncated:
    raise Truncated(raw.path, raw.compressed)


def ends_a_line(f) -> bool:
  """Whether the decompressed bytes read so far end with a newline (the
  cut of a truncated file fell between records)."""
  raw = getattr(f, 'raw', None)
  return not isinstance(raw, _Decompressing) or raw.last_byte == b'\n'


class _Decompressing(io.RawIOBase):

  def __init__(self, path: str, make, opener=_open_stored):
    super().__init__()
    self.path, self._make, self._opener = path, make, opener
    self._raw = None
    self._start()

  def _start(self) -> None:
    if self._raw is not None:
      self._raw.close()
    self._raw = self._opener(self.path)
    self._decompressor = self._make()
    self._pending = b''
    self._position = 0
    self.compressed = 0
    self._began = False  # the current stream has had input
    self._done = False
    self.truncated = False
    self.last_byte = b''

  def readable(self) -> bool:
    return True

  def seekable(self) -> bool:
    return True

  def tell(self) -> int:
    return self._position

  def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
    if whence != io.SEEK_SET:
      raise io.UnsupportedOperation('seek from the start only')
    if offset < self._position:
      self._start()
    while self._position < offset:
      if not self.read(min(_CHUNK, offset - self._position)):
        break
    return self._position

  def readinto(self, buffer) -> int:
    while not self._pending and not self._done:
      self._pending = self._next()
    size = min(len(buffer), len(self._pending))
    buffer[:size] = self._pending[:size]
    if size:
      self.last_byte = self._pending[size - 1:size]
    self._pending = self._pending[size:]
    self._position += size
    return size

  def _next(self) -> bytes:
    """More decompressed bytes (maybe none yet); sets _done at the end."""
    d = self._decompressor
    if getattr(d, 'eof', False) and d.unused_data:
      # Another member or stream follows: decompress it too.
      data, self._decompressor = d.unused_data, self._make()
      self._began = True
      return self._decompressor.decompress(data)
    data = self._raw.read(_CHUNK)
    if not data:
      self._done = True
      self.truncated = self._began and not getattr(self._decompressor,
                                                    'eof', True)
      return self._flush()
    self.compressed += len(data)
    if getattr(d, 'eof', False):  # bytes after the end: a new stream
      self._decompressor = d = self._make()
    self._began = True
    return d.decompress(data)

  def _flush(self) -> bytes:
    flush = getattr(self._decompressor, 'flush', None)
    return flush() if flush else b''

  def close(self) -> None:
    if self._raw is not None:
      self._raw.close()
    super().close()
