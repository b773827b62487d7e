"""TensorFlow-only model code: tokenizers, encoders and their TF Hub exports.

No Beam imports here: these modules are also used by benchmarks and the
export command, and must stay importable in a plain TensorFlow environment.

Importing this package sets TensorFlow's process-wide defaults, which only
take effect before TensorFlow itself is imported (a user's own setting wins):
- TF_ENABLE_ONEDNN_OPTS=1: TensorFlow turns its oneDNN CPU kernels on by
  itself only on CPUs with AVX-512 VNNI/BF16 or AMX; on an AVX2-only CPU
  (AMD EPYC, 2 cores) the same encoder ran 1.45x faster with them on
  (docs/performance.md).
- TF_CPP_MIN_LOG_LEVEL=2: its C++ start-up chatter buries the summary;
  warnings and errors still show.
- TF_USE_LEGACY_KERAS=1 (where tf-keras is installed, as requirements.txt
  has it): `import tensorflow` then loads tf-keras, which tensorflow_hub
  imports anyway, instead of Keras 3 with matplotlib and scikit-learn; 1.1
  s less per process start (tensorflow + tensorflow_hub: 4.2-4.5 s against
  3.2-3.4 s, measured). Nothing here uses Keras 3.
Every entry point (the job, its workers, the benchmarks) imports this
package before TensorFlow.

Quiet runs (the job without --verbose) go further, see quiet_startup().
"""

import contextlib as _contextlib
import importlib.util as _importlib_util
import os as _os
import sys as _sys
import tempfile as _tempfile

_os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '1')
_os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
if _importlib_util.find_spec('tf_keras') is not None:
  _os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')

# Set by quiet_startup() and inherited by local worker processes.
QUIET_ENV = 'BEAM_TEXT_EMBED_QUIET'


@_contextlib.contextmanager
def _stderr_held():
  """File descriptor 2 into a temporary file for the block; replayed if the
  block fails. TensorFlow's and tf.text's native libraries log while they
  load, before absl's logging is set up, and these lines ignore
  TF_CPP_MIN_LOG_LEVEL ("All log messages before absl::InitializeLog() is
  called are written to STDERR"): only the descriptor can hold them."""
  _sys.stderr.flush()
  saved = _os.dup(2)
  with _tempfile.TemporaryFile() as held:
    _os.dup2(held.fileno(), 2)
    try:
      yield
    except BaseException:
      _os.dup2(saved, 2)
      held.seek(0)
      _os.write(2, held.read())
      raise
    finally:
      _os.dup2(saved, 2)
      _os.close(saved)


def import_quietly() -> None:
  """Imports TensorFlow and tf.text with their start-up lines held back, in
  a quiet process (QUIET_ENV set) that has not imported them yet."""
  if _os.environ.get(QUIET_ENV) != '1' or 'tensorflow' in _sys.modules:
    return
  with _stderr_held():
    import tensorflow  # noqa: F401
    import tensorflow_text  # noqa: F401


def quiet_startup(import_now: bool = True) -> None:
  """For this process and the local workers it starts: TensorFlow's native
  logs off (level 3; the E-level lines seen in a healthy run are "failed
  call to cuInit" on machines without a GPU and oneDNN's int64 fallback
  notice, and real failures still raise Python exceptions) and its
  load-time lines held. `import_now` False leaves the import to a later
  import_quietly() (the job's launch imports TensorFlow only after its
  preflight, so that a preflight failure takes seconds)."""
  _os.environ[QUIET_ENV] = '1'
  _os.environ['TF_CPP_MIN_LOG_LEVEL'] = '3'
  if import_now:
    import_quietly()


import_quietly()
