"""What a person sees: a quiet run (one line saying what it will do,
progress, the summary), progress lines that count up to the summary's
numbers, and one line per error with no traceback unless --verbose."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys

import pytest

from pipeline import run
from tests import corpora
from tests import helpers

ROOT = corpora.ROOT


def _number(text):
  return int((text or '0').replace(',', ''))


def test_quiet_run_prints_what_it_does_progress_and_the_summary(
    tmp_path, minilm_export):
  """stderr is a pipe here, so progress comes as lines (every second with
  --progress_every 1). The sample corpus with one malformed line added."""
  corpus = tmp_path / 'corpus.jsonl'
  shutil.copy(corpora.SAMPLE, corpus)
  with open(corpus, 'a', encoding='utf-8') as f:
    f.write('{"id": "broken", "text": \n')
  out = str(tmp_path / 'out' / 'emb')
  proc = subprocess.run(
      [sys.executable, '-m', 'pipeline.run', '--model_dir', minilm_export,
       '--input', str(corpus), '--output', out, '--progress_every', '1'],
      cwd=ROOT, capture_output=True, text=True, timeout=900,
      env={k: v for k, v in os.environ.items()
           if k not in ('TF_CPP_MIN_LOG_LEVEL', 'BEAM_TEXT_EMBED_QUIET')})
  summary = helpers.command_summary(proc)
  lines = proc.stderr.strip().splitlines()
  # One line saying what it is about to do.
  size = os.path.getsize(corpus)
  assert lines[0] == (
      f'embedding {corpus} (1 file, {size / 1000:.1f} KB) with '
      f'{os.path.basename(minilm_export)} on CPU, fp32, into '
      f'{out}-*.tfrecord')
  # Nothing else but progress: no TensorFlow or Beam start-up lines.
  progress = [helpers.PROGRESS.match(line) for line in lines[1:]]
  assert all(progress), [line for line, m in zip(lines[1:], progress)
                         if not m]
  counts = [tuple(_number(m.group(g)) for g in ('read', 'embedded',
                                                 'rejected'))
            for m in progress]
  assert len(counts) >= 5
  for before, after in zip(counts, counts[1:]):
    assert all(b <= a for b, a in zip(before, after)), (before, after)
  embedded = [c[1] for c in counts]
  # Counts rise while the run goes on, not only at the end.
  assert len(set(embedded[:-1]) - {0}) >= 2, embedded
  # The last line is the summary's numbers.
  assert counts[-1] == (summary['documents_read'],
                        summary['documents_embedded'],
                        summary['documents_rejected']) == (2654, 2653, 1)
  assert _number(progress[-1].group('tokens_s')) > 0
  # Input bytes read, then an ETA once documents are being embedded.
  percents = [int(m.group('input')) for m in progress if m.group('input')]
  assert percents and percents == sorted(percents) and percents[-1] == 100
  assert any(m.group('eta') for m in progress)


def test_live_progress_is_off_on_a_beam_version_it_was_not_written_for(
    tmp_path, capsys, monkeypatch, minilm_export):
  """The FnApiRunner progress source reads Beam internals of the versions
  it names; with any other (here: its list swapped for one Beam is not),
  the run completes with one warning and no progress line."""
  import apache_beam
  from pipeline import fnapi_progress
  monkeypatch.setattr(fnapi_progress, 'WRITTEN_FOR', ('0.0.1',))
  docs = corpora.sample_docs(30)
  corpus = corpora.write_jsonl(str(tmp_path / 'c.jsonl'), docs)
  assert run.main(['--input', corpus.pattern, '--model_dir', minilm_export,
                   '--output', str(tmp_path / 'out' / 'emb'),
                   '--progress_every', '1']) == 0
  captured = capsys.readouterr()
  lines = captured.err.splitlines()
  warnings = [line for line in lines if 'live progress is off' in line]
  assert warnings == [
      'warning: live progress is off: pipeline/fnapi_progress.py reads '
      'FnApiRunner internals of Beam 0.0.1, and this is Beam '
      f'{apache_beam.__version__} (the run and its summary are unaffected)']
  assert not [line for line in lines if line.startswith('progress ')]
  summary = helpers.summary_of(captured.out)
  assert summary['documents_embedded'] == len(docs)
  assert summary['documents_rejected'] == len(corpus.bad_types)
  assert summary['reconciled'] is True


def _error_lines(capsys, argv):
  status = run.main(argv)
  err = capsys.readouterr().err
  return status, [line for line in err.splitlines() if line.strip()]


@pytest.fixture(name='common')
def _common(tmp_path, minilm_export):
  corpus = corpora.write_jsonl(str(tmp_path / 'c.jsonl'),
                               corpora.sample_docs(5))
  return ['--model_dir', minilm_export, '--input', corpus.pattern,
          '--output', str(tmp_path / 'out' / 'emb')]


def _tfrecord_corpus(prefix: str) -> str:
  corpora.write_tfrecord(prefix + '-00000-of-00001.tfrecord',
                         corpora.sample_docs(2))
  return prefix


@pytest.mark.parametrize('case', [
    'misspelt flag', 'misspelt switch', 'abbreviated flag', 'stray word',
    'unwritable output', 'unwritable report', 'report is a folder',
    'colour field not in the output',
    'input matches nothing', 'zip input', 'zip among the inputs',
    'bad rejection limit', 'previous missing', 'previous not an output',
    'model folder missing',
    'model folder incomplete', 'bad choice'])
def test_each_launch_error_is_one_line_with_status_2(case, common, tmp_path,
                                                      capsys, minilm_export):
  blocker = tmp_path / 'a-file'
  blocker.write_text('not a folder')
  (tmp_path / 'in').mkdir()
  for name in ('a.jsonl', 'b.zip'):
    (tmp_path / 'in' / name).write_text('{"id": 1, "text": "x"}\n')
  (tmp_path / 'corpus.jsonl.zip').write_bytes(b'PK\x03\x04')
  incomplete = tmp_path / 'incomplete'
  shutil.copytree(minilm_export, incomplete,
                  ignore=shutil.ignore_patterns('encoder'))
  argv, want = {
      'misspelt flag': (
          ['--max_seq_lenght', '256'],
          'unknown flag --max_seq_lenght; did you mean --max_seq_length?'),
      'misspelt switch': (
          ['--normalise'],
          'unknown flag --normalise; did you mean --normalize?'),
      'abbreviated flag': (
          ['--max_seq', '64'],
          'unknown flag --max_seq; did you mean --max_seq_length?'),
      'stray word': (
          ['256'], "unexpected argument '256': flags take the form --name "
          'value or --name=value'),
      'unwritable output': (
          ['--output', f'{blocker}/out/emb'],
          f'cannot write embeddings {blocker}/out/emb: Not a directory'),
      'unwritable report': (
          ['--report', f'{blocker}/report.html'],
          f'cannot write the report {blocker}/report.html: {blocker} is a '
          'file, not a folder'),
      'colour field not in the output': (
          ['--report', f'{tmp_path}/r.html', '--report_color_field', 'lang'],
          '--report_color_field lang is not one of --metadata_fields'),
      'report is a folder': (
          ['--report', str(tmp_path)],
          f'--report {tmp_path}: give the path of an HTML file'),
      'input matches nothing': (
          ['--input', f'{tmp_path}/nothing/*.jsonl'],
          f'--input {tmp_path}/nothing/*.jsonl matches no files'),
      'zip input': (
          ['--input', f'{tmp_path}/corpus.jsonl.zip'],
          f'{tmp_path}/corpus.jsonl.zip: .zip archives are not read; '
          'extract the files, or compress each one with gzip, bzip2, xz or '
          'zstd'),
      'zip among the inputs': (
          ['--input', f'{tmp_path}/in/*', '--input_format', 'jsonl'],
          f'{tmp_path}/in/b.zip: .zip archives are not read'),
      'bad rejection limit': (
          ['--max_rejected', 'some'],
          "argument --max_rejected: 'some' is neither a count (10) nor a "
          'percentage (0.5%)'),
      'previous missing': (
          ['--previous', f'{tmp_path}/never'],
          f'--previous: {tmp_path}/never is not an output of this job: it '
          'matches no'),
      'previous not an output': (
          ['--previous', _tfrecord_corpus(f'{tmp_path}/corpus')],
          f'--previous {tmp_path}/corpus: {tmp_path}/corpus-00000-of-00001'
          '.tfrecord is not an output of this job (no embedding field)'),
      'model folder missing': (
          ['--model_dir', f'{tmp_path}/no-model'],
          f'--model_dir {tmp_path}/no-model does not exist'),
      'model folder incomplete': (
          ['--model_dir', str(incomplete)],
          f'{incomplete}/encoder is not a SavedModel folder (no '
          'saved_model.pb)'),
      'bad choice': (
          ['--pooling', 'max'],
          "argument --pooling: invalid choice: 'max' (choose from 'mean', "
          "'pooled', 'cls')"),
  }[case]
  status, lines = _error_lines(capsys, common + argv)
  assert status == 2
  assert len(lines) == 1, lines
  assert lines[0].startswith(f'pipeline.run: error: {want}'), lines[0]
  written = [f for _, _, files in os.walk(tmp_path / 'out') for f in files]
  assert not written, 'nothing written, probe files removed'


def test_verbose_adds_the_traceback(common, tmp_path, capsys):
  status, lines = _error_lines(
      capsys, common + ['--input', f'{tmp_path}/nothing/*.jsonl',
                        '--verbose'])
  assert status == 2
  assert lines[0] == 'Traceback (most recent call last):'
  assert lines[-1] == (f'pipeline.run: error: --input {tmp_path}/nothing/'
                       '*.jsonl matches no files')


def test_an_error_during_the_run_is_one_line_naming_the_file(
    tmp_path, capsys, minilm_export):
  """A .gz file that is not gzip data fails while it is read."""
  bad = tmp_path / 'corpus.jsonl.gz'
  bad.write_bytes(b'\x1f\x8b\x08\x00 not deflate data')
  status, lines = _error_lines(capsys, [
      '--model_dir', minilm_export, '--input', str(bad),
      '--output', str(tmp_path / 'out' / 'emb')])
  assert status == 1
  assert lines[0].startswith(f'embedding {bad} (1 file,')
  # Progress lines may come first on a slow machine (one every 10 s).
  lines = [line for line in lines if not line.startswith('progress ')]
  assert len(lines) == 2, lines
  assert lines[1].startswith(f'pipeline.run: error: file {bad}: zlib.error: '
                             'Error -3 while decompressing data'), lines[1]


def test_quiet_logging_shows_the_jobs_warnings_once_each(capsys):
  """A warning that every batch or worker repeats is shown once; INFO
  chatter of the job's steps and of libraries is not shown."""
  from pipeline import console
  console.configure(verbose=False)
  for _ in range(3):
    logging.getLogger('transforms.embed').warning(
        'Batch of %d failed; retrying one by one', 4)
  logging.getLogger('transforms.embed').info('Encoder loaded in process 1')
  logging.getLogger('apache_beam.runners').warning('Beam chatter')
  logging.getLogger('pipeline.presets').info('Exporting minilm-l6 (once)')
  assert capsys.readouterr().err.splitlines() == [
      'warning: Batch of 4 failed; retrying one by one',
      'Exporting minilm-l6 (once)']


