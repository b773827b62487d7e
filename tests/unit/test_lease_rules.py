"""The rules of one writer per output (transforms/leases), on the lease of
a local file: a second holder refused in one line naming the first, expiry,
a holder provably gone, a renewal after a take-over, an unreadable lease,
and the `pipeline.lease` command. tests/test_leases.py races real runs on
each backend.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import subprocess
import sys

import pytest

from pipeline import lease as lease_command
from transforms import leases
from transforms.leases import files as file_leases

pytestmark = pytest.mark.unit


def _holder() -> leases.Holder:
  return leases.Holder.this_process()


def test_a_second_holder_is_refused_and_named(tmp_path):
  store = file_leases.store_for(str(tmp_path / 'emb'))
  with leases.acquire(store, output='out/emb') as first:
    other = leases.Holder('t2', 'elsewhere', 7, 'x', first.holder.started,
                          first.holder.expires)
    with pytest.raises(leases.LeaseHeld) as refused:
      leases.acquire(store, output='out/emb', holder=other)
    line = str(refused.value)
    assert f'pid {os.getpid()} on {leases.this_host()}' in line
    assert f'python -m pipeline.lease --clear {store.output}' in line
    assert '\n' not in line
    assert os.path.exists(tmp_path / 'emb.lease')
  assert not os.path.exists(tmp_path / 'emb.lease')  # released


def test_an_expired_lease_is_taken_over(tmp_path):
  store = file_leases.store_for(str(tmp_path / 'emb'))
  stale = leases.Holder('t1', 'another-host', 1, 'x', '2026-01-01T00:00:00Z',
                        '2026-01-01T00:10:00Z')
  store.create(stale.to_text())
  taken = []
  with leases.acquire(store, output='o',
                      log=lambda *a: taken.append(a)) as held:
    assert held.holder.token != 't1'
    assert taken and 'another-host' in taken[0][-1]


def test_a_live_holder_elsewhere_is_not_taken_over(tmp_path):
  store = file_leases.store_for(str(tmp_path / 'emb'))
  later = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(
      minutes=5)
  other = leases.Holder('t1', 'another-host', 1, 'x', '2026-01-01T00:00:00Z',
                        later.strftime('%Y-%m-%dT%H:%M:%SZ'))
  store.create(other.to_text())
  with pytest.raises(leases.LeaseHeld, match='pid 1 on another-host'):
    leases.acquire(store, output='o')


def test_a_holder_whose_process_is_gone_is_taken_over(tmp_path):
  """Same host, pid no longer running: taken over at once, unexpired."""
  child = subprocess.Popen([sys.executable, '-c', 'import time; '
                            'time.sleep(60)'])
  process = leases.process_start(child.pid)
  assert process
  dead = dataclasses.replace(_holder(), token='dead', pid=child.pid,
                           process=process)
  store = file_leases.store_for(str(tmp_path / 'emb'))
  store.create(dead.to_text())
  with pytest.raises(leases.LeaseHeld):
    leases.acquire(store, output='o')  # alive: refused
  child.kill()
  child.wait()
  assert dead.gone()
  with leases.acquire(store, output='o') as held:
    assert held.holder.pid == os.getpid()


def test_a_lease_taken_over_is_known_lost_and_left_alone(tmp_path):
  store = file_leases.store_for(str(tmp_path / 'emb'))
  held = leases.acquire(store, output='o')
  before = held.holder.expires
  assert held.renew() and held.holder.expires >= before
  text, version = store.read()
  assert json.loads(text)['token'] == held.holder.token
  intruder = _holder()
  assert store.replace(intruder.to_text(), version) is not None
  assert held.renew() is False and held.lost
  held.release()  # leaves the new holder's lease in place
  assert json.loads(store.read()[0])['token'] == intruder.token


def test_an_unreadable_lease_is_taken_over(tmp_path):
  (tmp_path / 'emb.lease').write_text('{"tok')  # a cut write
  store = file_leases.store_for(str(tmp_path / 'emb'))
  with leases.acquire(store, output='o', log=lambda *a: None):
    pass




def test_the_lease_command_shows_and_clears(tmp_path, capsys):
  prefix = str(tmp_path / 'emb')
  assert lease_command.main([prefix]) == 0
  assert 'no run holds a lease' in capsys.readouterr().out
  child = subprocess.Popen([sys.executable, '-c', 'pass'])
  process = leases.process_start(child.pid)
  child.wait()
  gone = dataclasses.replace(_holder(), pid=child.pid, process=process or 'x')
  file_leases.store_for(prefix).create(gone.to_text())
  assert lease_command.main(['--clear', prefix]) == 0
  out = capsys.readouterr().out
  assert 'its process is gone' in out and 'lease cleared' in out
  assert not os.path.exists(prefix + '.lease')
