"""The README's shell commands, read from its ```bash blocks, so that tests
run the documented commands themselves rather than copies of them."""

from __future__ import annotations

import os
import re
import shlex
from typing import NamedTuple

from tests import corpora

README = os.path.join(corpora.ROOT, 'README.md')


class Blocks(NamedTuple):
  commands: list  # argv lists, line continuations joined
  heredocs: dict  # file name -> text, for `cat > NAME <<'END'` blocks


def read(path: str = README) -> Blocks:
  with open(path, encoding='utf-8') as f:
    text = f.read()
  commands, heredocs = [], {}
  for block in re.findall(r'```bash\n(.*?)```', text, flags=re.S):
    lines = iter(block.splitlines())
    pending = ''
    for line in lines:
      heredoc = re.match(r"cat > (\S+) <<'(\w+)'$", line.strip())
      if heredoc:
        body = []
        for inner in lines:
          if inner.strip() == heredoc.group(2):
            break
          body.append(inner)
        heredocs[heredoc.group(1)] = '\n'.join(body) + '\n'
        continue
      pending += line.rstrip('\\').rstrip() + ' ' if line.endswith('\\') \
          else line
      if not line.endswith('\\'):
        if pending.strip():
          commands.append(shlex.split(pending, comments=True))
        pending = ''
  return Blocks([c for c in commands if c], heredocs)


def command(*must: str) -> list[str]:
  """The one README command holding every string in must (as arguments or
  parts of them)."""
  found = [c for c in read().commands
           if all(any(m in arg for arg in c) for m in must)]
  if len(found) != 1:
    raise AssertionError(f'README: {len(found)} commands hold {must}')
  return found[0]


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
