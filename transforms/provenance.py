"""How an output's vectors were made, kept beside the output.

Every record carries `model_fingerprint`, a hash of the EmbeddingSpec that
made it (transforms/spec.py). A hash cannot be read back, and a query must
be embedded exactly as the corpus was (the same model by content, pooling,
normalisation, max_seq_length, long-document handling, precision): one
wrong guess gives vectors that look fine and rank badly. So a run that
writes an output also keeps the spec itself beside it, keyed by its
fingerprint (pipeline/query.py reads it back):

- a file output: PREFIX.spec.json beside the shards (local or gs://);
- PostgreSQL: a row of text_embed_specs, in the output table's schema;
- BigQuery: a row of DATASET._text_embed_specs.

Keyed by fingerprint, a note never goes stale: it is written under the
output's lease (transforms/leases) when a run succeeds, and by a Dataflow
job at launch too (its launcher may end before the job does), where a job
that then fails leaves a true note of a spec that no record carries yet. Where
the model lay (a preset, a folder, TF Hub handles) is kept as a hint for
finding it again; the spec's `model`, the model's content identity, is what
a query embedder checks the model it finds against.
"""

from __future__ import annotations

import abc
import dataclasses
import datetime
import json
from typing import Callable, Optional

from transforms import bigquery_tables as tables
from transforms.spec import EmbeddingSpec

# A file output keeps the most recent notes only: enough for any spec its
# records can still carry (a changed spec re-embeds every record).
FILE_NOTES_KEPT = 32
# Where a file output's notes are, beside its shards.
FILE_SUFFIX = '.spec.json'
# The note tables of table outputs.
POSTGRES_TABLE = 'text_embed_specs'
BIGQUERY_TABLE = '_text_embed_specs'


@dataclasses.dataclass(frozen=True)
class Provenance:
  """What made an output's vectors: the spec, and where its model was."""
  spec: EmbeddingSpec
  # The model as the run named it (a preset name, a folder's name, or
  # `PREPROCESSOR + ENCODER`), and the handles it loaded.
  model_name: str
  preprocessor: str
  encoder: str
  # The --model_dir the run was given, if any (preset exports live in the
  # model cache, found again by name).
  model_dir: Optional[str] = None
  # Documents packed several to an encoder row: equal vectors within float
  # rounding either way, so not part of the spec; a query embedder uses the
  # same layout to match the stored vectors as closely as possible.
  packing: bool = False
  # The input field that held the text (a search shows it when the output
  # carries it as a metadata field).
  text_field: str = 'text'
  # The input fields the records carry (--metadata_fields).
  metadata_fields: tuple = ()
  recorded_at: str = ''

  @property
  def fingerprint(self) -> str:
    return self.spec.fingerprint()

  def to_json(self) -> str:
    fields = dataclasses.asdict(self)
    fields['fingerprint'] = self.fingerprint
    return json.dumps(fields, sort_keys=True)

  @classmethod
  def from_json(cls, text: str) -> 'Provenance':
    found = json.loads(text)
    spec_names = {f.name for f in dataclasses.fields(EmbeddingSpec)}
    spec = EmbeddingSpec(**{k: v for k, v in found['spec'].items()
                            if k in spec_names})
    names = {f.name for f in dataclasses.fields(cls)} - {'spec'}
    kept = {k: v for k, v in found.items() if k in names}
    kept['metadata_fields'] = tuple(kept.get('metadata_fields', ()))
    return cls(spec=spec, **kept)

  def stamped(self) -> 'Provenance':
    now = datetime.datetime.now(datetime.timezone.utc)
    return dataclasses.replace(
        self, recorded_at=now.strftime('%Y-%m-%dT%H:%M:%SZ'))


class Notes(abc.ABC):
  """The notes of one output: {fingerprint: Provenance}."""

  @abc.abstractmethod
  def shown(self) -> str:
    """Where the notes are, for messages."""

  @abc.abstractmethod
  def read(self) -> dict:
    """{fingerprint: Provenance}; empty where nothing was noted."""

  @abc.abstractmethod
  def write(self, note: Provenance) -> None:
    """Adds (or refreshes) the note of one fingerprint."""

  def find(self, fingerprint: str) -> Optional[Provenance]:
    return self.read().get(fingerprint)


