"""Reading an output back in one call, whatever its backend.

    from pipeline import read
    ids, vectors, table = read.load('out/run_local/embeddings')

`vectors` is a float32 [documents, dim] matrix in the order of `ids`, and
`table` every record as a pyarrow Table (the declared fields, the metadata
fields, and the embedding as a fixed-size list). From a shell,
`python -m pipeline.read OUTPUT [--head N]` prints a few records and the
count.
"""

from __future__ import annotations

import argparse
import sys
from typing import NamedTuple

import numpy as np

from transforms import backends
from transforms import records


class Output(NamedTuple):
  ids: list
  vectors: np.ndarray
  table: object  # pyarrow.Table


def backend(output: str, output_format: str = 'auto',
            dead_letters: bool = False,
            metadata: tuple = ()) -> backends.Backend:
  """The backend of an output of the job (file prefix, bq:// or
  postgresql:// table), or of a dead-letter location: for load(), or to
  stream its records (Backend.scan), metadata fields included by name."""
  if dead_letters:
    return backends.existing(output, output_format,
                             record=records.DEAD_LETTERS,
                             formats=backends.DEAD_LETTER_FORMATS)
  return backends.existing(
      output, output_format,
      record=records.EMBEDDINGS.with_metadata(metadata))


def load(output: str, output_format: str = 'auto',
         dead_letters: bool = False) -> Output:
  """An output of the job (file prefix, bq:// or postgresql:// table);
  with dead_letters=True, OUTPUT is a dead-letter location and `vectors` is
  empty."""
  table = backend(output, output_format, dead_letters).load()
  ids = table.column('id').to_pylist() if 'id' in table.column_names else []
  return Output(ids, vectors(table), table)


def vectors(table) -> np.ndarray:
  """The embedding column as a float32 [rows, dim] matrix."""
  if 'embedding' not in table.column_names:
    return np.zeros((table.num_rows, 0), np.float32)
  column = table.column('embedding').combine_chunks()
  if table.num_rows == 0:
    return np.zeros((0, 0), np.float32)
  flat = column.flatten().to_numpy(zero_copy_only=False)
  return flat.astype(np.float32).reshape(table.num_rows, -1)


def _shown(value) -> str:
  if isinstance(value, list):
    head = ', '.join(f'{v:.4f}' for v in value[:4])
    return f'[{head}, ... {len(value)} values]'
  return str(value)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(
      prog='python -m pipeline.read',
      description='Print the first records of an output of pipeline.run, '
      'and how many it holds.')
  parser.add_argument('output', help='the --output of a run: file prefix, '
                      'bq:// or postgresql:// table')
  parser.add_argument('--head', type=int, default=3,
                      help='records to print (default 3)')
  parser.add_argument('--output_format', default='auto',
                      choices=('auto',) + backends.OUTPUT_FORMATS)
  args = parser.parse_args(argv)
  try:
    out = load(args.output, args.output_format)
  except (ValueError, RuntimeError) as e:
    print(f'pipeline.read: error: {e}', file=sys.stderr)
    return 2
  for row in out.table.slice(0, max(args.head, 0)).to_pylist():
    print('  '.join(f'{k}={_shown(v)}' for k, v in row.items()))
  dim = out.vectors.shape[1] if out.vectors.size else 0
  print(f'{out.table.num_rows} records, {dim}-d embeddings')
  return 0


if __name__ == '__main__':
  sys.exit(main())
