"""Writes flex/metadata.json, the Flex Template's parameter list, from the
job's own flags (pipeline/options.py), so the two cannot drift apart.

Usage: .venv/bin/python scripts/gen_flex_metadata.py [--check]
"""

from __future__ import annotations

import argparse
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
OUT = os.path.join(ROOT, 'flex', 'metadata.json')


def metadata() -> dict:
  from pipeline.beam_options import EmbedOptions
  from pipeline.options import LOCAL_ONLY
  parser = argparse.ArgumentParser()
  EmbedOptions._add_argparse_args(parser)
  parameters = []
  for action in parser._actions:
    if not action.option_strings or action.dest == 'help':
      continue
    name = action.option_strings[0].lstrip('-')
    if name in LOCAL_ONLY:
      continue
    help_text = ' '.join((action.help or '').split())
    entry = {'name': name, 'label': name.replace('_', ' '),
             'helpText': help_text,
             'isOptional': name not in ('output',)}
    if action.choices:
      entry['regexes'] = ['^(' + '|'.join(map(str, action.choices)) + ')$']
    if action.const is True:  # on/off flags take =true / =false
      entry['regexes'] = ['^(true|false)$']
    parameters.append(entry)
  return {
      'name': 'beam-text-embed',
      'description': 'Embed a text corpus (files, gs:// or BigQuery) with a '
                     'TF Hub BERT-style model; write TFRecords or BigQuery.',
      'parameters': parameters,
  }


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--check', action='store_true',
                      help='Exit 1 if flex/metadata.json is out of date.')
  args = parser.parse_args()
  text = json.dumps(metadata(), indent=2) + '\n'
  if args.check:
    with open(OUT, encoding='utf-8') as f:
      return 0 if f.read() == text else 1
  with open(OUT, 'w', encoding='utf-8') as f:
    f.write(text)
  return 0


if __name__ == '__main__':
  sys.exit(main())
