"""What decides an embedding: one spec, a model identity by content, and one
model copy per worker.

- Every field of EmbeddingSpec changes the fingerprint (fields enumerated,
  so one added later is covered too).
- The same model exported into two folders reuses every vector; another
  export (--special_tokens_in_text text) into the same folder reuses none.
- Exports are readable by other users.
- With --large_model, the worker processes share one encoder (one shared
  model tag) and each tokenizes with its own preprocessor.
- A model folder on gs:// (the GCS emulator) loads through a local copy
  and gives the same records as the local folder.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import stat
import typing

import pytest
from apache_beam.metrics.metric import MetricsFilter

from pipeline import export_model
from pipeline import run
from tests import corpora
from tests import emulators
from tests import helpers
from tfmodels import export
from transforms.spec import EmbeddingSpec

pytestmark = pytest.mark.services


def _changed(field: dataclasses.Field, value):
  choices = field.metadata.get('choices')
  if choices:
    return next(c for c in choices if c != value)
  kind = typing.get_type_hints(EmbeddingSpec)[field.name]
  if kind is bool:
    return not value
  if value is None:
    return 7
  if isinstance(value, int):
    return value + 8
  if isinstance(value, str):
    return value + '-other'
  raise AssertionError(f'no change rule for {field.name}: {kind}')


def test_every_spec_field_changes_the_fingerprint():
  base = EmbeddingSpec(model='savedmodel:abc')
  seen = {base.fingerprint()}
  fields = dataclasses.fields(EmbeddingSpec)
  assert len(fields) >= 7
  for field in fields:
    other = dataclasses.replace(
        base, **{field.name: _changed(field, getattr(base, field.name))})
    assert other.fingerprint() not in seen, field.name
    seen.add(other.fingerprint())
  with pytest.raises(ValueError, match='pooling must be one of'):
    EmbeddingSpec(model='m', pooling='max')



def _modes(folder: str) -> list[tuple[str, int]]:
  out = [(folder, os.stat(folder).st_mode)]
  for root, dirs, files in os.walk(folder):
    out += [(os.path.join(root, n), os.stat(os.path.join(root, n)).st_mode)
            for n in dirs + files]
  return out


def test_identity_by_content_not_by_folder(tmp_path, capsys, minilm_export):
  docs = corpora.sample_docs(30)
  corpus = corpora.write_jsonl(str(tmp_path / 'c.jsonl'), docs, bad=False)
  first = str(tmp_path / 'first' / 'emb')
  helpers.run_job(capsys, ['--input', corpus.pattern, '--output', first,
                           '--model_dir', minilm_export])

  # The same model, exported again into another folder.
  other = str(tmp_path / 'another-cache' / 'minilm-l6')
  assert export_model.main(['minilm-l6', '--out', other]) == 0
  capsys.readouterr()
  assert (export.read_manifest(other)['digest'] ==
          export.read_manifest(minilm_export)['digest'])
  # Readable by other users (a worker image may run as another user).
  for path, mode in _modes(other):
    want = stat.S_IROTH | (stat.S_IXOTH if stat.S_ISDIR(mode) else 0)
    assert mode & want == want, (path, oct(mode))
  again = str(tmp_path / 'again' / 'emb')
  summary = helpers.run_job(capsys, [
      '--input', corpus.pattern, '--output', again, '--model_dir', other,
      '--previous', first])
  assert (summary['documents_reused'], summary['documents_embedded']) == (
      len(docs), 0)

  # Another tokenizer setting exported into that same folder.
  assert export_model.main(['minilm-l6', '--out', other,
                            '--special_tokens_in_text', 'text']) == 0
  capsys.readouterr()
  assert (export.read_manifest(other)['digest'] !=
          export.read_manifest(minilm_export)['digest'])
  changed = str(tmp_path / 'changed' / 'emb')
  summary = helpers.run_job(capsys, [
      '--input', corpus.pattern, '--output', changed, '--model_dir', other,
      '--previous', again])
  assert (summary['documents_reused'], summary['documents_embedded']) == (
      0, len(docs))
  print(json.dumps({'same_model_other_folder_reused': len(docs),
                    'other_export_same_folder_reused': 0}))


def test_large_model_one_shared_encoder_tokenize_in_each_process(
    tmp_path, monkeypatch, minilm_export):
  docs = corpora.sample_docs(160)
  for i in range(8):
    corpora.write_jsonl(str(tmp_path / f'part-{i}.jsonl'),
                        docs[i * 20:(i + 1) * 20], bad=False)
  # Beam's MultiProcessShared keeps one address file per shared model in the
  # worker processes' temp folder: count them there.
  shared = tmp_path / 'tmp'
  shared.mkdir()
  monkeypatch.setenv('TMPDIR', str(shared))
  out = str(tmp_path / 'out' / 'emb')
  status, summary, result = run.launch([
      '--input', str(tmp_path / 'part-*.jsonl'), '--output', out,
      '--model_dir', minilm_export, '--batch_size', '4', '--large_model',
      '--direct_num_workers', '2', '--direct_running_mode',
      'multi_processing'])
  assert status == 0 and summary['documents_embedded'] == len(docs)
  models = [os.path.basename(p) for p in glob.glob(str(shared / '*.address'))
            if not p.endswith('_model_status.address')]
  assert len(models) == 1, models
  assert models[0].startswith('text-embed-encoder-')
  loads = {}
  for d in result.metrics().query(MetricsFilter())['distributions']:
    if d.key.metric.name.endswith('load_model_latency_milli_secs'):
      step = d.key.step.split('/')[1]
      loads[step] = loads.get(step, 0) + d.committed.count
  # Each of the two worker processes loaded its own tokenizer.
  assert loads['Tokenize'] == 2, loads
  print(json.dumps({'shared_models': models, 'loads': loads}))


@pytest.fixture(scope='module')
def gcs():
  with emulators.running() as (emu, _):
    yield emu


def test_gs_model_dir_equals_local(gcs, tmp_path, capsys, minilm_export):
  emulators.upload_folder(minilm_export, 'gs://bucket/models/minilm-l6')
  docs = corpora.sample_docs(20)
  corpus = corpora.write_jsonl(str(tmp_path / 'c.jsonl'), docs)
  local = str(tmp_path / 'local' / 'emb')
  remote = str(tmp_path / 'remote' / 'emb')
  helpers.run_job(capsys, ['--input', corpus.pattern, '--output', local,
                           '--model_dir', minilm_export])
  summary = helpers.run_job(capsys, [
      '--input', corpus.pattern, '--output', remote, '--model_dir',
      'gs://bucket/models/minilm-l6'])
  assert summary['documents_embedded'] == len(docs)
  got = {r['id']: r for r in corpora.read_output(remote)}
  want = {r['id']: r for r in corpora.read_output(local)}
  # Same model by content: same fingerprint, same vectors.
  helpers.assert_same_records(got, want, atol=1e-6)

  # An incomplete folder on gs:// fails at launch, as a local one does.
  emulators.upload_folder(os.path.join(minilm_export, 'preprocessor'),
                          'gs://bucket/models/broken/preprocessor')
  with open(os.path.join(minilm_export, 'export.json'), 'rb') as f:
    emulators.upload_bytes(f.read(), 'gs://bucket/models/broken/export.json')
  assert run.main(['--input', corpus.pattern, '--output', remote,
                   '--model_dir', 'gs://bucket/models/broken']) == 2
  assert ('gs://bucket/models/broken/encoder is not a SavedModel folder '
          '(no saved_model.pb)') in capsys.readouterr().err
