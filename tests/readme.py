"""The shell commands of the README and of docs/*.md, read from their ```bash
blocks, so that tests run the documented commands themselves rather than
copies of them, wherever in the documentation a command lives."""

from __future__ import annotations

import glob
import os
import re
import shlex
import subprocess
from typing import NamedTuple

from tests import corpora

README = os.path.join(corpora.ROOT, 'README.md')
DOCS = os.path.join(corpora.ROOT, 'docs')
BLOCK = re.compile(r'```bash\n(.*?)```', flags=re.S)


class Source(NamedTuple):
  path: str  # the Markdown file
  block: int  # offset of the ```bash line of the command's block


class Blocks(NamedTuple):
  commands: list  # argv lists, line continuations joined
  heredocs: dict  # file name -> text, for `cat > NAME <<'END'` blocks
  sources: list  # Source of each command, parallel to commands


def files() -> list[str]:
  """The documentation whose commands the tests run: README.md and every
  docs/*.md."""
  return [README] + sorted(glob.glob(os.path.join(DOCS, '*.md')))


def _read_one(path: str, out: Blocks) -> None:
  with open(path, encoding='utf-8') as f:
    text = f.read()
  for match in BLOCK.finditer(text):
    lines = iter(match.group(1).splitlines())
    pending = ''
    for line in lines:
      heredoc = re.match(r"cat > (\S+) <<'(\w+)'$", line.strip())
      if heredoc:
        body = []
        for inner in lines:
          if inner.strip() == heredoc.group(2):
            break
          body.append(inner)
        name = heredoc.group(1)
        if name in out.heredocs:
          raise AssertionError(f'{path}: a second heredoc for {name}')
        out.heredocs[name] = '\n'.join(body) + '\n'
        continue
      pending += line.rstrip('\\').rstrip() + ' ' if line.endswith('\\') \
          else line
      if not line.endswith('\\'):
        argv = shlex.split(pending, comments=True) if pending.strip() else []
        if argv:
          out.commands.append(argv)
          out.sources.append(Source(path, match.start()))
        pending = ''


def read(path: str | None = None) -> Blocks:
  """The commands and heredocs of one Markdown file, or by default of the
  README and every docs/*.md together."""
  out = Blocks([], {}, [])
  for one in ([path] if path else files()):
    _read_one(one, out)
  return out


def command(*must: str) -> list[str]:
  """The one documented command (README or docs/) holding every string in
  must (as arguments or parts of them)."""
  blocks = read()
  found = [(c, s) for c, s in zip(blocks.commands, blocks.sources)
           if all(any(m in arg for arg in c) for m in must)]
  if len(found) != 1:
    where = ', '.join(os.path.relpath(s.path, corpora.ROOT) for _, s in found)
    raise AssertionError(f'README and docs/: {len(found)} commands hold '
                         f'{must}' + (f' (in {where})' if where else ''))
  return found[0][0]


def text_before(source: Source, chars: int) -> str:
  """The prose just before a command's block: where the documentation says
  why a command is not run here."""
  with open(source.path, encoding='utf-8') as f:
    return f.read()[max(0, source.block - chars):source.block]


def fill(argv, **placeholders: str):
  """Replaces the README's placeholders (MY_PROJECT, MY_BUCKET, ...) in an
  argv list or a text."""
  if isinstance(argv, str):
    return fill([argv], **placeholders)[0]
  out = []
  for arg in argv:
    for name, value in placeholders.items():
      arg = arg.replace(name, value)
    out.append(arg)
  return out


def drop_flags(argv: list[str], *flags: str) -> list[str]:
  """argv without the given flags (and their values, for flags that take
  one): the swaps a test names."""
  out, skip = [], False
  for i, arg in enumerate(argv):
    if skip:
      skip = False
      continue
    name = arg.split('=', 1)[0]
    if name in flags:
      takes_value = ('=' not in arg and i + 1 < len(argv) and
                     not argv[i + 1].startswith('--'))
      skip = takes_value
      continue
    out.append(arg)
  return out


def scratch_folder(work, minilm_export: str) -> dict:
  """Readies `work` (a pathlib.Path) for documented commands: `.venv`
  linked (the project is installed in it, so commands and Python lines
  import it from any folder), and a model cache holding the session's
  minilm-l6 conversion (--model minilm-l6 converts into $XDG_CACHE_HOME
  on first use). Returns the commands' environment."""
  os.symlink(os.path.join(corpora.ROOT, '.venv'), work / '.venv')
  cache = work / 'xdg' / 'beam-text-embed' / 'models'
  cache.mkdir(parents=True)
  os.symlink(minilm_export, cache / 'minilm-l6')
  env = dict(os.environ, XDG_CACHE_HOME=str(work / 'xdg'),
             TF_CPP_MIN_LOG_LEVEL='2', HF_HUB_OFFLINE='1')
  env.pop('PYTHONPATH', None)
  return env


def run(argv, work, env, timeout=600) -> subprocess.CompletedProcess:
  """A documented command in the scratch folder."""
  return subprocess.run(argv, cwd=work, env=env, capture_output=True,
                        text=True, timeout=timeout)
