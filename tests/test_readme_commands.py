"""Every shell command in the ```bash blocks of the README and of
docs/*.md, run as written (tests/readme.py reads them).

Each command runs in a subprocess, in a scratch working folder that holds
what the documentation assumes is there (`.venv` and the packages, linked
from this checkout; `corpus/`, `docs.jsonl`). Placeholders (MY_PROJECT,
MY_BUCKET, HF_DIR) are filled in. The swaps, each named where it is made:
- `roberta-large`: a folder of Hugging Face files for roberta-large cannot
  be fetched here; the small RoBERTa that the tests build stands in, under
  the documented folder name;
- tfhub.dev cannot be reached: the TF Hub command is run and must fail with
  the job's clear offline message (exit 2);
- Cloud Storage and BigQuery are the local emulators (tests/emulators.py);
- PostgreSQL at DB_HOST:5432 is a local server with pgvector on a socket
  (tests/postgres.py), its URI put in place of the documented one;
- the Dataflow commands are run by tests/test_dataflow_graph.py (dry run)
  and tests/test_rehearsal.py (PortableRunner), which name their swaps.
Commands that cannot run here at all (docker, gcloud) are listed in
NOT_RUN_HERE with the reason, and the document that holds one says "not run
here" just before its block; a documented command that is in none of the
lists fails this test.
"""

from __future__ import annotations

import ast
import glob
import json
import os
import subprocess

import pytest

from tests import corpora
from tests import emulators
from tests import helpers
from tests import postgres
from tests import readme

pytestmark = pytest.mark.services

ROOT = corpora.ROOT
NOT_RUN_HERE = {
    ('docker', 'build'): 'no Docker engine on this machine',
    ('docker', 'push'): 'no Docker engine or registry access',
    # docs/dataflow.md: the job, its schedule, and the checklist that sets
    # up a Google Cloud project.
    **{command: 'Google Cloud is not reachable' for command in (
        ('gcloud', 'dataflow'), ('gcloud', 'scheduler'),
        ('gcloud', 'services'), ('gcloud', 'storage'),
        ('gcloud', 'projects'), ('gcloud', 'auth'), ('gcloud', 'artifacts'),
        ('gcloud', 'compute'), ('gcloud', 'builds'), ('gcloud', 'iam'),
        ('bq', '--location'))},
}
RUN_ELSEWHERE = {
    ('./run_tests.sh',): '.ci/run (CI) runs it',
    ('python', '-m', 'pipeline.run', '--runner', 'DataflowRunner'):
        'tests/test_dataflow_graph.py and tests/test_rehearsal.py',
    ('.venv/bin/python', 'bench/gpu.py', '--smoke'): 'tests/test_bench_gpu.py',
    ('.venv/bin/python', 'bench/ops.py', '--smoke'):
        'tests/test_bench_throughput.py',
    # The full sizes take about ten minutes; the same script with --smoke
    # runs in the suite.
    ('.venv/bin/python', 'bench/nightly.py'): 'tests/test_bench_nightly.py',
    # The full sizes take minutes; --smoke runs in the suite.
    ('.venv/bin/python', 'bench/same_text.py'):
        'tests/test_bench_same_text.py',
    # Runs with 200 MB and 1 GB texts take minutes and 2 GB of disk; the
    # same script with --smoke runs in the suite.
    ('.venv/bin/python', 'bench/huge_text.py'): 'tests/test_huge_texts.py',
    ('.venv/bin/python', 'scripts/gen_flag_docs.py'): 'tests/test_docs.py',
    # The full sizes take minutes; --smoke runs in the suite.
    ('.venv/bin/python', 'bench/search.py'): 'tests/test_bench_search.py',
}
# How far before a command's block its document must say "not run here".
NOT_RUN_HERE_WITHIN = 600
RUN_HERE = [
    ('./run_local.sh',),
    ('.venv/bin/python', '-m', 'pipeline.run'),
    ('.venv/bin/python', '-m', 'pipeline.export_model'),
    ('.venv/bin/python', '-m', 'pipeline.read'),
    ('.venv/bin/python', '-m', 'pipeline.lease'),
    ('.venv/bin/python', '-m', 'pipeline.search'),
    ('.venv/bin/python', '-m', 'pipeline.query'),
    ('.venv/bin/python', 'scripts/gen_flex_metadata.py'),
    ('.venv/bin/python', 'flex/launch_local.py'),
    ('.venv/bin/pip', 'install'),
    ('psql',),
]
# Run by name here (with the flags of its example), not found with
# readme.command(); every other command run here is.
RUN_BY_NAME = [('./run_local.sh',)]