def test_quiet_run_says_when_it_converts_a_preset(tmp_path, capsys):
  """The first run with a preset converts it (about 20 s here) before the
  line saying what the run will do: a quiet run says so."""
  from pipeline import console, presets
  console.configure(verbose=False)
  out = presets.ensure_exported('minilm-l6', str(tmp_path))
  assert capsys.readouterr().err.splitlines() == [
      f'Converting minilm-l6 into {out} (first use only; cached)']


def test_the_jobs_own_files_are_never_its_input(tmp_path, capsys, caplog,
                                                minilm_export):
  """An --input glob that also matches the last run's output (its dead
  letters, its TFRecord shards, its note: PREFIX.spec.json) reads the
  corpus only, saying so once."""
  folder = tmp_path / 'corpus'
  folder.mkdir()
  corpora.write_jsonl(str(folder / 'c.jsonl'), corpora.sample_docs(20))
  out = f'{folder}/emb'
  argv = ['--model_dir', minilm_export, '--output', out,
          '--progress_every', '0']
  counts = []
  for pattern, fmt, skipped, example in (
      (f'{folder}/*.jsonl', [], 0, None),
      (f'{folder}/*.jsonl', [], 1, f'{out}_dead_letter-00000-of-00001.jsonl'),
      (f'{folder}/*', ['--input_format', 'jsonl'], 3,
       f'{out}-00000-of-00001.tfrecord')):
    caplog.clear()
    assert run.main(argv + ['--input', pattern, *fmt]) == 0
    summary = helpers.summary_of(capsys.readouterr().out)
    counts.append((summary['documents_read'], summary['documents_rejected']))
    # (In a quiet run each warning is one "warning: ..." line on stderr;
    # in this process, pytest's log capture holds it.)
    warnings = [r.getMessage() for r in caplog.records
                if r.getMessage().startswith('skipping')]
    if skipped:
      assert warnings == [
          f'skipping {skipped} file(s) that --input {pattern} matches but '
          f'that are this job\'s own output or dead letters (e.g. '
          f'{example})'], warnings
    else:
      assert not warnings
  # Every night reads the 23 records of the corpus, never its own output.
  assert counts == [(23, 3)] * 3
  assert len(corpora.read_dead_letters(out + '_dead_letter')) == 3
  # A glob that matches nothing else is refused at launch.
  status, lines = _error_lines(capsys,
                               argv + ['--input', f'{out}-*.tfrecord'])
  assert status == 2 and lines[-1] == (
      f'pipeline.run: error: --input {out}-*.tfrecord matches only files of '
      f"this job's own output (1, e.g. {out}-00000-of-00001.tfrecord)")