class FileNotes(Notes):
  """PREFIX.spec.json: {"notes": [Provenance, ...]}, newest last. Written
  whole (the run holds the output's lease: one writer)."""

  def __init__(self, prefix: str):
    self.path = prefix + FILE_SUFFIX

  def shown(self) -> str:
    return self.path

  def read(self) -> dict:
    from apache_beam.io.filesystems import FileSystems
    if not FileSystems.exists(self.path):
      return {}
    with FileSystems.open(self.path, compression_type='uncompressed') as f:
      text = f.read().decode('utf-8')
    try:
      notes = [Provenance.from_json(json.dumps(n))
               for n in json.loads(text)['notes']]
    except (ValueError, KeyError, TypeError) as e:
      raise ValueError(f'{self.path} is not a notes file of this job '
                       f'({e}); delete it, and a run writes it anew') from e
    return {n.fingerprint: n for n in notes}

  def write(self, note: Provenance) -> None:
    from apache_beam.io.filesystems import FileSystems
    notes = [n for fp, n in self.read().items() if fp != note.fingerprint]
    notes = (notes + [note])[-FILE_NOTES_KEPT:]
    text = json.dumps({'notes': [json.loads(n.to_json()) for n in notes]},
                      indent=1, sort_keys=True)
    with FileSystems.create(self.path, mime_type='application/json',
                            compression_type='uncompressed') as f:
      f.write(text.encode('utf-8'))


class PostgresNotes(Notes):
  """Rows (fingerprint, note) of text_embed_specs in the output table's
  schema."""

  def __init__(self, side: Callable, table: str, shown: str):
    # side: as leases/postgres.py's PostgresStore takes it.
    self._side = side
    schema = table.rsplit('.', 1)[0] + '.' if '.' in table else ''
    self._table = schema + POSTGRES_TABLE
    self._shown = shown

  def shown(self) -> str:
    return f'table {self._table} in {self._shown}'

  def _run(self, statement: str, params: tuple = ()) -> list:
    return self._side(
        self._table, 'fingerprint text PRIMARY KEY, note text NOT NULL',
        statement, params)[1]

  def read(self) -> dict:
    return {fp: Provenance.from_json(note)
            for fp, note in self._run('SELECT fingerprint, note FROM {}')}

  def write(self, note: Provenance) -> None:
    self._run('INSERT INTO {} (fingerprint, note) VALUES (%s, %s) '
              'ON CONFLICT (fingerprint) DO UPDATE SET note = EXCLUDED.note',
              (note.fingerprint, note.to_json()))


class BigQueryNotes(Notes):
  """Rows (fingerprint, note) of DATASET._text_embed_specs."""

  def __init__(self, side: Callable, spec: str):
    # side: as leases/bigquery.py's BigQueryStore takes it.
    self._side = side
    # spec: PROJECT:DATASET.TABLE (Beam's form).
    project, dataset, _ = tables.TableName.of(spec)
    self._table = f'{project}.{dataset}.{BIGQUERY_TABLE}'

  def shown(self) -> str:
    return f'table {self._table}'

  def _query(self, statement: str, **params) -> list:
    return self._side(self._table, ('fingerprint', 'note'), statement,
                      **params)[1]

  def read(self) -> dict:
    return {row['fingerprint']: Provenance.from_json(row['note'])
            for row in self._query('SELECT fingerprint, note FROM {table}')}

  def write(self, note: Provenance) -> None:
    self._query(
        'MERGE {table} N USING (SELECT @fingerprint AS fingerprint) S '
        'ON N.fingerprint = S.fingerprint '
        'WHEN MATCHED THEN UPDATE SET note = @note '
        'WHEN NOT MATCHED THEN INSERT (fingerprint, note) '
        'VALUES (@fingerprint, @note)',
        fingerprint=note.fingerprint, note=note.to_json())
