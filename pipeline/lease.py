"""`python -m pipeline.lease OUTPUT`: who holds the lease on an output
(the run writing it now), and `--clear` to remove a stale one.

A run holds its output's lease while it runs (transforms/leases), so a
second run on the same output is refused at launch. A lease ends with its
run; after a crash it expires by itself (LEASE_TTL after its last renewal)
or is taken over at once when its holder ran on the same machine and is
gone. --clear is for the remaining case: a holder on another machine that
is known to be gone, and a night that cannot wait for the expiry. It
refuses to clear a lease whose holder still runs on this machine.
"""

from __future__ import annotations

import argparse
import sys


def parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(
      prog='python -m pipeline.lease',
      description='Show, or clear, the lease a run holds on an output.')
  p.add_argument('output', help='the --output of the run: a file prefix '
                 '(local or gs://), bq://PROJECT.DATASET.TABLE or '
                 'postgresql://...?table=TABLE')
  p.add_argument('--clear', action='store_true',
                 help='remove the lease (only when its run is gone)')
  return p


def main(argv=None) -> int:
  args = parser().parse_args(argv)
  # After the parse: --help and usage errors come before Beam is imported
  # (seconds).
  from transforms import backends
  from transforms import leases
  try:
    output = backends.output(args.output)
    store = output.lease_store()
    found = store.read()
  except (ValueError, RuntimeError, OSError) as e:
    print(f'pipeline.lease: error: {e}', file=sys.stderr)
    return 2
  if found is None:
    print(f'{output.shown()}: no run holds a lease')
    return 0
  holder = leases.Holder.from_text(found[0])
  state = ('expired' if holder.expired() else
           'its process is gone' if holder.gone() else 'held')
  print(f'{output.shown()}: {state}: {holder.describe()} ({store.shown()})')
  if not args.clear:
    return 0
  if state == 'held' and holder.host == leases.this_host():
    print(f'pipeline.lease: error: pid {holder.pid} still runs on this '
          'machine; stop it first (its lease ends with it)', file=sys.stderr)
    return 2
  if not store.delete(found[1]):
    print('pipeline.lease: error: the lease changed while it was read; '
          'look again', file=sys.stderr)
    return 1
  print(f'{output.shown()}: lease cleared')
  return 0


if __name__ == '__main__':
  sys.exit(main())
