"""What a run leaves beside its outputs, and what it says about them when
it is stopped.

Beam's file sinks write each run's shards into a temporary folder beside
the output (beam-temp-NAME-ID) and delete it once the shards are renamed
into place. A run that fails (a full disk, a server gone) or is stopped
never gets there: its folder stays, keeps a full disk full, and piles up
night after night on Cloud Storage. So a run that fails or is stopped
removes the temporary files it made, and a run that succeeds removes those
that earlier runs of the same outputs left. Each backend says what its
temporaries are (Backend.temporaries); this module only decides when.
"""

from __future__ import annotations

import logging
from typing import Optional, Sequence

_LOGGER = logging.getLogger(__name__)


class RunFiles:
  """The outputs' temporaries and state when the run starts, to compare
  with when it ends."""

  def __init__(self, outputs: Sequence):
    self._outputs = tuple(outputs)
    self._before = [set(b.temporaries()) for b in self._outputs]
    self._states = [b.state() for b in self._outputs]

  def remove_own(self) -> int:
    """After a failed or stopped run: removes the temporaries that were not
    there when it started (its own), leaving anything else alone."""
    removed = 0
    for backend, before in zip(self._outputs, self._before):
      own = sorted(set(backend.temporaries()) - before)
      backend.remove_temporaries(own)
      removed += len(own)
    return removed

  def remove_stale(self) -> int:
    """After a run that succeeded: every temporary still there is an
    earlier run's (this run's own were deleted as it finished)."""
    removed = 0
    for backend in self._outputs:
      stale = backend.temporaries()
      if stale:
        _LOGGER.info('Removed %d temporary folder(s) that earlier runs of '
                     '%s left (e.g. %s)', len(stale), backend.shown(),
                     stale[0])
        backend.remove_temporaries(stale)
        removed += len(stale)
    return removed

  def unchanged(self) -> Optional[bool]:
    """Whether every output is as it was at the start (None: cannot be
    told for one of them)."""
    now = [b.state() for b in self._outputs]
    if any(s is None for s in now + self._states):
      return None
    return now == self._states

  def interrupted(self, *, finished: bool) -> str:
    """Removes this run's temporaries; says what the stop left, for the
    line after 'interrupted (SIGINT); '."""
    removed = self.remove_own()
    shown = self._outputs[0].shown()
    if finished:
      what = (f'the run had finished: {shown} is complete, but its summary '
              'was not printed')
    else:
      unchanged = self.unchanged()
      if unchanged:
        what = 'nothing was written'
      elif unchanged is None:
        what = (f'{shown} may hold part of this run\'s records: run the job '
                'again')
      else:
        what = f'{shown} was partly rewritten: run the job again'
    if removed:
      what += f' ({removed} temporary folder(s) removed)'
    return what
