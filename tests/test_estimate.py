"""The cost line a Dataflow launch prints (pipeline/estimate.py): each
figure against the count this test makes itself, from the whole corpus.

The sample's bounds are made small here (a few hundred records, a few KB
at each place read) so that small corpora are estimated, not read whole;
the tolerances are stated beside each assertion. Token counts the test
makes come from the job's own tokenizer over every document (the sample
stands for them); bench/estimate.py compares the line with real runs'
summaries.
"""

from __future__ import annotations

import gzip
import json

import pytest

from pipeline import estimate
from pipeline import launch
from pipeline import run
from tests import corpora
from tests import emulators
from transforms import read as read_lib
from transforms.elements import Document

pytestmark = pytest.mark.services


@pytest.fixture
def small_sample(monkeypatch):
  """Bounds that make a corpus of a few thousand short documents larger
  than the sample."""
  monkeypatch.setattr(estimate, 'SAMPLE_DOCUMENTS', 200)
  monkeypatch.setattr(estimate, 'SPOTS', 48)
  monkeypatch.setattr(estimate, 'SPOT_BYTES', 2 << 10)
  monkeypatch.setattr(estimate, 'COMPRESSED_PREFIX', 48 << 10)


def _write(path, docs) -> str:
  with open(path, 'w', encoding='utf-8') as f:
    for d in docs:
      f.write(json.dumps(d) + '\n')
  return str(path)