def _kind(argv):
  for table in (NOT_RUN_HERE, RUN_ELSEWHERE):
    for prefix in table:
      if tuple(argv[:len(prefix)]) == prefix:
        return table
  for prefix in RUN_HERE:
    if tuple(argv[:len(prefix)]) == prefix:
      return RUN_HERE
  return None


def _readme_calls() -> dict:
  """Every readme.command(...) call with literal arguments in tests/*.py:
  (file, line) -> the documented command it finds (it raises unless it
  finds exactly one)."""
  found = {}
  for path in sorted(glob.glob(os.path.join(ROOT, 'tests', '*.py'))):
    with open(path, encoding='utf-8') as f:
      tree = ast.parse(f.read(), path)
    for node in ast.walk(tree):
      if (isinstance(node, ast.Call) and
          isinstance(node.func, ast.Attribute) and
          node.func.attr == 'command' and
          isinstance(node.func.value, ast.Name) and
          node.func.value.id == 'readme' and node.args and
          all(isinstance(a, ast.Constant) for a in node.args)):
        args = [a.value for a in node.args]
        found[(os.path.relpath(path, ROOT), node.lineno)] = readme.command(
            *args)
  return found


def test_every_readme_command_is_accounted_for():
  blocks = readme.read()
  assert readme.README in readme.files() and len(readme.files()) > 1
  assert {s.path for s in blocks.sources} <= set(readme.files())
  found_by_tests = list(_readme_calls().values())
  used = set()
  for argv, source in zip(blocks.commands, blocks.sources):
    where = os.path.relpath(source.path, ROOT)
    kind = _kind(argv)
    assert kind is not None, f'{where}: command run by no test: {argv}'
    for table in (NOT_RUN_HERE, RUN_ELSEWHERE):
      used.update(p for p in table if tuple(argv[:len(p)]) == p)
    if kind is RUN_HERE and tuple(argv) not in RUN_BY_NAME:
      assert argv in found_by_tests, (
          f'{where}: no test finds this command with readme.command(): '
          f'{argv}')
    if kind is NOT_RUN_HERE:
      # The document marks, next to the command, what this project cannot
      # run.
      assert 'not run here' in ' '.join(readme.text_before(
          source, NOT_RUN_HERE_WITHIN).split()), (
              f'{where}: say "not run here" (and why) just before the block '
              f'of {" ".join(argv[:3])} ...')
  # No entry outlives its command.
  assert used == set(NOT_RUN_HERE) | set(RUN_ELSEWHERE), (
      set(NOT_RUN_HERE) | set(RUN_ELSEWHERE)) - used


def test_every_readme_call_in_the_tests_finds_one_command():
  """Each test's readme.command(...) finds exactly one command in README.md
  and docs/*.md, wherever the command now lives."""
  calls = _readme_calls()
  assert len(calls) >= 10
  for where, argv in calls.items():
    assert argv, where


@pytest.fixture(scope='module')
def workdir(tmp_path_factory, minilm_export, minilm_hf_dir, roberta_hf_dir):
  work = tmp_path_factory.mktemp('readme')
  env = readme.scratch_folder(work, minilm_export)
  for name in ('pipeline', 'transforms', 'tfmodels', 'data'):
    os.symlink(os.path.join(ROOT, name), work / name)
  # The swap for roberta-large's Hugging Face files: a small RoBERTa.
  os.symlink(roberta_hf_dir, work / 'roberta-large')
  (work / 'corpus').mkdir()
  docs = corpora.sample_docs(24)
  corpora.write_jsonl(str(work / 'corpus' / 'a.jsonl'), docs[:12], bad=False)
  corpora.write_jsonl(str(work / 'corpus' / 'b.jsonl'), docs[12:], bad=False)
  corpora.write_jsonl(str(work / 'docs.jsonl'), docs, bad=False)
  return work, env, minilm_hf_dir, roberta_hf_dir, len(docs)


_run, _summary = readme.run, helpers.command_summary


@pytest.fixture(scope='module')
def minilm_converted(workdir):
  """docs/models.md's conversion of minilm-l6 into models/minilm-l6, run
  once (20 s): test_converting_other_models checks its output, and the
  nightly commands read the model from there. Its argv and process."""
  work, env, _, _, _ = workdir
  argv = readme.command('export_model', 'minilm-l6')
  return argv, _run(argv, work, env)


def test_running_the_job(workdir):
  work, env, _, _, n = workdir
  proc = _run(readme.command('pipeline.run', 'corpus/*.jsonl',
                             'out/embeddings'), work, env)
  summary = _summary(proc)
  assert summary['documents_embedded'] == n and summary['reconciled']
  assert len(corpora.read_output(str(work / 'out' / 'embeddings'))) == n


