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
Every entry point (the job, its workers, the benchmarks) imports this
package before TensorFlow.
"""

import os as _os

_os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '1')
_os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
