"""One writer per output: a lease that a run holds on its output for the
run's length.

Two runs writing one output at once corrupt it: two in-place nightly runs
of a file output each carry the unchanged records and each write their
shards, and the output ends with some ids twice. A scheduler's retry and a
slow night make that pair. So a run that writes takes a lease at launch,
and a second run on the same output is refused there, in one line that
names the holder (host, pid or Dataflow job, start time) and how to clear
a stale lease.

The lease is one small record (Holder, JSON) kept beside the output by a
Store: a file or a Cloud Storage object beside the shards, or a row of a
lease table in the output's database (transforms/leases/*.py, one module
per kind, chosen by the output's backend: Backend.lease_store). A Store
offers four atomic operations (create if absent, read, replace and delete
if unchanged); the rules are written once, here:

- A lease has an expiry, renewed by the holder (a thread) every third of
  LEASE_TTL, so a holder that vanished without a word (a machine switched
  off, a launcher whose network went away) frees the output after at most
  LEASE_TTL.
- A holder on this same host whose process is gone (a SIGKILL, an
  out-of-memory kill) is provably gone: its lease is taken over at once.
  A process is the same one only if its pid, its start time and the boot
  agree, so a reused pid does not keep a lease alive.
- A holder that finds its lease replaced (it was taken over after it
  expired) says so, loudly, once.
"""

from __future__ import annotations

import abc
import dataclasses
import datetime
import hashlib
import json
import logging
import os
import shlex
import socket
import threading
import uuid
from typing import Any, Callable, Optional

# How long a lease lives without being renewed.
LEASE_TTL = datetime.timedelta(minutes=10)
# The command that shows or clears a lease (pipeline/lease.py).
CLEAR_COMMAND = 'python -m pipeline.lease --clear'


def _now() -> datetime.datetime:
  return datetime.datetime.now(datetime.timezone.utc)


def _iso(moment: datetime.datetime) -> str:
  return moment.astimezone(datetime.timezone.utc).strftime(
      '%Y-%m-%dT%H:%M:%SZ')


def _parse(text: str) -> datetime.datetime:
  return datetime.datetime.strptime(text, '%Y-%m-%dT%H:%M:%SZ').replace(
      tzinfo=datetime.timezone.utc)


def this_host() -> str:
  return socket.gethostname()


def process_start(pid: int) -> str:
  """Which process a pid is: the boot's id and the process's start time in
  clock ticks since boot (Linux /proc), or '' where that cannot be read."""
  try:
    with open('/proc/sys/kernel/random/boot_id', encoding='ascii') as f:
      boot = f.read().strip()
    with open(f'/proc/{pid}/stat', encoding='ascii', errors='replace') as f:
      # The command name (field 2) may hold spaces: fields after its ')'.
      fields = f.read().rsplit(')', 1)[1].split()
    return f'{boot}:{fields[19]}'
  except (OSError, IndexError):
    return ''


@dataclasses.dataclass(frozen=True)
class Holder:
  """Who holds a lease, and until when."""
  token: str
  host: str
  pid: int
  process: str  # process_start(pid) when the lease was taken
  started: str  # ISO 8601, UTC
  expires: str  # ISO 8601, UTC
  job: str = ''  # the Dataflow job, once submitted

  @classmethod
  def this_process(cls, ttl: datetime.timedelta = LEASE_TTL) -> 'Holder':
    now = _now()
    pid = os.getpid()
    return cls(token=uuid.uuid4().hex, host=this_host(), pid=pid,
               process=process_start(pid), started=_iso(now),
               expires=_iso(now + ttl))

  def to_text(self) -> str:
    return json.dumps(dataclasses.asdict(self), sort_keys=True)

  @classmethod
  def from_text(cls, text: str) -> 'Holder':
    """A stored lease; an unreadable one (a truncated file) is a lease of
    no one that has expired, so that it is taken over."""
    try:
      found = json.loads(text)
      names = {f.name for f in dataclasses.fields(cls)}
      return cls(**{k: v for k, v in found.items() if k in names})
    except (ValueError, TypeError):
      return cls(token='', host='', pid=0, process='', started='',
                 expires=_iso(datetime.datetime.min.replace(
                     tzinfo=datetime.timezone.utc)))

  def renewed(self, ttl: datetime.timedelta, **changes) -> 'Holder':
    return dataclasses.replace(self, expires=_iso(_now() + ttl), **changes)

  def expired(self, now: Optional[datetime.datetime] = None) -> bool:
    try:
      return _parse(self.expires) <= (now or _now())
    except ValueError:
      return True

  def gone(self) -> bool:
    """Provably gone: a process of this host that no longer runs (or
    whose pid now names another process)."""
    if not self.pid or self.host != this_host() or not self.process:
      return False
    return process_start(self.pid) != self.process

  def describe(self) -> str:
    who = f'Dataflow job {self.job}, launched by ' if self.job else ''
    return (f'{who}pid {self.pid} on {self.host}, running since '
            f'{self.started} (lease renewed until {self.expires})')


def version_of(text: str) -> str:
  """A stored lease's version for stores that keep rows: its text's digest
  (a renewal changes the expiry, so it changes the version)."""
  return hashlib.sha256(text.encode('utf-8')).hexdigest()[:32]


