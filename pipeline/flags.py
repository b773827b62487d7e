"""The command's flags: its --help, and every flag of the command line
checked before anything runs.

Beam keeps flags it does not know (a runner may take them), so a misspelt
--max_seq_lenght would otherwise run with the default, and a stray word
would be dropped with a log line. Both are errors here, found with Beam's
public option API: PipelineOptions.get_all_options, which knows every
PipelineOptions subclass (Beam's and EmbedOptions).

Importing Beam and TensorFlow takes seconds, so --help and what can be
judged without them come first (answer_early): the job's flag values, and
every flag's name against the job's flags and Beam's (pipeline/
beam_flags.py, generated from the installed Beam). This module imports
Beam only in check_flags, whose full parse stays the authority.
"""

from __future__ import annotations

import argparse
import difflib
import sys
import traceback
from typing import Optional, Sequence

from pipeline import options

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
  """The job's own flags (options.add_flags, which EmbedOptions declares
  to Beam too), with the command's --help text; no Beam import."""
  parser = _Parser(
      prog='python -m pipeline.run', allow_abbrev=False,
      description='Embed a text corpus with a TF Hub preprocessor + encoder '
      'pair on Apache Beam and write the embeddings to TFRecord or Parquet '
      'files, BigQuery or PostgreSQL (pgvector).',
      epilog='Beam pipeline flags (--runner, --project, --region, '
      '--temp_location, --direct_num_workers, --direct_running_mode, ...) are '
      f'accepted too. Without --runner the job runs locally on '
      f'{DEFAULT_LOCAL_RUNNER}. The last line printed is a JSON summary.')
  options.add_flags(parser)
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


def answer_early(argv: Sequence[str]) -> Optional[int]:
  """--help, or the line of a flag error that check_flags_early finds,
  printed before the command imports Beam and TensorFlow: the exit status
  (0 or 2), or None when the command goes on."""
  if '-h' in argv or '--help' in argv:
    help_parser().print_help()
    return 0
  try:
    check_flags_early(argv)
  except ValueError as e:
    if asks_verbose(argv):
      traceback.print_exception(e, file=sys.stderr)
    print(f'pipeline.run: error: {e}', file=sys.stderr, flush=True)
    return 2
  return None


def _beam_names() -> Optional[frozenset]:
  """Beam's flags (option names) as generated for the installed Beam; None
  under another Beam version, whose flags only Beam itself knows, or before
  scripts/gen_flag_docs.py has made the list."""
  from importlib import metadata
  try:
    from pipeline import beam_flags
    installed = metadata.version('apache-beam')
  except (ImportError, metadata.PackageNotFoundError):
    return None
  return frozenset(beam_flags.NAMES) if (
      installed == beam_flags.BEAM_VERSION) else None


def check_flags_early(argv: Sequence[str]) -> None:
  """What check_flags finds without importing Beam: the job's flag values
  and choices, then every flag's name against the job's and Beam's
  (ValueError, the same message as check_flags). Words no flag takes are
  left to check_flags, which knows which of Beam's flags take a value."""
  parser = help_parser()
  parser.parse_known_args(argv)
  beam = _beam_names()
  if beam is None:
    return
  known = beam | {a.dest for a in parser._actions if a.option_strings}
  _check_names(argv, lambda dest: dest not in known, known)


def _check_names(argv: Sequence[str], is_unknown, known) -> None:
  """Raises for the first flag whose name is unknown, or that has one dash
  and is no number."""
  for arg in argv:
    if arg.startswith('-') and (is_unknown(_dest(arg)) or not (
        arg.startswith('--') or _is_number(arg))):
      _raise_unknown(_flag_name(arg), known)


def check_flags(argv: Sequence[str]) -> None:
  """The job's flags (values, choices), then every flag against those of
  the job and of Beam: raises ValueError naming the first unknown flag
  (with the closest known one) or stray word."""
  check_flags_early(argv)
  from apache_beam.options.pipeline_options import PipelineOptions

  # Registers the job's flags with Beam's parser.
  from pipeline.beam_options import EmbedOptions  # noqa: F401
  parsed = PipelineOptions(list(argv))
  # Every option Beam and the job declare; no flags given, so no warnings.
  known = set(PipelineOptions([]).get_all_options())
  # Unknown flags are kept under their own names; words no flag takes are
  # collected in _STRAY.
  try:
    given = parsed.get_all_options(retain_unknown_options=True,
                                   add_extra_args_fn=_collect_stray)
  except argparse.ArgumentError as e:  # a Beam flag's value
    raise ValueError(str(e)) from e
  unknown = set(given) - known - {_STRAY}
  _check_names(argv, unknown.__contains__, known)
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