def _docs(n: int) -> list:
  """n documents from the sample corpus, ids made unique past its size."""
  base = corpora.sample_docs(n)
  rounds = -(-n // len(base))
  return [dict(d, id=f'{d["id"]}#{r}')
          for r in range(rounds) for d in base][:n]


def _plan(argv, model_dir):
  return launch.plan_from_argv(argv + ['--model_dir', model_dir,
                                       '--max_seq_length', '64'])


def _tokens(plan, docs) -> int:
  """Every document's tokens, as the job counts them."""
  fields = read_lib.Fields(metadata_fields=tuple(plan.embed.metadata_fields))
  parsed = [read_lib.parse_json_line(json.dumps(d).encode(), 'x', fields)
            for d in docs]
  rows = estimate.token_rows([p for p in parsed if isinstance(p, Document)],
                             plan.spec, plan.model.preprocessor)
  return sum(r.length for rs in rows for r in rs)


def test_local_files_estimated_within_tolerance(tmp_path, minilm_export,
                                                small_sample):
  docs = _docs(2400)
  folder = tmp_path / 'corpus'
  folder.mkdir()
  for i in range(3):
    _write(folder / f'part-{i}.jsonl', docs[i::3])
  plan = _plan(['--input', str(folder / '*.jsonl'), '--output',
                str(tmp_path / 'out' / 'emb')], minilm_export)
  e = estimate.of_plan(plan)
  assert not e.complete and not e.documents_exact
  assert e.sampled <= 200 + 48
  # Documents from bytes per record: within 5%; tokens within 15%.
  assert abs(e.documents - len(docs)) <= 0.05 * len(docs), e.documents
  tokens = _tokens(plan, docs)
  assert abs(e.tokens - tokens) <= 0.15 * tokens, (e.tokens, tokens)
  line = estimate.line(e, max_seq_length=64, long_documents='truncate',
                       nightly=False)
  assert line.startswith('plan: ') and ' in 3 files, about ' in line
  assert f'estimated from {e.sampled:,} sampled records' in line


def test_a_small_input_is_counted(tmp_path, minilm_export):
  """An input the sample reads whole: documents and tokens exact, and
  dead letters said."""
  docs = _docs(40)
  corpus = corpora.write_jsonl(str(tmp_path / 'c.jsonl'), docs)
  plan = _plan(['--input', corpus.pattern, '--output',
                str(tmp_path / 'out' / 'emb')], minilm_export)
  e = estimate.of_plan(plan)
  assert e.complete and e.documents == 43  # 3 bad records are read too
  assert e.tokens == _tokens(plan, docs)
  line = estimate.line(e, max_seq_length=64, long_documents='chunk',
                       nightly=False)
  assert f'43 documents and {_tokens(plan, docs):,} tokens' in line
  assert 'counted: the whole input was read' in line
  assert '7% dead letters' in line  # 3 of 43


def test_compressed_input_scaled_from_its_decompressed_sample(
    tmp_path, minilm_export, small_sample):
  docs = _docs(2400)
  path = tmp_path / 'c.jsonl.gz'
  with gzip.open(path, 'wt', encoding='utf-8') as f:
    f.writelines(json.dumps(d) + '\n' for d in docs)
  plan = _plan(['--input', str(path), '--output',
                str(tmp_path / 'out' / 'emb')], minilm_export)
  e = estimate.of_plan(plan)
  # 48 KB of a file of some 900 KB decompressed: scaled by the gzip ratio
  # the sample saw, within 10%.
  assert not e.documents_exact
  assert abs(e.documents - len(docs)) <= 0.10 * len(docs), e.documents
  tokens = _tokens(plan, docs)
  assert abs(e.tokens - tokens) <= 0.20 * tokens, (e.tokens, tokens)


def test_empty_input(tmp_path, minilm_export):
  path = tmp_path / 'empty.jsonl'
  path.write_bytes(b'')
  plan = _plan(['--input', str(path), '--output',
                str(tmp_path / 'out' / 'emb')], minilm_export)
  e = estimate.of_plan(plan)
  assert (e.documents, e.tokens, e.sampled) == (0, 0, 0)
  assert estimate.line(e, max_seq_length=64, long_documents='truncate',
                       nightly=False) == (
      'plan: 0 bytes in 1 file, 0 documents and 0 tokens (counted: the '
      'whole input was read)')


def _day2(docs, changed_every: int) -> tuple[list, int]:
  """Every changed_every-th text changed, and 5 new documents: the new
  day's documents and how many of them a nightly run embeds."""
  day2 = [dict(d, text=d['text'] + ' (revised)') if i % changed_every == 0
          else d for i, d in enumerate(docs)]
  day2 += [dict(d, id=f'new-{i}') for i, d in enumerate(_docs(5))]
  return day2, len(docs[::changed_every]) + 5


def test_nightly_share_against_a_previous_output(tmp_path, capsys,
                                                 minilm_export, monkeypatch):
  docs = _docs(120)
  day1 = _write(tmp_path / 'day1.jsonl', docs)
  out1 = str(tmp_path / 'day1' / 'emb')
  assert run.main(['--input', day1, '--output', out1, '--model_dir',
                   minilm_export, '--max_seq_length', '64']) == 0
  day2, embedded = _day2(docs, 10)
  second = _write(tmp_path / 'day2.jsonl', day2)
  argv = ['--input', second, '--output', str(tmp_path / 'day2' / 'emb'),
          '--previous', out1]
  plan = _plan(argv, minilm_export)
  e = estimate.of_plan(plan)
  # Every document sampled: the share is the decision's own, exactly.
  assert e.changed_of == len(day2)
  assert e.changed_share == pytest.approx(embedded / len(day2))
  line = estimate.line(e, max_seq_length=64, long_documents='truncate',
                       nightly=True)
  changed = [d for i, d in enumerate(day2) if i % 10 == 0 or i >= 120]
  assert len(changed) == embedded
  to_embed = _tokens(plan, changed)
  assert e.changed_tokens == pytest.approx(to_embed)
  assert line.endswith(f'; nightly: about {round(100 * embedded / 125)}% '
                       f'new or changed (of {len(day2)} sampled), about '
                       f'{estimate.tokens_shown(to_embed)} tokens to embed')
  # Another max_seq_length is another model fingerprint: all re-embedded.
  e = estimate.of_plan(launch.plan_from_argv(
      argv + ['--model_dir', minilm_export, '--max_seq_length', '32']))
  assert e.changed_share == 1
  # A previous output in files too large to read at launch: said.
  monkeypatch.setattr(estimate, 'PREVIOUS_FILE_BYTES', 1000)
  e = estimate.of_plan(_plan(argv, minilm_export))
  assert e.changed_share is None
  assert 'unknown for file outputs over 1.0 KB' in estimate.line(
      e, max_seq_length=64, long_documents='truncate', nightly=True)
  capsys.readouterr()


def test_nightly_share_from_a_postgres_table(tmp_path, capsys, minilm_export,
                                             small_sample):
  """A table is looked up by the sampled ids only."""
  from tests import postgres
  docs = _docs(600)
  day1 = _write(tmp_path / 'day1.jsonl', docs)
  with postgres.running() as server:
    table = server.uri('emb')
    assert run.main(['--input', day1, '--output', table, '--model_dir',
                     minilm_export, '--max_seq_length', '64']) == 0
    day2, embedded = _day2(docs, 4)
    second = _write(tmp_path / 'day2.jsonl', day2)
    e = estimate.of_plan(_plan(['--input', second, '--output', table,
                                '--previous', table], minilm_export))
  share = embedded / len(day2)
  # A sample of some 200 of 605 documents: within 10 points of 26%.
  assert e.changed_of < len(day2)
  assert abs(e.changed_share - share) <= 0.10, (e.changed_share, share)
  capsys.readouterr()


def test_nightly_share_from_a_bigquery_table():
  """The sampled ids' previous records, by one query (IN UNNEST)."""
  from transforms import backends
  from transforms import records
  docs = [Document(f'd{i}', f'text {i}', None, 'x') for i in range(40)]
  with emulators.running(bigquery=True, datasets=['ds']) as (_, client):
    from google.cloud import bigquery
    table = f'{emulators.PROJECT}.ds.prev'
    client.create_table(bigquery.Table(table, schema=[
        bigquery.SchemaField(name, 'STRING') for name in
        ('id', 'content_hash', 'model_fingerprint')]))
    # d0-d29 as they were, d30-d34 changed since, d35-d39 new.
    assert not client.insert_rows_json(table, [
        {'id': d.id, 'model_fingerprint': 'f',
         'content_hash': d.content_hash if i < 30 else 'old'}
        for i, d in enumerate(docs[:35])])
    previous = backends.existing(f'bq://{table}', record=records.EMBEDDINGS)
    embeds, why = estimate.changed_share(docs, previous, 'f')
    assert why == ''
    assert sorted(int(d.id[1:]) for d in docs if id(d) in embeds) == list(
        range(30, 40))
    # Another model: every document.
    embeds, _ = estimate.changed_share(docs, previous, 'g')
    assert len(embeds) == 40


def test_gs_input_and_the_dataflow_dry_run_line(tmp_path, capsys,
                                                minilm_export, small_sample):
  docs = _docs(1500)
  with emulators.running():
    for i in range(4):
      emulators.upload_bytes(''.join(json.dumps(d) + '\n'
                                     for d in docs[i::4]).encode(),
                             f'gs://bucket/corpus/part-{i}.jsonl')
    emulators.upload_folder(minilm_export, 'gs://bucket/model')
    argv = ['--input', 'gs://bucket/corpus/*.jsonl', '--output',
            str(tmp_path / 'out' / 'emb')]
    plan = _plan(argv, minilm_export)
    e = estimate.of_plan(plan)
    assert e.files == 4
    assert abs(e.documents - len(docs)) <= 0.05 * len(docs), e.documents
    tokens = _tokens(plan, docs)
    assert abs(e.tokens - tokens) <= 0.15 * tokens, (e.tokens, tokens)
    # A Dataflow dry run prints the line (the model and sample on gs://).
    status, _, _ = run.launch([
        '--runner', 'DataflowRunner', '--project', emulators.PROJECT,
        '--region', 'us-central1', '--temp_location', 'gs://bucket/tmp',
        '--input', 'gs://bucket/corpus/*.jsonl', '--output',
        'gs://bucket/out/emb', '--model_dir', 'gs://bucket/model',
        '--max_seq_length', '64', '--dry_run', 'True'])
    err = capsys.readouterr().err
    assert status == 0, err
    lines = [x for x in err.splitlines() if x.startswith('plan: ')]
    assert len(lines) == 1, err
    assert ' in 4 files, about ' in lines[0] and ' tokens (' in lines[0]


def test_bigquery_table_rows_from_metadata_and_a_query_said(tmp_path,
                                                           minilm_export):
  docs = _docs(1500)
  with emulators.running(bigquery=True, datasets=['ds']) as (_, client):
    from google.cloud import bigquery
    client.create_table(bigquery.Table(f'{emulators.PROJECT}.ds.src', schema=[
        bigquery.SchemaField('id', 'STRING'),
        bigquery.SchemaField('text', 'STRING')]))
    assert not client.insert_rows_json(
        f'{emulators.PROJECT}.ds.src',
        [{'id': d['id'], 'text': d['text']} for d in docs])
    out = ['--output', str(tmp_path / 'out' / 'emb')]
    plan = _plan(['--input', f'bq://{emulators.PROJECT}.ds.src', *out],
                 minilm_export)
    e = estimate.of_plan(plan)
    # The row count is the table's; tokens from its first 1,000 rows.
    assert e.documents == 1500 and e.documents_exact and e.sampled == 1000
    tokens = _tokens(plan, docs)
    assert abs(e.tokens - tokens) <= 0.15 * tokens, (e.tokens, tokens)
    line = estimate.line(e, max_seq_length=64, long_documents='truncate',
                         nightly=False)
    assert line.startswith('plan: 1,500 documents and about ')
    query = f'SELECT id, text FROM `{emulators.PROJECT}.ds.src`'
    e = estimate.of_plan(_plan(['--input_query', query, *out],
                               minilm_export))
  assert e.documents is None
  assert estimate.line(e, max_seq_length=64, long_documents='truncate',
                       nightly=False) == (
      'plan: size unknown; --input_query scans 0 bytes (BigQuery\'s dry '
      'run); its rows are not known before it runs')


def test_no_line_for_a_local_run(tmp_path, capsys, minilm_export):
  corpus = _write(tmp_path / 'c.jsonl', _docs(5))
  assert run.main(['--input', corpus, '--output',
                   str(tmp_path / 'out' / 'emb'), '--model_dir',
                   minilm_export]) == 0
  assert 'plan: ' not in capsys.readouterr().err


def test_figures_shown():
  assert [estimate.about(n) for n in (7, 99.6, 2552.3, 310_449)] == [
      '7', '100', '2,600', '310,000']
  assert [estimate.tokens_shown(n) for n in (950, 95e6, 1.23e6, 2.5e9)] == [
      '950', '95 M', '1.2 M', '2.5 G']


def test_files_spread_through_the_listing():
  assert estimate._spread(list(range(10)), 3) == [0, 4, 9]
  assert estimate._spread([1, 2], 8) == [1, 2]
