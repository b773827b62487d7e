"""pipeline/options.py's value parsers and --max_rejected's check, and how
EmbedOptions parses a few flags (argparse only: no pipeline is built).

Why: --max_rejected decides a scheduler's exit status, and a flag value
that parses to something else than the person meant fails late or never.
"""

from __future__ import annotations

import argparse

import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from pipeline import options
from pipeline.beam_options import EmbedOptions

pytestmark = pytest.mark.unit


@pytest.mark.parametrize('limit,rejected,read,over', [
    ('10', 10, 100, False), ('10', 11, 100, True), ('0', 1, 10, True),
    ('0', 0, 10, False),
    ('0.5%', 1, 200, False),  # exactly 0.5 %: not more
    ('0.5%', 2, 200, True), ('100%', 10, 10, False), ('0%', 1, 10 ** 9, True),
    ('12.5%', 1, 8, False), ('12.5%', 2, 8, True),
])
def test_over_rejection_limit(limit, rejected, read, over):
  assert options.rejection_limit(limit) == limit
  assert options.over_rejection_limit(limit, rejected, read) is over


@pytest.mark.parametrize('text', ['10', '0', '0.5%', '100%', '0%', ' 7',
                                  '1e2%'])
def test_rejection_limit_accepts_counts_and_percentages(text):
  assert options.rejection_limit(text) == text


@pytest.mark.parametrize('text', ['-1', '101%', 'ten', '5.5', '%', '',
                                  '-0.1%', 'inf%', '1e2'])
def test_rejection_limit_rejects_the_rest(text):
  with pytest.raises(argparse.ArgumentTypeError) as raised:
    options.rejection_limit(text)
  assert str(raised.value) == (f'{text!r} is neither a count (10) nor a '
                               'percentage (0.5%)')


def test_rejection_limit_rejects_nan():
  with pytest.raises(argparse.ArgumentTypeError):
    options.rejection_limit('nan%')


@pytest.mark.parametrize('value,expected', [
    ('auto', 'auto'), (' AUTO ', 'auto'), ('8192', 8192), ('1', 1),
    (' 64 ', 64)])
def test_token_budget(value, expected):
  assert options.token_budget(value) == expected


@pytest.mark.parametrize('value', ['0', '-5', 'lots', '1.5', '', '8k'])
def test_token_budget_rejects(value):
  with pytest.raises(argparse.ArgumentTypeError,
                     match='expected a positive number of tokens or auto'):
    options.token_budget(value)


@pytest.mark.parametrize('value,expected', [
    ('true', True), ('True', True), ('1', True), ('YES', True),
    ('false', False), ('0', False), ('No', False)])
def test_bool(value, expected):
  assert options._bool(value) is expected


def test_bool_rejects_other_words():
  with pytest.raises(ValueError, match="expected true or false, got 'on'"):
    options._bool('on')


def _parsed(*argv):
  return PipelineOptions(list(argv)).view_as(EmbedOptions)


def test_flags_parse_to_their_values():
  parsed = _parsed('--max_batch_tokens', '4096', '--normalize',
                   '--jit_compile=false', '--large_model=yes',
                   '--metadata_fields', 'lang,,source',
                   '--max_rejected', '2.5%', '--chunk_stride', '32')
  assert parsed.max_batch_tokens == 4096
  assert parsed.normalize is True and parsed.jit_compile is False
  assert parsed.large_model is True
  assert parsed.metadata_fields == ('lang', 'source')
  assert parsed.max_rejected == '2.5%' and parsed.chunk_stride == 32


def test_defaults():
  parsed = _parsed()
  assert parsed.max_batch_tokens == 'auto'
  assert (parsed.normalize, parsed.verbose, parsed.require_gpu) == (
      False, False, False)
  # argparse runs a str default through its type.
  assert parsed.metadata_fields == ()
  assert (parsed.pooling, parsed.max_seq_length, parsed.long_documents,
          parsed.precision, parsed.batch_size, parsed.sort_window,
          parsed.progress_every) == ('mean', 128, 'truncate', 'fp32', 256,
                                     4096, 10.0)