def test_cloud_inputs_and_outputs(workdir, tmp_path):
  """gs:// in, BigQuery out, on the emulators; the command runs in its own
  process, which reaches them through tests/worker_site."""
  work, env, _, _, _ = workdir
  with emulators.running(bigquery=True, datasets=['embeddings']) as (
      emu, client):
    docs = corpora.sample_docs(12)
    corpus = corpora.write_jsonl(str(tmp_path / 'c.jsonl'), docs)
    with open(corpus.pattern, 'rb') as f:
      emulators.upload_bytes(f.read(), 'gs://bucket/corpus/c.jsonl')
    argv = readme.fill(readme.command('pipeline.run', 'gs://MY_BUCKET',
                                      '--metadata_fields'),
                       MY_PROJECT=emulators.PROJECT, MY_BUCKET='bucket')
    summary = _summary(_run(argv, work,
                            dict(env, **emulators.worker_env(emu))))
    assert summary['documents_embedded'] == len(docs)
    assert summary['documents_rejected'] == len(corpus.bad_types)
    rows = [dict(r) for r in client.query(
        f'SELECT id, source FROM `{emulators.PROJECT}.embeddings.docs`'
    ).result()]
    assert sorted((r['id'], r['source']) for r in rows) == sorted(
        (d['id'], d['source']) for d in docs)


def test_postgres_nightly_command(workdir, minilm_converted):
  """The PostgreSQL command of docs/running.md, its URI swapped for the test
  server's: first without --previous (the first night), then as written."""
  work, env, _, _, n = workdir
  assert minilm_converted[1].returncode == 0
  nightly = readme.command('pipeline.run', 'postgresql://', '--previous')
  with postgres.running() as server:
    argv = [server.uri('docs') if a.startswith('postgresql://') else a
            for a in nightly]
    first = _summary(_run(readme.drop_flags(argv, '--previous'), work, env))
    assert first['rows_upserted'] == n and first['reconciled']
    summary = _summary(_run(argv, work, env))
    assert (summary['documents_reused'], summary['rows_upserted'],
            summary['rows_deleted']) == (n, 0, 0)
    with server.connect() as conn:
      assert conn.execute('SELECT count(*) FROM docs').fetchone()[0] == n


def test_tf_hub_command_fails_clearly_offline(workdir):
  work, env, _, _, _ = workdir
  proc = _run(readme.command('pipeline.run', '--preprocessor',
                             'https://tfhub.dev'), work, env)
  assert proc.returncode == 2
  assert 'pipeline.run: error: cannot fetch model https://tfhub.dev' in (
      proc.stderr)
  assert 'Traceback' not in proc.stderr


def test_seed_model_from_hugging_face_files(workdir):
  work, env, _, _, n = workdir
  export = readme.command('pipeline.export_model', 'roberta-large')
  proc = _run(export, work, env)
  assert proc.returncode == 0, proc.stderr[-3000:]
  manifest = helpers.summary_of(proc.stdout)
  assert manifest['tokenizer'] == 'byte-level-bpe'
  assert manifest['max_seq_length'] == 512
  summary = _summary(_run(readme.command(
      'pipeline.run', 'models/roberta-large', 'docs.jsonl'), work, env))
  assert summary['documents_embedded'] == n


def test_converting_other_models(workdir, minilm_converted):
  work, env, minilm_hf_dir, roberta_hf_dir, _ = workdir
  converted = [(*minilm_converted, 'wordpiece')]
  for argv, hf_dir, tokenizer in (
      (readme.command('export_model', 'HF_DIR', 'models/x'), minilm_hf_dir,
       'wordpiece'),
      (readme.command('export_model', 'HF_DIR', 'models/y'), roberta_hf_dir,
       'byte-level-bpe')):
    argv = readme.fill(argv, HF_DIR=hf_dir)
    converted.append((argv, _run(argv, work, env), tokenizer))
  for argv, proc, tokenizer in converted:
    assert proc.returncode == 0, (argv, proc.stderr[-3000:])
    manifest = helpers.summary_of(proc.stdout)
    assert manifest['tokenizer'] == tokenizer
    out = argv[argv.index('--out') + 1]
    assert os.path.exists(work / out / 'encoder' / 'saved_model.pb')


