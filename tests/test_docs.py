"""The documentation: docs/flags.md and the README's main-flags table are
generated from the job's flags and current; the README stays short; links
between the documents resolve."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

from tests import corpora
from tests import readme

ROOT = corpora.ROOT
FLAGS_MD = os.path.join(ROOT, 'docs', 'flags.md')
README_MOST_LINES = 200


def _read(path: str) -> str:
  with open(path, encoding='utf-8') as f:
    return f.read()


def test_flag_docs_are_current():
  proc = subprocess.run(
      [sys.executable, 'scripts/gen_flag_docs.py', '--check'], cwd=ROOT,
      capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, (
      'docs/flags.md, the README\'s main-flags table or '
      'pipeline/beam_flags.py is stale: run '
      '.venv/bin/python scripts/gen_flag_docs.py\n' + proc.stderr[-2000:])


def test_the_documented_generator_command(tmp_path):
  """docs/development.md's command, run as written in a scratch copy of the
  checkout: --check finds the stale files and says how to fix them, and the
  command rewrites them to what is checked in."""
  work = tmp_path / 'checkout'
  (work / 'docs').mkdir(parents=True)
  (work / 'scripts').mkdir()
  for name in ('.venv', 'pipeline', 'transforms', 'tfmodels'):
    os.symlink(os.path.join(ROOT, name), work / name)
  shutil.copy(os.path.join(ROOT, 'scripts', 'gen_flag_docs.py'),
              work / 'scripts')
  readme_text = _read(readme.README)
  # Stale: the main-flags table emptied, docs/flags.md an old version.
  (work / 'README.md').write_text(
      re.sub(r'(<!-- flags:[^>]*-->\n).*?(<!-- /flags -->)', r'\1\2',
             readme_text, flags=re.S), encoding='utf-8')
  (work / 'docs' / 'flags.md').write_text('# Flags\n', encoding='utf-8')
  env = dict(os.environ)
  env.pop('PYTHONPATH', None)
  argv = readme.command('scripts/gen_flag_docs.py')
  check = subprocess.run(argv + ['--check'], cwd=work, env=env,
                         capture_output=True, text=True, timeout=300)
  assert check.returncode == 1
  assert ('docs/flags.md and README.md out of date with the flags of the '
          'job and Beam: run .venv/bin/python scripts/gen_flag_docs.py'
          ) in check.stderr
  assert _read(work / 'docs' / 'flags.md') == '# Flags\n'  # --check writes
  proc = subprocess.run(argv, cwd=work, env=env, capture_output=True,
                        text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert _read(work / 'docs' / 'flags.md') == _read(FLAGS_MD)
  assert _read(work / 'README.md') == readme_text


def test_flags_md_lists_every_flag():
  from pipeline.flags import help_parser
  text = _read(FLAGS_MD)
  parser = help_parser()
  for action in parser._actions:
    if action.option_strings and action.dest != 'help':
      assert f'| `{action.option_strings[0]}` |' in text, action.dest
  for group in parser._action_groups:
    if any(a.option_strings and a.dest != 'help'
           for a in group._group_actions):
      assert f'\n## {group.title[0].upper()}{group.title[1:]}\n' in text


def test_readme_is_short_and_keeps_its_sections():
  text = _read(readme.README)
  lines = text.splitlines()
  assert len(lines) <= README_MOST_LINES, (
      f'README.md has {len(lines)} lines; at most {README_MOST_LINES}: move '
      'details to docs/')
  sections = re.findall(r'^## (.+)$', text, flags=re.M)
  for must in ('What a run shows', 'Output schema',
               'Reading the output back'):
    assert must in sections
  shown = text.split('## What a run shows\n')[1].split('\n## ')[0]
  assert len(shown.strip('\n').splitlines()) <= 20
  setup = re.findall(r'```bash\n(.*?)```', text, flags=re.S)[0]
  assert [line.split()[0] for line in setup.splitlines()] == [
      './run_local.sh', './run_tests.sh']


def _anchor(heading: str) -> str:
  """GitHub's anchor for a Markdown heading."""
  heading = re.sub(r'[`*]', '', heading.strip().lower())
  return re.sub(r'[^\w\- ]', '', heading).replace(' ', '-')


def test_links_between_documents_resolve():
  for path in readme.files():
    text = re.sub(r'```.*?```', '', _read(path), flags=re.S)
    for target in re.findall(r'\]\(([^)\s]+)\)', text):
      if re.match(r'[a-z]+:', target):
        continue  # a URL
      file_part, _, anchor = target.partition('#')
      linked = (os.path.normpath(os.path.join(os.path.dirname(path),
                                              file_part))
                if file_part else path)
      where = f'{os.path.relpath(path, ROOT)}: {target}'
      assert os.path.exists(linked), where
      if anchor:
        headings = re.findall(r'^#+ (.+)$', re.sub(
            r'```.*?```', '', _read(linked), flags=re.S), flags=re.M)
        assert anchor in {_anchor(h) for h in headings}, where
