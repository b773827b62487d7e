"""--report: the static HTML report of a real run, rendered in headless
Chromium.

The report has no JavaScript, so Chromium's --dump-dom of the report alone
would only echo the HTML back. Instead a harness page, written by this test
next to the report, loads it in an iframe and writes what the browser made
of it (each image's id, alt and natural size, the captions and the summary
table) into its own DOM as JSON, which --dump-dom then prints. An image
whose data URI does not decode has naturalWidth 0.
"""

from __future__ import annotations

import collections
import html
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import types

import numpy as np
import pytest

from pipeline import report
from pipeline import run
from tests import corpora
from tests import helpers

CHROMIUM = '/usr/bin/chromium'
BOOTSTRAP = os.path.join(corpora.ROOT, 'scripts', 'bootstrap_browser.sh')
WIDTH, HEIGHT = 1200, 2700
SCREENSHOT_COPY = '/tmp/report-screenshot.png'

HARNESS = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><script>
function inspect(frame) {
  var doc = frame.contentDocument, out = {images: [], captions: {},
                                          summary: {}, missing: null,
                                          nightly: {}};
  for (var img of doc.images) {
    out.images.push({id: img.id, alt: img.alt, complete: img.complete,
                     width: img.naturalWidth, height: img.naturalHeight});
  }
  for (var c of doc.querySelectorAll('figcaption')) {
    out.captions[c.id] = c.textContent;
  }
  for (var row of doc.querySelectorAll('#summary tr')) {
    out.summary[row.querySelector('th').textContent] =
        row.querySelector('td').textContent;
  }
  for (var span of doc.querySelectorAll('span[id^="nightly-"]')) {
    out.nightly[span.id] = span.textContent;
  }
  var missing = doc.getElementById('throughput-missing');
  if (missing) out.missing = missing.textContent;
  document.getElementById('result').textContent = JSON.stringify(out);
}
</script></head><body>
<iframe src="REPORT" width="1200" height="800" onload="inspect(this)"></iframe>
<pre id="result">not loaded</pre>
</body></html>
"""


@pytest.fixture(scope='module')
def chromium() -> str:
  """Chromium, installed by scripts/bootstrap_browser.sh if missing."""
  if not os.access(CHROMIUM, os.X_OK):
    proc = subprocess.run([BOOTSTRAP], capture_output=True, text=True,
                          timeout=900, check=False)
    if not os.access(CHROMIUM, os.X_OK):
      pytest.skip(f'{CHROMIUM} is not installed and {BOOTSTRAP} could not '
                  f'install it: {proc.stderr.strip()[-400:]}')
  return CHROMIUM


def _headless(chromium: str, tmp_path, *args) -> subprocess.CompletedProcess:
  proc = subprocess.run(
      [chromium, '--headless', '--no-sandbox', '--disable-gpu',
       '--disable-dev-shm-usage', '--hide-scrollbars', '--no-first-run',
       f'--user-data-dir={tmp_path / "chromium-profile"}', *args],
      capture_output=True, text=True, timeout=180, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return proc


def _png_size(path: str) -> tuple[int, int]:
  with open(path, 'rb') as f:
    head = f.read(24)
  assert head[:8] == b'\x89PNG\r\n\x1a\n' and head[12:16] == b'IHDR', head
  return struct.unpack('>II', head[16:24])


def _inspect(chromium: str, tmp_path, report_path: str) -> dict:
  """What Chromium made of the report, through the harness page."""
  harness = os.path.join(os.path.dirname(report_path),
                         f'harness-{os.path.basename(report_path)}')
  with open(harness, 'w', encoding='utf-8') as f:
    f.write(HARNESS.replace('REPORT', os.path.basename(report_path)))
  proc = _headless(chromium, tmp_path, '--allow-file-access-from-files',
                   '--virtual-time-budget=10000', '--dump-dom',
                   f'file://{harness}')
  found = re.search(r'<pre id="result">(.*?)</pre>', proc.stdout, re.S)
  assert found, proc.stdout[-2000:]
  text = html.unescape(found.group(1))
  assert text != 'not loaded', 'the harness never saw the report load'
  return json.loads(text)


def _assert_images(seen: dict, expected_ids) -> dict:
  images = {i['id']: i for i in seen['images']}
  assert sorted(images) == sorted(expected_ids), images.keys()
  for image in images.values():
    assert image['complete'], image['id']
    assert image['width'] > 0 and image['height'] > 0, image  # not broken
    assert len(image['alt']) > 20, image  # says what the plot shows
  return images


class _Sample(types.SimpleNamespace):
  pass


def _samples(summary: dict) -> list:
  """Progress samples as a run would take them: steady, then a slowdown."""
  total, seconds = summary['documents_embedded'], summary['seconds']
  out = []
  for i in range(11):
    t = seconds * i / 10
    done = min(total, int(total * (i / 10) ** 1.3))
    out.append(_Sample(seconds=t, documents_read=done, tokens=0,
                       documents_embedded=done, documents_rejected=0))
  return out


def test_report_of_a_run_renders_in_chromium(tmp_path, minilm_export,
                                             chromium, monkeypatch):
  # Documents from many stdlib modules (more `source` values than get their
  # own colour), long ones among them (truncated at 64 tokens), and the
  # corpus helper's three bad records (malformed JSON, empty text, no text).
  docs = corpora.sample_docs(2600)[::13][:200]
  corpus = corpora.write_jsonl(str(tmp_path / 'docs.jsonl'), docs)
  out = str(tmp_path / 'out' / 'emb')
  path = str(tmp_path / 'report' / 'report.html')

  # The samples the run hands the report, to know whether it can plot
  # documents/s over time.
  given = {}
  real_write = report.write

  def spy(target, *, summary, options, samples):
    given.update(options=options, samples=list(samples))
    real_write(target, summary=summary, options=options, samples=samples)

  monkeypatch.setattr(report, 'write', spy)
  status, summary, _ = run.launch([
      '--input', corpus.pattern, '--output', out,
      '--model_dir', minilm_export, '--max_seq_length', '64',
      '--metadata_fields', 'source', '--report', path])
  assert status == 0, summary
  assert summary['documents_embedded'] == len(docs)
  assert summary['documents_rejected'] == len(corpus.bad_types) == 3
  assert summary['documents_truncated'] > 0
  assert os.path.exists(path) and not [
      n for n in os.listdir(os.path.dirname(path)) if n.endswith('.tmp')]
  with open(path, encoding='utf-8') as f:
    page = f.read()
  # One self-contained file: no scripts, nothing fetched.
  assert '<script' not in page.lower()
  assert not re.search(r'(src|href)="(?!data:)', page)

  # Chromium loads every plot.
  seen = _inspect(chromium, tmp_path, path)
  # The run (FnApiRunner, several seconds) took a progress sample every
  # second, so the documents/s plot must be there with the others.
  assert len(given['samples']) >= 2, given['samples']
  images = _assert_images(seen, report.PLOT_IDS)
  assert seen['missing'] is None
  assert images['embedding-map']['width'] > images['buckets']['width']

  # The report's numbers are the run's.
  table = seen['summary']
  assert table['documents_read'] == str(summary['documents_read']) == '203'
  assert table['documents_rejected'] == '3'
  assert table['model'] == summary['model']
  captions = seen['captions']
  assert captions['dead-letters-caption'].startswith(
      f'{summary["documents_rejected"]} dead letters of 3 error types')
  assert (f'{summary["documents_embedded"]} documents in the output; '
          f'{summary["documents_truncated"]} were truncated'
          in captions['token-lengths-caption'])
  assert f'{summary["batches"]} encoder batches' in captions[
      'buckets-caption']
  assert ('all 200 embeddings, coloured by source (10 most frequent values, '
          'the rest as other)' in captions['embedding-map-caption'])

  # The screenshot: the page at the window's size, with real content.
  shot = str(tmp_path / 'report.png')
  _headless(chromium, tmp_path, f'--screenshot={shot}',
            f'--window-size={WIDTH},{HEIGHT}', f'file://{path}')
  assert _png_size(shot) == (WIDTH, HEIGHT)
  assert os.path.getsize(shot) > 150_000
  shutil.copyfile(shot, SCREENSHOT_COPY)

  # With progress samples the documents/s plot is there too (whether or
  # not this runner gave the run any).
  with_samples = str(tmp_path / 'report' / 'with-samples.html')
  report.write(with_samples, summary=summary, options=given['options'],
               samples=_samples(summary))
  seen = _inspect(chromium, tmp_path, with_samples)
  _assert_images(seen, report.PLOT_IDS)
  assert seen['missing'] is None
  assert 'documents/s over the whole run' in seen['captions'][
      'throughput-caption']


def test_report_without_dead_letters_or_metadata(tmp_path, minilm_export):
  """Zero dead letters (an empty dead-letter output) and no field to
  colour by: panels that say so, not errors."""
  corpus = corpora.write_jsonl(str(tmp_path / 'docs.jsonl'),
                               corpora.sample_docs(12), bad=False)
  path = str(tmp_path / 'report.html')
  status, summary, _ = run.launch([
      '--input', corpus.pattern, '--output', str(tmp_path / 'out' / 'emb'),
      '--model_dir', minilm_export, '--report', path])
  assert status == 0 and summary['documents_rejected'] == 0
  with open(path, encoding='utf-8') as f:
    page = f.read()
  assert '<span id="dead-letter-total">0</span> dead letters.' in page
  assert 'alt="There were no dead letters."' in page
  assert 'in one colour: no metadata field to colour by' in page
  for plot_id in ('token-lengths', 'buckets', 'dead-letters',
                  'embedding-map'):
    assert f'<img id="{plot_id}"' in page


def test_report_of_a_nightly_run(tmp_path, minilm_export, chromium):
  """A nightly run (--previous) with changed, new, removed and bad
  documents: the report's panel gives the summary's counts and the
  output's records (this run's by embedded_at), and its rates say they
  count only the documents embedded."""
  from pipeline import read
  docs = corpora.sample_docs(60)
  day1 = corpora.write_jsonl(str(tmp_path / 'day1.jsonl'), docs, bad=False)
  common = ['--model_dir', minilm_export]
  out1 = str(tmp_path / 'day1' / 'emb')
  status, _, _ = run.launch(['--input', day1.pattern, '--output', out1,
                             *common])
  assert status == 0
  changed = {d['id'] for d in docs[::10]}
  gone = {d['id'] for d in docs[1:4]}
  day2 = [dict(d, text=d['text'] + ' (revised)') if d['id'] in changed
          else d for d in docs if d['id'] not in gone]
  day2 += [dict(d, id=f'new-{i}')
           for i, d in enumerate(corpora.sample_docs(3, start=100))]
  corpus = corpora.write_jsonl(str(tmp_path / 'day2.jsonl'), day2)
  out2 = str(tmp_path / 'day2' / 'emb')
  path = str(tmp_path / 'report' / 'nightly.html')
  status, summary, _ = run.launch(['--input', corpus.pattern, '--output',
                                   out2, '--previous', out1, '--report', path,
                                   *common])
  assert status == 0, summary
  fresh = changed | {f'new-{i}' for i in range(3)}
  assert (summary['documents_read'], summary['documents_embedded'],
          summary['documents_reused'], summary['documents_rejected'],
          summary['documents_removed'], summary['records_carried']) == (
              len(day2) + 3, len(fresh), len(day2) - len(fresh), 3,
              len(gone), len(day2) - len(fresh))

  seen = _inspect(chromium, tmp_path, path)
  expected = set(report.PLOT_IDS) | {report.NIGHTLY_ID}
  if seen['missing']:  # a run shorter than two progress samples
    expected.discard('throughput')
  _assert_images(seen, expected)
  panel = seen['nightly']
  figures = {'read': 'documents_read', 'embedded': 'documents_embedded',
             'reused': 'documents_reused', 'rejected': 'documents_rejected',
             'removed': 'documents_removed', 'carried': 'records_carried'}
  assert {name: panel[f'nightly-{name}'] for name in figures} == {
      name: str(summary[key]) for name, key in figures.items()}
  # The records as written: this run's are those of the newest
  # embedded_at, exactly the new and changed documents.
  table = read.load(out2).table
  stamps = table.column('embedded_at').to_pylist()
  ids = table.column('id').to_pylist()
  newest = {i for i, t in zip(ids, stamps) if t == max(stamps)}
  assert newest == fresh
  assert panel['nightly-records'] == str(len(ids)) == str(len(day2))
  assert panel['nightly-records-this-run'] == str(len(newest))
  caption = seen['captions']['nightly-caption']
  assert (f'Rates count only the work done: the {len(fresh)} embedded '
          f'documents, {summary["documents_per_second"]:,.1f} per second'
          in caption), caption
  if 'throughput' in expected:
    assert (f'The embedded rate counts only the work done, the '
            f'{len(fresh)} new or changed documents' in seen['captions'][
                'throughput-caption'])
  assert seen['summary']['documents_per_second'] == str(
      summary['documents_per_second'])


def test_pure_parts_on_edge_cases():
  """The data -> numbers -> figure steps on empty and odd inputs (no run,
  no browser)."""
  import numpy as np
  # PCA: a fixed sample of at most PCA_SAMPLE rows, the same every time.
  vectors = np.random.default_rng(1).normal(size=(2500, 8)).astype('f4')
  rows, points, share = report.pca_2d(vectors)
  again = report.pca_2d(vectors)
  assert len(rows) == report.PCA_SAMPLE == len(set(rows.tolist()))
  assert np.array_equal(rows, again[0]) and np.allclose(points, again[1])
  assert points.shape == (report.PCA_SAMPLE, 2) and share.sum() < 1
  for shape in ((0, 8), (1, 8), (3, 0)):
    rows, points, _ = report.pca_2d(np.zeros(shape, 'f4'))
    assert points.shape == (shape[0], 2)
  # Rates between samples; zero-length intervals skipped.
  samples = [types.SimpleNamespace(seconds=t, documents_embedded=n)
             for t, n in ((0, 0), (2, 10), (2, 10), (4, 40))]
  starts, ends, values = report.rates(samples)
  assert starts.tolist() == [0, 2] and ends.tolist() == [2, 4]
  assert values.tolist() == [5, 15]
  # The 10 most frequent values, ties by name.
  values = [f'v{i}' for i in range(12) for _ in range(12 - i)] + ['a']
  assert report.top_values(values) == [f'v{i}' for i in range(10)]
  assert report.top_values(['b', 'a', None]) == ['(none)', 'a', 'b']
  # Nothing to plot still gives an image.
  for fig in (report.figure_token_lengths({}, 0, 128),
              report.figure_buckets({}, {}),
              report.figure_dead_letters(collections.Counter()),
              report.figure_embedding_map(np.zeros((0, 2)), np.zeros(2),
                                          None, None)):
    assert report.png(fig).startswith(b'\x89PNG')
  # A nightly run into its --previous table keeps its rows in place; a
  # night that embedded nothing has no records of its own.
  data = types.SimpleNamespace(total=10, embedded_at={'t1': 8, 't2': 2})
  night = report.nightly(
      {'documents_read': 10, 'documents_embedded': 2, 'documents_reused': 8,
       'records_carried': 0}, data, types.SimpleNamespace(previous='p'))
  assert (night.in_place, night.records_this_run) == (True, 2)
  night = report.nightly(
      {'documents_read': 10, 'documents_embedded': 0, 'documents_reused': 10,
       'records_carried': 10}, data, types.SimpleNamespace(previous='p'))
  assert (night.in_place, night.records_this_run) == (False, 0)
  assert report.png(report.figure_nightly(night)).startswith(b'\x89PNG')
  assert report.nightly({}, data, types.SimpleNamespace(previous=None)) is None
  # The first night of --previous_if_exists: no earlier output, a full run.
  assert report.nightly(
      {'documents_read': 10, 'documents_embedded': 10,
       'previous': 'none yet at p: full run'}, data,
      types.SimpleNamespace(previous='p')) is None
  assert report.shown_value({'8': 3, '16': [1, None, True]}) == (
      '8: 3, 16: [1, null, true]')


_LOAD_RUN = r'''
import json, resource, sys, types
from pipeline import report
options = types.SimpleNamespace(
    output=sys.argv[1], output_format='auto', dead_letter=None,
    dead_letter_format='auto', metadata_fields=('lang',),
    report_color_field=None)
data = report.load_run(options)
print(json.dumps({
    'total': data.total, 'sampled': len(data.vectors),
    'documents': sum(data.token_counts.values()),
    'truncated': data.truncated, 'colours': sorted(set(data.color_values)),
    'peak_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
'''


def _synthetic_output(prefix: str, n: int, dim: int = 1024) -> None:
  """An output of n records as the job writes them (TFRecord shards),
  without running the job."""
  import datetime
  from transforms import records
  from transforms.backends import tfrecord
  from transforms.codecs import tfrecord as codec
  layout = records.EMBEDDINGS.with_metadata(('lang',))
  rng = np.random.default_rng(n)
  stamp = datetime.datetime(2026, 12, 5, tzinfo=datetime.timezone.utc)
  shards = 4
  for s in range(shards):
    with open(f'{prefix}-{s:05d}-of-{shards:05d}.tfrecord', 'wb') as f:
      for i in range(s, n, shards):
        f.write(codec.frame(tfrecord.to_example_bytes({
            'id': f'doc-{i}', 'embedding': rng.standard_normal(dim, 'f4'),
            'model': 'm', 'pooling': 'mean', 'num_tokens': 5 + i % 100,
            'truncated': i % 10 == 0, 'num_chunks': 1,
            'content_hash': 'h', 'model_fingerprint': 'f',
            'embedded_at': stamp, 'lang': ('en', 'fr')[i % 2]}, layout)))


def test_the_report_reads_a_bounded_sample(tmp_path):
  """load_run's peak memory for an output 10x larger: the vectors of the
  larger one (123 MB) would show if they were all loaded."""
  got = {}
  for n in (3000, 30000):
    prefix = str(tmp_path / str(n) / 'emb')
    os.makedirs(os.path.dirname(prefix))
    _synthetic_output(prefix, n)
    proc = subprocess.run([sys.executable, '-c', _LOAD_RUN, prefix],
                          cwd=corpora.ROOT, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got[n] = helpers.summary_of(proc.stdout)
  for n, data in got.items():
    # Every record counted, PCA_SAMPLE of them kept for the map.
    assert (data['total'], data['documents'], data['truncated']) == (
        n, n, n // 10)
    assert data['sampled'] == report.PCA_SAMPLE
    assert data['colours'] == ['en', 'fr']
  growth = got[30000]['peak_mb'] - got[3000]['peak_mb']
  print(json.dumps({'report_peak_mb': {n: round(d['peak_mb'], 1)
                                       for n, d in got.items()}}))
  assert growth < 40, got
