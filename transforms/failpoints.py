"""Named points where a test kills the job: the real process, SIGKILL,
at a moment no signal sent from outside can hit reliably (between two
renames of a commit).

BEAM_TEXT_EMBED_KILL_AT=NAME makes reached(NAME) kill the process that
gets there; unset (always, outside tests/test_in_place.py), reached() is a
dictionary lookup. Points (transforms/backends/files.py): write (a
temporary shard written), commit:journal, commit:rename (half the shards
renamed), commit:stale (before the folder is deleted); and
postgres:batch (transforms/backends/postgres.py: one batch committed),
bigquery:merge (transforms/backends/bigquery.py: changes staged, before
the MERGE).
"""

import os
import signal

ENV = 'BEAM_TEXT_EMBED_KILL_AT'


def reached(name: str) -> None:
  if os.environ.get(ENV) == name:
    os.kill(os.getpid(), signal.SIGKILL)