def test_own_files_are_the_shards_and_temporary_folders_of_the_outputs():
  from transforms.backends import files
  own = files.OwnFiles(('/d/emb', '/d/emb_dead_letter', 'gs://b/x/emb'))
  for path in ('/d/emb-00000-of-00001.tfrecord',
               '/d/emb-00003-of-00010.parquet',
               '/d/emb_dead_letter-00000-of-00001.jsonl',
               '/d/beam-temp-emb-1a2b/4c5d.tfrecord',
               'gs://b/x/emb-00000-of-00002.tfrecord',
               'gs://b/x/beam-temp-emb-99/part'):
    assert path in own, path
  for path in ('/d/emb-v2-00000-of-00001.tfrecord', '/d/emb.jsonl',
               '/d/corpus-00000-of-00001.jsonl', '/d/other/emb-00000-of-1',
               'gs://b/y/emb-00000-of-00002.tfrecord',
               '/d/beam-temp-corpus-1/x'):
    assert path not in own, path
  assert not files.OwnFiles() and '/d/emb-00000-of-00001.tfrecord' not in (
      files.OwnFiles())


@pytest.fixture(name='full_disk')
def _full_disk(tmp_path):
  """A 64 KB file system (tmpfs): the run's output fills it. Mounting
  needs root, which the test machine has; elsewhere the test says why it
  cannot run."""
  folder = tmp_path / 'tiny'
  folder.mkdir()
  mount = subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=64k', 'tmpfs',
                          str(folder)], capture_output=True, text=True)
  if mount.returncode != 0:
    pytest.skip(f'cannot mount a small tmpfs here: {mount.stderr.strip()}')
  try:
    yield folder
  finally:
    # Lazily: the failed run's writer may still hold a file open there.
    subprocess.run(['umount', '-l', str(folder)], check=False)


