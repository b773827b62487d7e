"""`python -m pipeline.run` as a scheduler would call it."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

import tfmodels
from tests import corpora
from tests import helpers

pytestmark = pytest.mark.services

ROOT = corpora.ROOT


def _cli(*args, timeout=600):
  return helpers.run_command(helpers.job_command(*args), timeout=timeout)


def test_help_explains_every_flag():
  proc = _cli('--help')
  assert proc.returncode == 0
  for flag in ('--input', '--input_format', '--id_field', '--text_field',
               '--text_b_field', '--output', '--dead_letter', '--model',
               '--preprocessor', '--encoder', '--pooling', '--normalize',
               '--max_seq_length', '--batch_size', '--num_shards',
               '--model_dir', '--input_query', '--metadata_fields',
               '--on_duplicate_id', '--bq_write_method',
               '--bq_write_disposition'):
    assert flag in proc.stdout
  assert 'minilm-l6' in proc.stdout and 'roberta-large' in proc.stdout


def _imports_of(*args, command='pipeline.run'):
  """The command run with python -X importtime: its result, and the
  top-level packages it imported (the QUIET_ENV of a parent's quiet run
  left out, since it makes tfmodels import TensorFlow)."""
  env = {k: v for k, v in os.environ.items() if k != tfmodels.QUIET_ENV}
  proc = subprocess.run(
      [sys.executable, '-X', 'importtime', '-m', command, *args],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  lines = proc.stderr.splitlines()
  packages = {line.rsplit('|', 1)[1].strip().split('.')[0] for line in lines
              if line.startswith('import time:')}
  proc.stderr = '\n'.join(line for line in lines
                           if not line.startswith('import time:'))
  return proc, packages


@pytest.mark.parametrize('args,status,error', [
    (['--help'], 0, ''),
    (['--max_seq_lenght', '64', '--input', 'a.jsonl', '--output', 'o'], 2,
     'pipeline.run: error: unknown flag --max_seq_lenght; did you mean '
     '--max_seq_length?'),
    (['--input', 'a.jsonl', '--output', 'o', '--runner', 'DataflowRunner',
      '--project', 'p', '--temp_location', 'gs://b/t', '--pooling', 'max'],
     2, "pipeline.run: error: argument --pooling: invalid choice: 'max' "
     "(choose from 'mean', 'pooled', 'cls')"),
])
def test_help_and_flag_errors_come_before_tensorflow_and_beam(args, status,
                                                               error):
  """Answered without importing either (they take seconds to import)."""
  proc, packages = _imports_of(*args)
  assert (proc.returncode, proc.stderr) == (status, error)
  assert not packages & {'tensorflow', 'apache_beam'}
  assert 'pipeline' in packages
  if args == ['--help']:
    assert '--max_seq_length' in proc.stdout


@pytest.mark.parametrize('command,args,status,error', [
    ('pipeline.export_model', ['--help'], 0, ''),
    ('pipeline.export_model', ['bert'], 2,
     'python -m pipeline.export_model: error: bert needs --from HF_DIR'),
    ('pipeline.lease', ['--help'], 0, ''),
])
def test_other_commands_answer_help_before_tensorflow_and_beam(
    command, args, status, error):
  proc, packages = _imports_of(*args, command=command)
  assert proc.returncode == status
  assert proc.stderr.splitlines()[-1:] == ([error] if error else [])
  assert not packages & {'tensorflow', 'apache_beam'}
  assert f'python -m {command}' in proc.stdout + proc.stderr


def test_summary_line_reconciles_counts(tmp_path, minilm_export):
  corpus = corpora.write_jsonl(str(tmp_path / 'c.jsonl'),
                               corpora.sample_docs(25))
  out = str(tmp_path / 'out' / 'emb')
  proc = _cli('--input', corpus.pattern, '--output', out, '--model',
              'minilm-l6', '--model_cache_dir', os.path.dirname(minilm_export))
  summary = helpers.command_summary(proc)
  assert summary['documents_read'] == 28
  assert summary['documents_embedded'] == 25
  assert summary['documents_rejected'] == 3
  assert summary['reconciled'] is True
  assert summary['tokens'] == sum(
      r['num_tokens'] for r in corpora.read_output(out))
  assert summary['documents_per_second'] > 0
  # Token-budget batching: padded tokens computed, per-bucket batch counts.
  assert summary['tokens_computed'] >= summary['tokens']
  assert summary['padding_efficiency'] == round(
      summary['tokens'] / summary['tokens_computed'], 4)
  assert sum(summary['batches_per_bucket'].values()) == summary['batches']
  assert all(int(length) % 8 == 0 and int(length) <= 128
             for length in summary['batches_per_bucket'])
  assert summary['encoder_seconds'] > 0
  # Start-up, from the command's start to its first encoder call: after
  # the imports (more than a second) and within the whole process.
  assert 1 < summary['first_batch_seconds'] < 300
  assert summary['output'] == out + '-*.tfrecord'
  assert len(corpora.read_dead_letters(out + '_dead_letter')) == 3


def test_clear_errors_for_bad_flags(tmp_path, capsys):
  proc = _cli('--input', str(tmp_path / 'corpus.xyz'), '--output',
              str(tmp_path / 'o'), '--model', 'minilm-l6')
  assert proc.returncode == 2
  assert '--input_format' in proc.stderr
  # The same path in this process (main() is what the command runs).
  from pipeline import run
  for flags, message in (
      (['--preprocessor', 'x'],
       '--preprocessor and --encoder must be given together'),
      (['--preprocessor', str(tmp_path), '--encoder', str(tmp_path)],
       'is not a SavedModel folder')):
    assert run.main(['--input', 'a.jsonl', '--output', 'o', *flags]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize('args,message', [
    (['--max_seq_lenght', '5'],
     'unknown flag --max_seq_lenght; did you mean --max_seq_length?'),
    (['--max-seq-lenght=5'],
     'unknown flag --max-seq-lenght; did you mean --max_seq_length?'),
    (['--streeming'], 'unknown flag --streeming; did you mean --streaming?'),
    (['--zzzzqq'], "unknown flag --zzzzqq; python -m pipeline.run --help "
     "lists the job's flags"),
    (['-f', 'x'], 'unknown flag -f;'),
    (['foo'], "unexpected argument 'foo': flags take the form"),
    (['--streaming', 'foo'], "unexpected argument 'foo'"),
    (['--pooling', 'max'], "argument --pooling: invalid choice: 'max'"),
    (['--direct_num_workers', 'abc'],
     "argument --direct_num_workers: invalid int value: 'abc'"),
    (['--direct_running_mode', 'many'],
     "argument --direct_running_mode: invalid choice: 'many'"),
])
def test_every_flag_is_known_and_well_formed(args, message):
  """Job and Beam flags alike, before anything runs; Beam's own flags
  with their values pass."""
  from pipeline.flags import check_flags
  common = ['--input', 'a.jsonl', '--output', 'o']
  check_flags(common + ['--runner', 'DataflowRunner', '--experiments', 'a',
                        '--experiments=b', '--dry_run', 'True',
                        '--direct_num_workers', '2', '--save_main_session'])
  with pytest.raises(ValueError, match=re.escape(message)):
    check_flags(common + args)


@pytest.mark.parametrize('args,message', [
    (['--output', 'o'], 'exactly one of --input and --input_query'),
    (['--input', 'a.jsonl'], '--output is required'),
    (['--input', 'a.jsonl', '--input_query', 'SELECT 1', '--output', 'o'],
     'exactly one of'),
    (['--input', 'bq://p.t', '--output', 'o'], 'bq://PROJECT.DATASET.TABLE'),
    (['--input', 'a.jsonl', '--output', 'bq://p.d'],
     'bq://PROJECT.DATASET.TABLE'),
    (['--input', 'a.jsonl', '--output', 'bq://p.d.t'],
     '--temp_location gs://'),
    (['--input', 'a.jsonl', '--output', 'bq://p.d.t', '--temp_location',
      '/tmp/x'], '--temp_location gs://'),
    (['--input', 'a.jsonl', '--output', 'bq://p.d.t', '--bq_write_method',
      'STREAMING_INSERTS'], 'WRITE_APPEND'),
    (['--input', 'a.jsonl', '--output', 'o', '--dead_letter', 'bq://p.d.t'],
     '--temp_location gs://'),
    (['--input', 'a.jsonl', '--output', 'o', '--metadata_fields',
      'lang,embedding'], 'clash'),
    (['--input', 'a.txt', '--output', 'o', '--metadata_fields', 'lang'],
     'plain text lines have none'),
    (['--input', 'a.jsonl', '--output', 'postgresql://u@h/db'],
     'add ?table=NAME'),
    (['--input', 'a.jsonl', '--output',
      'postgresql://u:secret@h/db?table=bad-name'], 'u:***@h'),
    (['--input', 'a.jsonl', '--output', 'out/'], 'is not a file prefix'),
])
def test_io_flag_errors_are_specific(args, message):
  from apache_beam.options.pipeline_options import PipelineOptions

  from pipeline.beam_options import EmbedOptions
  from pipeline.launch import check_io_flags
  options = PipelineOptions(args)
  with pytest.raises(ValueError, match=re.escape(message)):
    check_io_flags(options.view_as(EmbedOptions))


def test_export_model_command_errors(tmp_path):
  """The README's export commands themselves run in
  tests/test_readme_commands.py."""
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2')
  proc = subprocess.run(
      [sys.executable, '-m', 'pipeline.export_model', 'bert', '--from',
       str(tmp_path), '--out', str(tmp_path / 'n')], cwd=ROOT, env=env,
      capture_output=True, text=True, timeout=600)
  assert proc.returncode == 2
  assert 'has no config.json' in proc.stderr


def test_roberta_export_runs_like_any_model(tmp_path, roberta_export,
                                            capsys):
  """A BPE (RoBERTa) export goes through the same pipeline as WordPiece ones:
  --model_dir, the summary, the records, numbers equal to a direct call."""
  from tfmodels.embedder import EmbeddingModel
  docs = corpora.sample_docs(20)
  docs[3]['text'] = 'Literal <mask> and </s> inside, tabs\tand\u3000spaces.'
  corpus = corpora.write_jsonl(str(tmp_path / 'c.jsonl'), docs)
  out = str(tmp_path / 'out' / 'emb')
  proc = _cli('--input', corpus.pattern, '--output', out, '--model_dir',
              roberta_export, '--max_seq_length', '512')
  summary = helpers.command_summary(proc)
  assert summary['reconciled'] and summary['documents_embedded'] == 20
  records = corpora.read_output(out)
  assert sorted(r['id'] for r in records) == sorted(corpus.good_ids)
  assert {r['model'] for r in records} == {os.path.basename(roberta_export)}
  model = EmbeddingModel.load(os.path.join(roberta_export, 'preprocessor'),
                              os.path.join(roberta_export, 'encoder'),
                              max_seq_length=512)
  corpora.assert_equal_to_direct_call(records, corpus.texts, model)
  # The export's own limit (514 positions, pad id 1: 512 tokens) is checked.
  # These stop before any worker starts: main() in this process, which is
  # what the command runs.
  from pipeline import run
  for flags, message in (
      (['--model_dir', roberta_export, '--max_seq_length', '513'],
       ['more than', '(512)']),
      (['--model_dir', str(tmp_path), '--model', 'minilm-l6'],
       ['--model_dir alone']),
      (['--model_dir', str(tmp_path)], ['no export.json'])):
    assert run.main(['--input', corpus.pattern, '--output', out,
                     *flags]) == 2
    err = capsys.readouterr().err
    assert all(m in err for m in message), (flags, err)


def test_exit_status_for_schedulers(tmp_path, capsys, minilm_export):
  """A night with too many dead letters, or one that embedded nothing,
  exits 1 with one line, after writing everything it could."""
  corpus = corpora.write_jsonl(str(tmp_path / 'c.jsonl'),
                               corpora.sample_docs(25))  # + 3 bad records
  out = str(tmp_path / 'out' / 'emb')
  argv = ['--input', corpus.pattern, '--output', out, '--model_dir',
          minilm_export]
  status, summary, err = helpers.run_main(capsys,
                                          argv + ['--max_rejected', '2'])
  assert status == 1
  # The most frequent error type (ties by name), its count and likely fix,
  # and an example read back from the dead letters.
  assert summary['dead_letters_by_type'] == {
      'empty_text': 1, 'malformed_json': 1, 'missing_text': 1}
  assert err[-1] == (
      'pipeline.run: error: 3 of 28 documents rejected (10.7%), more than '
      '--max_rejected 2, most often as empty_text (1 of 3): is --text_field '
      "the field that holds the text? (e.g. field 'text' is empty or "
      'whitespace, in \'{"id": "empty", "text": "   "}\'); dead letters '
      f'in {out}_dead_letter-*.jsonl')
  # Everything was written before the verdict.
  assert summary['documents_embedded'] == 25 and summary['reconciled']
  assert len(corpora.read_output(out)) == 25
  assert len(corpora.read_dead_letters(out + '_dead_letter')) == 3
  for limit, want in (('3', 0), ('10%', 1), ('10.8%', 0)):
    status, _, _ = helpers.run_main(capsys, argv + ['--max_rejected', limit])
    assert status == want, limit

  # A corpus whose every record is rejected: exit 1 without any limit.
  bad = tmp_path / 'bad.jsonl'
  bad.write_text('{"id": 1, "text": "  "}\n{"id": 2}\nnot json\n',
                 encoding='utf-8')
  status, summary, err = helpers.run_main(capsys, [
      '--input', str(bad), '--output', str(tmp_path / 'bad' / 'emb'),
      '--model_dir', minilm_export])
  assert (status, summary['documents_rejected']) == (1, 3)
  assert err[-1].startswith('pipeline.run: error: no document was embedded '
                            'or reused: all 3 documents read were rejected')

  # A limit that is neither a count nor a percentage: refused at launch.
  for limit in ('abc', '-1', '150%'):
    status, summary, err = helpers.run_main(capsys, argv + ['--max_rejected',
                                                            limit])
    assert (status, summary) == (2, None), limit
    assert 'neither a count (10) nor a percentage (0.5%)' in err[-1]


def test_all_rejected_names_the_error_type_and_the_flag(tmp_path,
                                                       minilm_export):
  """A flag wrong rejects every record alike: the failing line names the
  error type with its count, the flag to check, and one dead letter (a
  forgotten --text_field; a CSV read as --input_format jsonl)."""
  import csv
  path = tmp_path / 'docs.csv'
  with open(path, 'w', encoding='utf-8', newline='') as f:
    writer = csv.writer(f)
    writer.writerow(['id', 'body', 'category'])
    writer.writerows([d['id'], d['text'], d['source']]
                     for d in corpora.sample_docs(200))
  common = ['--model_dir', minilm_export, '--progress_every', '0']

  out = str(tmp_path / 'field' / 'emb')
  proc = _cli('--input', str(path), '--output', out, *common)
  assert proc.returncode == 1, proc.stderr[-2000:]
  assert helpers.summary_of(proc.stdout)[
      'dead_letters_by_type'] == {'missing_text': 200}
  last = proc.stderr.strip().splitlines()[-1]
  assert last.startswith(
      'pipeline.run: error: no document was embedded or reused: all 200 '
      'documents read were rejected, all as missing_text (200): is '
      "--text_field right? (e.g. field 'text' is missing or null; the "
      "record's fields: id, body, category, in 'doc-"), last
  assert last.endswith(f"'); dead letters in {out}_dead_letter-*.jsonl")

  out = str(tmp_path / 'format' / 'emb')
  proc = _cli('--input', str(path), '--output', out, '--input_format',
              'jsonl', *common)
  assert proc.returncode == 1, proc.stderr[-2000:]
  assert proc.stderr.strip().splitlines()[-1] == (
      'pipeline.run: error: no document was embedded or reused: all 201 '
      'documents read were rejected, all as malformed_json (201): is the '
      'input JSON lines? If not, give its format with --input_format (e.g. '
      "Expecting value: line 1 column 1 (char 0), in 'id,body,category'); "
      f'dead letters in {out}_dead_letter-*.jsonl')


def test_failure_reasons():
  from pipeline import summary
  good = {'documents_read': 10, 'documents_embedded': 6,
          'documents_reused': 2, 'documents_rejected': 2,
          'records_carried': 2, 'reconciled': True, 'dead_letter': 'D'}
  assert summary.failure(good, None) is None
  assert summary.failure(good, '2') is None
  assert summary.failure(good, '20%') is None
  assert 'more than --max_rejected 1' in summary.failure(good, '1')
  assert 'more than --max_rejected 19.9%' in summary.failure(good, '19.9%')
  nothing = dict(good, documents_embedded=0, documents_reused=0,
                 documents_rejected=10)
  assert summary.failure(nothing, None).startswith('no document was embedded')
  # An empty corpus is not a failure here (the launcher refuses no files).
  empty = dict(nothing, documents_read=0, documents_rejected=0)
  assert summary.failure(empty, None) is None
  unreconciled = dict(good, reconciled=False)
  assert 'do not reconcile' in summary.failure(unreconciled, None)
  # The most frequent error type and its fix; none for a type without a
  # likely flag; an example only from dead letters that can be read.
  typed = dict(nothing, dead_letters_by_type={'bad_id': 7, 'empty_text': 3})
  assert summary.failure(typed, None) == (
      'no document was embedded or reused: all 10 documents read were '
      'rejected, most often as bad_id (7 of 10): is --id_field right? An id '
      'must be a string or an integer; dead letters in D')
  model = dict(nothing, dead_letters_by_type={'embed_error:ValueError': 10})
  assert summary.failure(model, None).endswith(
      'all as embed_error:ValueError (10); dead letters in D')

  class Unreadable:

    def scan(self, names=None):
      raise OSError('gone')

  assert summary.failure(typed, None, Unreadable()) == summary.failure(
      typed, None)
