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
import time

ENV = 'BEAM_TEXT_EMBED_KILL_AT'
# BEAM_TEXT_EMBED_PAUSE_AT=NAME makes paused(NAME) wait until the file
# BEAM_TEXT_EMBED_RESUME names exists (at most PAUSE_SECONDS): a test holds
# a run at that point (lease:held, pipeline/run.py: the output's lease
# taken, nothing run yet) while it starts a second one, or kills it.
PAUSE_ENV = 'BEAM_TEXT_EMBED_PAUSE_AT'
RESUME_ENV = 'BEAM_TEXT_EMBED_RESUME'
PAUSE_SECONDS = 300


def reached(name: str) -> None:
  if os.environ.get(ENV) == name:
    os.kill(os.getpid(), signal.SIGKILL)


def paused(name: str) -> None:
  if os.environ.get(PAUSE_ENV) != name:
    return
  resume = os.environ[RESUME_ENV]
  deadline = time.monotonic() + PAUSE_SECONDS
  while not os.path.exists(resume) and time.monotonic() < deadline:
    time.sleep(0.05)