class Store(abc.ABC):
  """Where one output's lease record lives, with atomic operations. A
  version is what read gave (opaque to the caller): replace and delete
  act only if the record is still that one."""

  # The output as pipeline.lease takes it (--output, without secrets).
  output: str = ''

  @abc.abstractmethod
  def shown(self) -> str:
    """Where the lease is, for messages."""

  @abc.abstractmethod
  def create(self, text: str) -> Optional[Any]:
    """Stores text if no lease is stored: its version, else None."""

  @abc.abstractmethod
  def read(self) -> Optional[tuple[str, Any]]:
    """(text, version) of the stored lease, or None."""

  @abc.abstractmethod
  def replace(self, text: str, version: Any) -> Optional[Any]:
    """Stores text in place of the lease of that version: the new version,
    or None if the stored lease is not that one any more."""

  @abc.abstractmethod
  def delete(self, version: Any) -> bool:
    """Removes the lease of that version; False if it is not that one."""

  def clear(self) -> bool:
    """Removes whatever lease is stored (a person clearing a stale one)."""
    found = self.read()
    return bool(found) and self.delete(found[1])


class LeaseHeld(ValueError):
  """Another run holds the output's lease: the launch's one error line."""

  def __init__(self, output: str, store: Store, holder: Holder):
    super().__init__(
        f'{output} is being written by another run: {holder.describe()}. '
        f'Wait for it to end; if it is gone (a crash on another machine), '
        f'the lease ({store.shown()}) expires by itself at {holder.expires}, '
        f'or clear it now with: {CLEAR_COMMAND} '
        f'{shlex.quote(store.output or output)}')
    self.holder = holder


class Lease:
  """A lease this process holds: renewed in a thread until released."""

  def __init__(self, store: Store, holder: Holder, version: Any, *,
               output: str, ttl: datetime.timedelta):
    self.store = store
    self.holder = holder
    self.output = output
    self._version = version
    self._ttl = ttl
    self._lock = threading.Lock()
    self._stop = threading.Event()
    self._wake = threading.Event()  # renew now: a change was noted
    self._noted: dict = {}
    self._lost = False
    self._thread = threading.Thread(target=self._renew_until_released,
                                    name='lease-renewal', daemon=True)
    self._thread.start()

  def __enter__(self) -> 'Lease':
    return self

  def __exit__(self, *exc) -> None:
    self.release()

  @property
  def lost(self) -> bool:
    return self._lost

  def renew(self, **changes) -> bool:
    """Extends the lease (and records changes, e.g. job=...): False once it
    was taken over by another run."""
    with self._lock:
      if self._lost or self._version is None:
        return False
      holder = self.holder.renewed(self._ttl, **changes)
      try:
        version = self.store.replace(holder.to_text(), self._version)
      except Exception as e:  # noqa: BLE001 (a network error: try again)
        logging.warning('could not renew the lease on %s: %s', self.output,
                        e)
        return True
      if version is None:
        self._lost = True
        logging.error(
            'the lease on %s was taken over by another run (this run did '
            'not renew it in time): two runs may now write it', self.output)
        return False
      self.holder, self._version = holder, version
      return True

  def note_job(self, job: str) -> None:
    """Names the Dataflow job in the lease, for the message a second run
    prints. The renewal thread writes it, at once: the calling thread (the
    command's main thread, which a Ctrl-C interrupts) never waits on the
    lease's store. An interrupt inside that request would leave it half
    sent, and the run's clean-up, which removes the lease through the same
    store, waiting behind it on a server that serves one connection at a
    time (the tests' Cloud Storage emulator does)."""
    if job:
      self._noted = {'job': job}
      self._wake.set()

  def release(self) -> None:
    """Removes the lease (once; a lost lease is left to its new holder)."""
    self._stop.set()
    self._wake.set()
    with self._lock:
      if self._version is None:
        return
      version, self._version = self._version, None
      if self._lost:
        return
      try:
        self.store.delete(version)
      except Exception as e:  # noqa: BLE001
        logging.warning('could not remove the lease %s (it expires at %s): '
                        '%s', self.store.shown(), self.holder.expires, e)

  def _renew_until_released(self) -> None:
    every = self._ttl.total_seconds() / 3
    while True:
      self._wake.wait(every)
      self._wake.clear()
      if self._stop.is_set():
        return
      noted, self._noted = self._noted, {}
      if not self.renew(**noted):
        return


def acquire(store: Store, *, output: str,
            ttl: datetime.timedelta = LEASE_TTL,
            holder: Optional[Holder] = None,
            log: Callable[..., None] = logging.warning) -> Lease:
  """Takes the output's lease, or raises LeaseHeld naming its holder. An
  expired lease, or one whose holder is provably gone, is taken over (and
  that is logged: the run that held it ended without releasing it)."""
  holder = holder or Holder.this_process(ttl)
  for _ in range(5):
    version = store.create(holder.to_text())
    if version is not None:
      return Lease(store, holder, version, output=output, ttl=ttl)
    found = store.read()
    if found is None:
      continue  # released in between: try again
    current = Holder.from_text(found[0])
    if not (current.expired() or current.gone()):
      raise LeaseHeld(output, store, current)
    version = store.replace(holder.to_text(), found[1])
    if version is not None:
      log('taking over the lease on %s from a run that ended without '
          'releasing it: %s', output, current.describe())
      return Lease(store, holder, version, output=output, ttl=ttl)
  raise RuntimeError(f'could not take the lease on {output} '
                     f'({store.shown()}): it changed five times in a row')
