"""The command's flag check before Beam is imported (pipeline/flags.py's
check_flags_early): it refuses what the full check refuses, with the same
line, and passes Beam's own flags.

Why: --help and a misspelt flag are answered in a fraction of a second
instead of after the seconds that importing TensorFlow and Beam takes; a
check that refused a flag Beam takes would stop runs that are fine.
"""

from __future__ import annotations

import re

import apache_beam
import pytest

from pipeline import beam_flags
from pipeline import flags

pytestmark = pytest.mark.unit

_COMMON = ['--input', 'a.jsonl', '--output', 'o']
# Beam's flags as the docs and tests give them, values included.
_BEAM = ['--runner', 'DataflowRunner', '--project', 'p', '--region', 'r',
         '--temp_location', 'gs://b/t', '--experiments', 'a',
         '--experiments=b', '--dry_run', 'True', '--direct_num_workers', '2',
         '--direct_running_mode=multi_processing', '--save_main_session',
         '--job_endpoint', 'localhost:8099', '--sdk_container_image', 'i']


@pytest.mark.parametrize('args,message', [
    (['--max_seq_lenght', '5'],
     'unknown flag --max_seq_lenght; did you mean --max_seq_length?'),
    (['--max-seq-lenght=5'],
     'unknown flag --max-seq-lenght; did you mean --max_seq_length?'),
    (['--streeming'], 'unknown flag --streeming; did you mean --streaming?'),
    (['--runer', 'DataflowRunner'],
     'unknown flag --runer; did you mean --runner?'),
    (['--zzzzqq'], "unknown flag --zzzzqq; python -m pipeline.run --help "
     "lists the job's flags"),
    (['-f', 'x'], 'unknown flag -f;'),
    (['--pooling', 'max'], "argument --pooling: invalid choice: 'max'"),
    (['--input_format', 'xml'], "argument --input_format: invalid choice"),
    (['--max_seq_length', 'long'],
     "argument --max_seq_length: invalid int value: 'long'"),
    (['--max_rejected', '200%'], "argument --max_rejected: '200%' is "
     'neither a count'),
    (['--normalize=maybe'], 'argument --normalize: invalid _bool value'),
])
def test_early_check_refuses_as_the_full_check_does(args, message):
  for check in (flags.check_flags_early, flags.check_flags):
    with pytest.raises(ValueError, match=re.escape(message)):
      check(_COMMON + args)


def test_early_check_passes_beam_flags():
  flags.check_flags_early(_COMMON + _BEAM)
  flags.check_flags(_COMMON + _BEAM)


def test_beam_flag_names_are_those_of_the_installed_beam():
  """pipeline/beam_flags.py is generated (scripts/gen_flag_docs.py, whose
  --check holds it to Beam's parser); it is used under its version only."""
  assert beam_flags.BEAM_VERSION == apache_beam.__version__
  names = set(beam_flags.NAMES)
  assert {'runner', 'project', 'region', 'temp_location', 'experiments',
          'direct_num_workers', 'save_main_session'} <= names
  job = {a.dest for a in flags.help_parser()._actions}
  assert not names & job


def test_under_another_beam_its_names_are_left_to_beam(monkeypatch):
  """A flag that a newer Beam may have passes the early check; the full
  check, Beam's own parser, judges it."""
  flags.check_flags_early(_COMMON + ['--environment_type', 'LOOPBACK'])
  with pytest.raises(ValueError, match='unknown flag --a_newer_beam_flag'):
    flags.check_flags_early(_COMMON + ['--a_newer_beam_flag'])
  monkeypatch.setattr(beam_flags, 'BEAM_VERSION', '0.0.0')
  flags.check_flags_early(_COMMON + ['--a_newer_beam_flag'])
  with pytest.raises(ValueError, match='argument --pooling'):
    flags.check_flags_early(_COMMON + ['--pooling', 'max'])


def test_answer_early(capsys):
  """--help printed, a flag error as the job's one error line (status 2),
  or None: the job goes on."""
  assert flags.answer_early(['--help']) == 0
  assert '--max_seq_length' in capsys.readouterr().out
  assert flags.answer_early(_COMMON + ['--max_seq_lenght', '5']) == 2
  assert capsys.readouterr().err == (
      'pipeline.run: error: unknown flag --max_seq_lenght; did you mean '
      '--max_seq_length?\n')
  assert flags.answer_early(_COMMON + _BEAM) is None
