"""A damaged output shard, read back by pipeline.read, the run report and a
nightly run (--previous): one line naming the file and where it is
damaged, never a different record or a silent carry-forward.

Why: the project's own TFRecord reader once checked neither lengths nor
checksums (a flipped byte in a stored vector read back as another vector,
a cut header as a complete file), and Beam's reader, where the nightly run
used it, printed the damaged record as kilobytes of hex without the file.
Each field of a TFRecord frame (the length, its checksum, the data, its
checksum) is cut inside and has one bit flipped, in the second record of a
real shard the job wrote (the launch's check reads the first); the
Parquet footer (its length, the magic bytes, the footer itself) likewise.
"""

from __future__ import annotations

import glob
import json
import os
import struct
import types

import pytest

from pipeline import console
from pipeline import read
from pipeline import report
from pipeline import run
from tests import corpora
from tests import helpers

SHARD = 'emb-00000-of-00001'
ADVICE = ('the file was cut or changed after it was written: write it '
          'again (re-run the job that wrote it) or remove it')


@pytest.fixture(scope='module')
def day1(tmp_path_factory, minilm_export):
  """One small run's output in each file format, one shard each."""
  root = tmp_path_factory.mktemp('day1')
  corpus = corpora.write_jsonl(str(root / 'corpus.jsonl'),
                               corpora.sample_docs(8), bad=False)
  for fmt in ('tfrecord', 'parquet'):
    assert run.main(['--input', corpus.pattern, '--output',
                     str(root / fmt / 'emb'), '--output_format', fmt,
                     '--num_shards', '1', '--model_dir', minilm_export]) == 0
  return types.SimpleNamespace(root=root, corpus=corpus.pattern,
                               model=minilm_export)


def _damaged(day1, tmp_path, fmt: str, damage) -> tuple[str, str]:
  """(prefix, shard path) of a copy of day 1's shard, damaged."""
  suffix = '.' + fmt
  shard = str(tmp_path / 'previous' / (SHARD + suffix))
  os.makedirs(os.path.dirname(shard))
  with open(day1.root / fmt / (SHARD + suffix), 'rb') as f:
    data = bytearray(f.read())
  with open(shard, 'wb') as f:
    f.write(damage(data))
  return str(tmp_path / 'previous' / 'emb'), shard


def _second_record(data: bytes) -> tuple[int, int]:
  """(offset, data length) of a TFRecord file's second record."""
  (first,) = struct.unpack('<Q', data[:8])
  offset = 12 + first + 4
  (length,) = struct.unpack('<Q', data[offset:offset + 8])
  return offset, length


def _flip(position: int, bit: int = 0):
  def damage(data):
    data[position] ^= 1 << bit
    return bytes(data)
  return damage


# Per TFRecord field: (what is done, where in the second record: a
# function of its data length, what the reader says).
TFRECORD_CASES = {
    'cut in the length': ('cut', lambda n: 5,
                          'cut inside the length: 5 of 8 bytes'),
    'cut in the length checksum': (
        'cut', lambda n: 10, "cut inside the length's checksum: 2 of 4 "
        'bytes'),
    'cut in the data': ('cut', lambda n: 12 + 37,
                        lambda n: f'cut inside the data: 37 of {n} bytes'),
    'cut in the data checksum': (
        'cut', lambda n: 12 + n + 3, "cut inside the data's checksum: 3 of "
        '4 bytes'),
    'flip in the length': ('flip', lambda n: 1,
                           "the length's checksum does not match"),
    'flip in the length checksum': ('flip', lambda n: 9,
                                    "the length's checksum does not match"),
    'flip in the data': ('flip', lambda n: 12 + n // 2,
                         "the data's checksum does not match"),
    'flip in the data checksum': ('flip', lambda n: 12 + n + 2,
                                  "the data's checksum does not match"),
}


def _tfrecord_case(name: str, day1, tmp_path) -> tuple[str, str, str]:
  """(prefix, shard, the error's message) of one damage case."""
  how, where, what = TFRECORD_CASES[name]
  box = {}

  def damage(data):
    offset, length = _second_record(data)
    box['offset'], box['length'] = offset, length
    at = offset + where(length)
    if how == 'cut':
      return bytes(data[:at])
    return _flip(at, 3)(data)

  prefix, shard = _damaged(day1, tmp_path, 'tfrecord', damage)
  what = what(box['length']) if callable(what) else what
  return prefix, shard, (f'{shard}: the TFRecord record at byte '
                         f'{box["offset"]} is damaged: {what}; {ADVICE}')