def test_a_full_disk_is_one_line_naming_the_output(full_disk, tmp_path,
                                                   capsys, minilm_export):
  corpus = corpora.write_jsonl(str(tmp_path / 'c.jsonl'),
                               corpora.sample_docs(60))
  out = f'{full_disk}/emb'
  status, lines = _error_lines(capsys, [
      '--model_dir', minilm_export, '--input', corpus.pattern, '--output',
      out, '--progress_every', '0'])
  assert status == 1
  assert lines[1:] == [
      f'pipeline.run: error: writing embeddings to {out}-*.tfrecord failed: '
      'No space left on device'], lines
  # The failed run removed the temporary shards that filled the disk.
  assert os.listdir(full_disk) == []


def test_a_run_that_succeeds_removes_earlier_runs_temporary_folders(
    tmp_path, capsys, minilm_export):
  """Folders that failed or killed runs of the same outputs left; those of
  another output in the same folder stay."""
  corpus = corpora.write_jsonl(str(tmp_path / 'c.jsonl'),
                               corpora.sample_docs(10))
  out = tmp_path / 'out'
  stale = [out / 'beam-temp-emb-0f1e2d', out / 'beam-temp-emb_dead_letter-9a']
  other = out / 'beam-temp-other-0f1e2d'
  for folder in stale + [other]:
    folder.mkdir(parents=True)
    (folder / 'part.tfrecord').write_bytes(b'partial')
  (out / 'beam-temp-emb-empty').mkdir()
  status, _ = _error_lines(capsys, [
      '--model_dir', minilm_export, '--input', corpus.pattern, '--output',
      str(out / 'emb'), '--progress_every', '0'])
  assert status == 0
  assert sorted(os.listdir(out)) == [
      'beam-temp-other-0f1e2d', 'emb-00000-of-00001.tfrecord',
      'emb.spec.json', 'emb_dead_letter-00000-of-00001.jsonl']
