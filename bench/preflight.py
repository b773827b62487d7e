"""Each preflight case as a user meets it: docs/dataflow.md's GPU command,
run as a command (a new process, the quiet console), with one thing wrong,
and the line it prints with its wall time (Python, Beam and TensorFlow's
imports included).

  .venv/bin/python bench/preflight.py [--smoke]

Swaps, as in tests/test_preflight.py: Cloud Storage and BigQuery are the
local emulators, Dataflow is tests/dataflow_standin.py (on 127.0.0.1,
through Beam's --dataflow_endpoint), and the commands run with
--preflight_only, so nothing is submitted. --smoke runs two cases. The last
line is one JSON object: case -> {status, seconds, line}.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tests import corpora
from tests import dataflow_standin
from tests import emulators
from tests import readme


def gpu_command(endpoint: str) -> list[str]:
  argv = readme.fill(readme.command('DataflowRunner', 'worker_accelerator'),
                     MY_PROJECT=emulators.PROJECT, MY_BUCKET='bucket')[3:]
  return argv + ['--dataflow_endpoint', endpoint, '--preflight_only']


def _with(argv: list[str], flag: str, value: str) -> list[str]:
  out = list(argv)
  out[out.index(flag) + 1] = value
  return out


def cases(argv: list[str], work: str) -> dict:
  """Case name -> (argv, environment changes; None removes a variable)."""
  no_credentials = {'GOOGLE_APPLICATION_CREDENTIALS': None,
                    'NO_GCE_CHECK': None, 'HOME': work,
                    'CLOUDSDK_CONFIG': os.path.join(work, 'gcloud')}
  image = argv[argv.index('--sdk_container_image') + 1]
  return {
      'all checks pass': (argv, {}),
      'no credentials': (argv, no_credentials),
      'key file missing': (argv, {'GOOGLE_APPLICATION_CREDENTIALS':
                                  os.path.join(work, 'key.json')}),
      'another project': (_with(argv, '--project', 'other-project'), {}),
      'no --temp_location': (readme.drop_flags(argv, '--temp_location'), {}),
      'temp bucket missing': (_with(argv, '--temp_location',
                                    'gs://no-such-bucket/tmp'), {}),
      'dataset missing': (_with(argv, '--output',
                                f'bq://{emulators.PROJECT}.nodata.docs'), {}),
      'model folder without export.json': (
          _with(argv, '--model_dir', 'gs://bucket/models/incomplete'), {}),
      'image of another Beam': (_with(argv, '--sdk_container_image',
                                      image.rsplit(':', 1)[0] + ':2.60.0'),
                                {}),
  }


def run_case(argv: list[str], changes: dict) -> dict:
  env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
  for name, value in changes.items():
    if value is None:
      env.pop(name, None)
    else:
      env[name] = value
  start = time.monotonic()
  proc = subprocess.run([sys.executable, '-m', 'pipeline.run', *argv],
                        cwd=ROOT, env=env, capture_output=True, text=True,
                        timeout=600)
  seconds = time.monotonic() - start
  lines = [line for line in proc.stderr.splitlines() if line.strip()]
  return {'status': proc.returncode, 'seconds': round(seconds, 1),
          'line': lines[-1] if lines else ''}


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--smoke', action='store_true',
                      help='Two cases only (the test suite\'s run).')
  args = parser.parse_args()
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  from pipeline import presets
  with tempfile.TemporaryDirectory() as work:
    export = presets.ensure_exported('minilm-l6',
                                     presets.default_cache_dir())
    with emulators.running(bigquery=True, datasets=('embeddings',)):
      emulators.upload_folder(export, 'gs://bucket/models/roberta-large')
      emulators.upload_folder(os.path.join(export, 'encoder'),
                              'gs://bucket/models/incomplete/encoder')
      emulators.upload_jsonl(corpora.sample_docs(20),
                             'gs://bucket/corpus/part-0.jsonl')
      with dataflow_standin.Standin(project=emulators.PROJECT) as standin:
        table = cases(gpu_command(standin.endpoint), work)
        if args.smoke:
          table = {k: table[k] for k in ('all checks pass', 'no credentials')}
        results = {}
        for name, (argv, changes) in table.items():
          results[name] = run_case(argv, changes)
          r = results[name]
          print(f'{name}: exit {r["status"]} after {r["seconds"]} s\n'
                f'  {r["line"]}', flush=True)
  print(json.dumps(results))
  return 0


if __name__ == '__main__':
  sys.exit(main())
