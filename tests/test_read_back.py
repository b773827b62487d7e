"""The read-back lines of docs/running.md ("Reading the output back"), run
as written on outputs that have dead letters and a run report beside them.

The working folder holds only `.venv` (linked), the corpus (the sample
corpus's first documents and three bad records) and the model cache: the
job and the lines import the project as installed into `.venv`, not from
the folder. The swaps, as in tests/test_readme_commands.py: PostgreSQL at
DB_HOST:5432 is a local server with pgvector on a socket (tests/postgres.py)
and `psql` is the one that comes with it.
"""

from __future__ import annotations

import ast
import glob
import os
import re

import pytest

from tests import corpora
from tests import emulators
from tests import helpers
from tests import postgres
from tests import readme

pytestmark = pytest.mark.services

ROOT = corpora.ROOT
RUNNING_MD = os.path.join(readme.DOCS, 'running.md')
N = 24
BAD = 3  # corpora.write_jsonl's bad records


def _python_blocks() -> dict:
  """The section's ```python blocks, by what each reads with."""
  with open(RUNNING_MD, encoding='utf-8') as f:
    text = f.read()
  section = text.split('\n## Reading the output back\n')[1].split('\n## ')[0]
  blocks = re.findall(r'```python\n(.*?)```', section, flags=re.S)
  named = {}
  for block in blocks:
    name = ('duckdb_arrow' if 'pyarrow.dataset' in block else
            'duckdb' if 'duckdb' in block else
            'pandas' if 'pandas' in block else
            'pyarrow' if 'pyarrow' in block else None)
    assert name and name not in named, block
    named[name] = block
  assert set(named) == {'pandas', 'pyarrow', 'duckdb', 'duckdb_arrow'}
  return named


@pytest.fixture(scope='module')
def work(tmp_path_factory, minilm_export):
  work = tmp_path_factory.mktemp('read_back')
  env = readme.scratch_folder(work, minilm_export)
  (work / 'corpus').mkdir()
  corpus = corpora.write_jsonl(str(work / 'corpus' / 'a.jsonl'),
                               corpora.sample_docs(N))
  assert len(corpus.bad_types) == BAD
  (work / 'models').mkdir()
  os.symlink(minilm_export, work / 'models' / 'minilm-l6')
  return work, env


_run, _summary = readme.run, helpers.command_summary


def _python(block, work, env) -> str:
  proc = _run([str(work / '.venv' / 'bin' / 'python'), '-c', block], work,
              env)
  assert proc.returncode == 0, (block, proc.stderr[-3000:])
  return proc.stdout.strip()


def test_parquet_read_back_lines(work):
  work, env = work
  summary = _summary(_run(readme.command('pipeline.run', '--output_format',
                                         'parquet', 'out/report.html'),
                          work, env))
  assert (summary['documents_embedded'], summary['documents_rejected']) == (
      N, BAD)
  # Beside the shards: the dead letters (Parquet too) and the report.
  assert glob.glob(str(work / 'out' / 'emb_dead_letter-*.parquet'))
  assert os.path.exists(work / 'out' / 'report.html')
  blocks = _python_blocks()
  assert _python(blocks['pandas'], work, env) == f'{N} (384,)'
  assert _python(blocks['pyarrow'], work, env) == (
      f'fixed_size_list<element: float>[384] ({N}, 384)')
  nearest = ast.literal_eval(_python(blocks['duckdb'], work, env))
  assert [i for i, _ in nearest][0] == 'doc-000000' and len(nearest) == 3
  assert abs(nearest[0][1] - 1) < 1e-6
  assert [s for _, s in nearest] == sorted((s for _, s in nearest),
                                           reverse=True)
  assert ast.literal_eval(_python(blocks['duckdb_arrow'], work, env)) == [
      ('FLOAT[384]', N)]


def test_duckdb_install_line_is_the_test_lock(work):
  """The documented install line pins the DuckDB that requirements-test.txt
  holds, and is a no-op in the test environment (no package index asked)."""
  work, env = work
  argv = readme.command('pip', 'install', 'duckdb')
  with open(os.path.join(ROOT, 'requirements-test.txt'),
            encoding='utf-8') as f:
    assert argv[-1] in f.read().splitlines()
  proc = _run(argv, work, dict(env, PIP_NO_INDEX='1'))
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert 'Requirement already satisfied: ' + argv[-1] in proc.stdout


def test_pgvector_line(work):
  """The PostgreSQL run of docs/running.md (its first night: without
  --previous), then the documented psql line on its table."""
  work, env = work
  nightly = readme.command('pipeline.run', 'postgresql://', '--previous')
  pg_bin = os.path.join(emulators.VENV, 'lib', 'python3.11', 'site-packages',
                        'pgserver', 'pginstall', 'bin')
  psql_env = dict(env, PATH=pg_bin + os.pathsep + env['PATH'])
  with postgres.running() as server:
    argv = [server.uri('docs') if a.startswith('postgresql://') else a
            for a in readme.drop_flags(nightly, '--previous')]
    summary = _summary(_run(argv, work, env))
    assert (summary['rows_upserted'], summary['documents_rejected']) == (
        N, BAD)
    database = f'postgresql://postgres@/postgres?host={server.socket_dir}'
    argv = [database if a.startswith('postgresql://') else a
            for a in readme.command('psql')]
    proc = _run(argv, work, psql_env)
  assert proc.returncode == 0, proc.stderr[-2000:]
  lines = proc.stdout.strip().splitlines()
  assert [c.strip() for c in lines[0].split('|')] == [
      'id', 'source', 'distance']
  rows = [[c.strip() for c in line.split('|')] for line in lines[2:-1]]
  assert lines[-1] == '(3 rows)' and len(rows) == 3
  assert rows[0][:2] == ['doc-000000', 'abc'] and abs(float(rows[0][2])) < 1e-6
  distances = [float(r[2]) for r in rows]
  assert distances == sorted(distances)