def test_scheduled_re_embedding(workdir, minilm_converted):
  work, env, _, _, n = workdir
  assert minilm_converted[1].returncode == 0
  nightly = readme.command('pipeline.run', '--previous', 'out/2026-11-27')
  previous = nightly[nightly.index('--previous') + 1]
  # The first night: the same command without --previous, to that output.
  first = readme.drop_flags(nightly, '--previous', '--output') + [
      '--output', previous]
  _summary(_run(first, work, env))
  summary = _summary(_run(nightly, work, env))
  assert (summary['documents_reused'], summary['documents_embedded']) == (
      n, 0)
  # A night with bad records beyond --max_rejected 1% (3 of 28): the same
  # command writes everything, then exits 1 with one line.
  extra = work / 'corpus' / 'c.jsonl'
  corpora.write_jsonl(str(extra), corpora.sample_docs(1, start=100))
  try:
    proc = _run(nightly, work, env)
  finally:
    extra.unlink()
  assert proc.returncode == 1, proc.stderr[-3000:]
  summary = helpers.summary_of(proc.stdout)
  assert (summary['documents_read'], summary['documents_reused'],
          summary['documents_embedded'], summary['documents_rejected']) == (
              n + 4, n, 1, 3)
  out = nightly[nightly.index('--output') + 1]
  assert proc.stderr.strip().splitlines()[-1] == (
      f'pipeline.run: error: 3 of {n + 4} documents rejected (10.7%), more '
      'than --max_rejected 1%, most often as empty_text (1 of 3): is '
      "--text_field the field that holds the text? (e.g. field 'text' is "
      'empty or whitespace, in \'{"id": "empty", "text": "   "}\'); dead '
      f'letters in {out}_dead_letter-*.jsonl')
  assert len(corpora.read_dead_letters(str(work / out) + '_dead_letter')
             ) == 3


def test_run_local_and_reading_the_output_back(workdir, tmp_path):
  """./run_local.sh from the README's first block, with the flags of its
  example, then the README's Python snippet that reads the output back.

  One model cache: run_local.sh converts minilm-l6 into it; the README's
  job command and export_model's minilm-l6 without --out then find it
  there and convert nothing (docs/models.md, "The model cache"). The cache
  starts empty: XDG_CACHE_HOME of this test's own."""
  work, env, _, _, n = workdir
  env = dict(env, XDG_CACHE_HOME=str(tmp_path / 'xdg'))
  cache = tmp_path / 'xdg' / 'beam-text-embed' / 'models' / 'minilm-l6'
  proc = subprocess.run(['./run_local.sh', '--normalize'], cwd=ROOT,
                        env=env, capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert f'Converting minilm-l6 into {cache} (first use only' in proc.stderr
  converted = os.stat(cache / 'export.json').st_mtime_ns
  job = _run(readme.command('pipeline.run', 'corpus/*.jsonl',
                            'out/embeddings'), work, env)
  assert _summary(job)['documents_embedded'] == n
  assert 'Converting' not in job.stderr
  export = _run(['.venv/bin/python', '-m', 'pipeline.export_model',
                 'minilm-l6'], work, env)
  assert export.returncode == 0, export.stderr[-3000:]
  assert helpers.summary_of(export.stdout)['out'] == str(
      cache)
  assert os.stat(cache / 'export.json').st_mtime_ns == converted
  summary = json.loads([line for line in proc.stdout.splitlines()
                        if line.startswith('{')][-1])
  assert summary['documents_read'] == 2653 and summary['reconciled']
  assert 'summary' in proc.stdout and 'padding efficiency' in proc.stdout
  with open(readme.README, encoding='utf-8') as f:
    snippet = f.read().split('Reading the output back')[1]
  snippet = snippet.split('```python\n')[1].split('```')[0] + (
      '\nimport json\nimport numpy as np\n'
      'print(json.dumps({"n": len(ids), "shape": '
      'list(vectors.shape), "norm": float(np.linalg.norm(vectors[0]))}))\n')
  proc = subprocess.run([os.path.join(ROOT, '.venv', 'bin', 'python'), '-c',
                         snippet], cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  got = helpers.summary_of(proc.stdout)
  assert got['n'] == 2653 and got['shape'] == [2653, 384]
  assert abs(got['norm'] - 1) < 1e-5  # --normalize took effect
  shown = _run(readme.command('pipeline.read'), ROOT, env)
  assert shown.returncode == 0, shown.stderr[-3000:]
  lines = shown.stdout.strip().splitlines()
  assert lines[-1] == '2653 records, 384-d embeddings' and len(lines) == 3
  offline = subprocess.run(['./run_local.sh', '--model', 'roberta-large'],
                           cwd=ROOT, env=env, capture_output=True, text=True,
                           timeout=300)
  assert offline.returncode == 2
  assert 'cannot fetch model' in offline.stderr