def _parquet_footer(data: bytes) -> tuple[int, int]:
  (length,) = struct.unpack('<I', data[-8:-4])
  return len(data) - 8 - length, length


PARQUET_CASES = {
    'cut in the footer': (
        lambda d: bytes(d[:_parquet_footer(d)[0] + _parquet_footer(d)[1] // 2]),
        "it does not end with Parquet's magic bytes PAR1 (cut, or its "
        'last bytes changed)'),
    'cut in the footer length': (
        lambda d: bytes(d[:-6]),
        "it does not end with Parquet's magic bytes PAR1 (cut, or its "
        'last bytes changed)'),
    'flip in the footer length': (
        lambda d: _flip(len(d) - 5, 0)(d),
        lambda d: (f'its footer length ({_parquet_footer(d)[1] + (1 << 24)} '
                   'bytes) is more than the file holds')),
    'flip in the magic bytes': (
        lambda d: _flip(len(d) - 2, 1)(d),
        "it does not end with Parquet's magic bytes PAR1 (cut, or its "
        'last bytes changed)'),
    'flip in the footer': (
        lambda d: _flip(_parquet_footer(d)[0], 5)(d),
        "its footer cannot be read (Couldn't deserialize thrift: "
        'TProtocolException: Invalid data)'),
}


def _parquet_case(name: str, day1, tmp_path) -> tuple[str, str, str]:
  damage, what = PARQUET_CASES[name]
  original = bytearray((day1.root / 'parquet' /
                        (SHARD + '.parquet')).read_bytes())
  prefix, shard = _damaged(day1, tmp_path, 'parquet', damage)
  what = what(original) if callable(what) else what
  return prefix, shard, f'{shard}: the Parquet file is damaged: {what}'


def _case(name, day1, tmp_path):
  if name in TFRECORD_CASES:
    return _tfrecord_case(name, day1, tmp_path)
  return _parquet_case(name, day1, tmp_path)


CASES = list(TFRECORD_CASES) + list(PARQUET_CASES)
IDS = [name.replace(' ', '_') for name in CASES]


@pytest.mark.parametrize('name', CASES, ids=IDS)
def test_pipeline_read_says_where_a_shard_is_damaged(name, day1, tmp_path,
                                                     capsys):
  prefix, shard, message = _case(name, day1, tmp_path)
  assert read.main([prefix]) == 2
  captured = capsys.readouterr()
  assert captured.out == ''
  lines = captured.err.strip().splitlines()
  assert len(lines) == 1, captured.err
  assert lines[0].startswith(f'pipeline.read: error: {message}'), lines[0]
  assert len(lines[0]) < 500  # no record dumped as hex
  with pytest.raises(ValueError, match=shard):
    read.load(prefix)


@pytest.mark.parametrize('name', CASES, ids=IDS)
def test_the_report_says_where_a_shard_is_damaged(name, day1, tmp_path):
  """The report reads the output back first (load_run), before any plot."""
  prefix, _, message = _case(name, day1, tmp_path)
  options = types.SimpleNamespace(
      output=prefix, output_format='auto', dead_letter=None,
      dead_letter_format='auto', metadata_fields=(), report_color_field=None)
  with pytest.raises(ValueError) as caught:
    report.load_run(options)
  # What pipeline.run prints after 'pipeline.run: error: --report PATH: '.
  line = console.run_error_line(caught.value)
  assert message in line, line
  assert len(line) < 500


@pytest.mark.parametrize('name', CASES, ids=IDS)
def test_a_nightly_run_stops_at_a_damaged_previous_shard(name, day1,
                                                        tmp_path, capsys):
  prefix, shard, message = _case(name, day1, tmp_path)
  before = open(shard, 'rb').read()
  day2 = str(tmp_path / 'day2' / 'emb')
  status = run.main(['--input', day1.corpus, '--output', day2,
                     '--previous', prefix, '--model_dir', day1.model])
  captured = capsys.readouterr()
  last = captured.err.strip().splitlines()[-1]
  # A TFRecord shard's second record is read while the job runs (status
  # 1); a Parquet footer by the launch's check of --previous (status 2).
  assert status == (1 if name in TFRECORD_CASES else 2), captured.err[-3000:]
  assert last.startswith('pipeline.run: error: '), last
  assert message in last, last
  assert len(last) < 600, last
  # Nothing written, nothing carried; the damaged shard left as it was.
  assert not any(line.startswith('{') for line in captured.out.splitlines())
  assert glob.glob(day2 + '*') == []
  assert os.listdir(os.path.dirname(shard)) == [os.path.basename(shard)]
  assert open(shard, 'rb').read() == before


def test_an_undamaged_output_reads_as_before(day1, capsys):
  """The checked readers change nothing on whole files: every record of
  both formats as pyarrow and TensorFlow read them."""
  import pyarrow.parquet as pq
  import tensorflow as tf
  for fmt in ('tfrecord', 'parquet'):
    got = read.load(str(day1.root / fmt / 'emb'))
    assert len(got.ids) == 8
  table = pq.read_table(str(day1.root / 'parquet' / (SHARD + '.parquet')))
  assert read.load(str(day1.root / 'parquet' / 'emb')).table.equals(table)
  raw = [r.numpy() for r in tf.data.TFRecordDataset(
      str(day1.root / 'tfrecord' / (SHARD + '.tfrecord')))]
  from transforms.backends import tfrecord as backend
  from transforms import records
  want = [backend.from_example_bytes(r, records.EMBEDDINGS) for r in raw]
  got = list(read.backend(str(day1.root / 'tfrecord' / 'emb')).scan())
  assert json.dumps(got, default=str) == json.dumps(want, default=str)


def _stopped_run(capsys, pattern: str, day1, tmp_path) -> str:
  """The job on a damaged input: it must exit with status 1 and write
  nothing; its last line."""
  out = str(tmp_path / 'out' / 'emb')
  status, _, err = helpers.run_main(
      capsys, ['--input', pattern, '--output', out, '--model_dir', day1.model])
  assert status == 1, '\n'.join(err)[-3000:]
  assert glob.glob(out + '*') == []
  return err[-1]


@pytest.mark.parametrize('name', ['cut in the data', 'flip in the length',
                                  'flip in the data'],
                         ids=lambda n: n.replace(' ', '_'))
def test_a_damaged_tfrecord_input_stops_the_run_naming_it(name, day1,
                                                         tmp_path, capsys):
  """--input *.tfrecord (read through the codec, decoded by tfx-bsl): the
  format cannot resume after a damaged header, so a damaged record stops
  the run with the file and offset, and nothing is written."""
  corpus = corpora.write_tfrecord(str(tmp_path / 'corpus.tfrecord'),
                                  corpora.sample_docs(6))
  with open(corpus.pattern, 'rb') as f:
    data = bytearray(f.read())
  how, where, what = TFRECORD_CASES[name]
  offset, length = _second_record(data)
  at = offset + where(length)
  with open(corpus.pattern, 'wb') as f:
    f.write(bytes(data[:at]) if how == 'cut' else _flip(at, 3)(data))
  what = what(length) if callable(what) else what
  assert _stopped_run(capsys, corpus.pattern, day1, tmp_path) == (
      f'pipeline.run: error: {corpus.pattern}: the TFRecord record at byte '
      f'{offset} is damaged: {what}; {ADVICE}')


@pytest.mark.parametrize('name', ['cut in the footer', 'flip in the footer'],
                         ids=lambda n: n.replace(' ', '_'))
def test_a_damaged_parquet_input_stops_the_run_naming_it(name, day1,
                                                        tmp_path, capsys):
  """--input *.parquet: Beam's reader reads the rows; the footer is
  checked by the codec first, so a damaged one is the codec's line."""
  corpus = corpora.write_parquet(str(tmp_path / 'corpus.parquet'),
                                 corpora.sample_docs(6))
  with open(corpus.pattern, 'rb') as f:
    data = bytearray(f.read())
  damage, what = PARQUET_CASES[name]
  with open(corpus.pattern, 'wb') as f:
    f.write(damage(data))
  what = what(data) if callable(what) else what
  assert _stopped_run(capsys, corpus.pattern, day1, tmp_path) == (
      f'pipeline.run: error: {corpus.pattern}: the Parquet file is damaged: '
      f'{what}; {ADVICE}')
