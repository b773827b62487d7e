"""The command's flags: its --help, and every flag of the command line
checked before anything runs.

Beam keeps flags it does not know (a runner may take them), so a misspelt
--max_seq_lenght would otherwise run with the default, and a stray word
would be dropped with a log line. Both are errors here, found with Beam's
public option API: PipelineOptions.get_all_options, which knows every
PipelineOptions subclass (Beam's and EmbedOptions).
"""

from __future__ import annotations

import argparse
import difflib
from typing import Sequence

from apache_beam.options.pipeline_options import PipelineOptions

from pipeline.options import EmbedOptions

# Without --runner, run in-process with Beam's FnApiRunner. DirectRunner in
# Beam 2.77 first tries to download the Prism runner binary (about 8 s lost
# offline before it falls back); FnApiRunner is what it falls back to, and it
# takes the same --direct_num_workers / --direct_running_mode flags.
DEFAULT_LOCAL_RUNNER = 'FnApiRunner'

# The name under which stray words are collected (not a flag: no dashes).
_STRAY = 'unexpected arguments'


class _Parser(argparse.ArgumentParser):
  """A parser that raises instead of printing usage and exiting, so that a
  bad flag is one line like every other launch error."""

  def error(self, message):
    raise ValueError(message)


def help_parser() -> argparse.ArgumentParser:
  """The job's own flags (EmbedOptions declares them, as Beam's option
  classes declare theirs), with the command's --help text."""
  parser = _Parser(
      prog='python -m pipeline.run', allow_abbrev=False,
      description='Embed a text corpus with a TF Hub preprocessor + encoder '
      'pair on Apache Beam and write the embeddings to TFRecord or Parquet '
      'files, BigQuery or PostgreSQL (pgvector).',
      epilog='Beam pipeline flags (--runner, --project, --region, '
      '--temp_location, --direct_num_workers, --direct_running_mode, ...) are '
      f'accepted too. Without --runner the job runs locally on '
      f'{DEFAULT_LOCAL_RUNNER}. The last line printed is a JSON summary.')
  EmbedOptions._add_argparse_args(parser)
  return parser


def asks_verbose(argv: Sequence[str]) -> bool:
  """--verbose as the job will read it; read before anything is logged,
  so that start-up chatter is held from the start."""
  try:
    known, _ = help_parser().parse_known_args(argv)
  except ValueError:
    return False
  return bool(known.verbose)


def _collect_stray(parser: argparse.ArgumentParser) -> None:
  """get_all_options' hook for extra arguments: words no flag takes are
  collected, and a bad value raises (argparse's exit_on_error) instead of
  printing Beam's whole usage and exiting."""
  parser.exit_on_error = False
  parser.add_argument(_STRAY, nargs='*')


def _flag_name(arg: str) -> str:
  return arg.split('=', 1)[0]


def _dest(arg: str) -> str:
  """The option name Beam files a flag under (--a-b and --a_b alike)."""
  return _flag_name(arg).lstrip('-').replace('-', '_')


def check_flags(argv: Sequence[str]) -> None:
  """The job's flags (values, choices), then every flag against those of
  the job and of Beam: raises ValueError naming the first unknown flag
  (with the closest known one) or stray word."""
  help_parser().parse_known_args(argv)
  options = PipelineOptions(list(argv))
  # Every option Beam and the job declare; no flags given, so no warnings.
  known = set(PipelineOptions([]).get_all_options())
  # Unknown flags are kept under their own names; words no flag takes are
  # collected in _STRAY.
  try:
    given = options.get_all_options(retain_unknown_options=True,
                                    add_extra_args_fn=_collect_stray)
  except argparse.ArgumentError as e:  # a Beam flag's value
    raise ValueError(str(e)) from e
  unknown = set(given) - known - {_STRAY}
  for arg in argv:
    if arg.startswith('-') and (_dest(arg) in unknown or not (
        arg.startswith('--') or _is_number(arg))):
      _raise_unknown(_flag_name(arg), known)
  stray = given.get(_STRAY)
  if stray:
    raise ValueError(f'unexpected argument {stray[0]!r}: flags take the '
                     'form --name value or --name=value')


def _is_number(arg: str) -> bool:
  try:
    float(arg)
  except ValueError:
    return False
  return True


def _raise_unknown(name: str, known: set) -> None:
  close = difflib.get_close_matches(name, [f'--{k}' for k in known], n=1,
                                    cutoff=0.7)
  hint = f'; did you mean {close[0]}?' if close else (
      '; python -m pipeline.run --help lists the job\'s flags')
  raise ValueError(f'unknown flag {name}{hint}')
