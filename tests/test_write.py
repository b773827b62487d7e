"""Output helpers as plain functions."""

from __future__ import annotations

import os

from transforms.backends import files as write


def test_remove_stale_shards_keeps_this_runs_and_other_outputs(tmp_path):
  prefix = str(tmp_path / 'emb')
  names = ['emb-00000-of-00003.tfrecord', 'emb-00001-of-00003.tfrecord',
           'emb-00002-of-00003.tfrecord', 'emb-00000-of-00002.tfrecord',
           'emb-00001-of-00002.tfrecord', 'emb-v2-00000-of-00001.tfrecord',
           'emb-dead_letter-00000-of-00001.jsonl', 'emb-00000-of-00009.txt']
  for name in names:
    (tmp_path / name).write_bytes(b'x')
  written = [os.path.relpath(str(tmp_path / n)) for n in names[3:5]]
  assert write.remove_stale_shards(written, prefix, '.tfrecord') == 3
  assert sorted(os.listdir(tmp_path)) == sorted(names[3:])
  assert write.remove_stale_shards(written, prefix, '.tfrecord') == 0
