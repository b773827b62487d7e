"""The Flex Template's parameter list matches the job's flags."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

from tests import corpora
from tests import readme


def test_metadata_is_generated_from_the_flags():
  # docs/dataflow.md's check, as written.
  argv = readme.command('gen_flex_metadata.py', '--check')
  assert argv[0] == '.venv/bin/python'
  proc = subprocess.run([sys.executable, *argv[1:]], cwd=corpora.ROOT,
                        capture_output=True, text=True, timeout=120)
  assert proc.returncode == 0, (
      'flex/metadata.json is stale: run scripts/gen_flex_metadata.py\n' +
      proc.stderr[-2000:])
  with open(os.path.join(corpora.ROOT, 'flex', 'metadata.json'),
            encoding='utf-8') as f:
    spec = json.load(f)
  names = [p['name'] for p in spec['parameters']]
  assert len(names) == len(set(names))
  for must in ('input', 'output', 'previous', 'model_dir', 'require_gpu',
               'on_duplicate_id', 'bq_write_disposition'):
    assert must in names
  # Local-only flags (a report or progress in a launcher container) are not
  # template parameters.
  assert not {'report', 'progress_every', 'report_color_field'} & set(names)
  assert 'verbose' in names
  by_name = {p['name']: p for p in spec['parameters']}
  assert not by_name['output']['isOptional']
  assert all(p['helpText'] for p in spec['parameters'])
  # Values a template passes (--name=value) satisfy the regexes and parse.
  assert re.match(by_name['normalize']['regexes'][0], 'true')
  assert re.match(by_name['precision']['regexes'][0], 'bf16')
  assert not re.match(by_name['precision']['regexes'][0], 'fp64')


def test_template_style_flags_parse():
  from apache_beam.options.pipeline_options import PipelineOptions

  from pipeline.beam_options import EmbedOptions
  o = PipelineOptions(['--input=gs://b/c.jsonl', '--output=gs://b/o',
                       '--normalize=true', '--require_gpu=false',
                       '--large_model']).view_as(EmbedOptions)
  assert (o.normalize, o.require_gpu, o.large_model) == (True, False, True)
