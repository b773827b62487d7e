"""Beam's RunInference and ModelHandler, imported without its model manager.

`apache_beam.ml.inference.base` (Beam 2.77) imports its optional
`model_manager` at import time, which imports torch and scipy whenever they
are installed: 2.6 s of every process start here, in the launcher and in
every worker, for a feature this job never turns on (RunInference's
`use_model_manager`). Where torch is absent the import fails instead, and
Beam then also drops its `resource` module and warns "Resource module is not
available for current platform" on every batch size estimate.

So before Beam's module is first imported, a stand-in `model_manager` module
is registered whose ModelManager refuses to run with a clear message. If
something imported Beam's module earlier in the process, it is left as it
is. Import RunInference and ModelHandler from here, never from Beam.
"""

from __future__ import annotations

import sys
import types

_BASE = 'apache_beam.ml.inference.base'
_MANAGER = 'apache_beam.ml.inference.model_manager'


class _NoModelManager:
  """Stands in for Beam's ModelManager, which this job does not use."""

  def __init__(self, *args, **kwargs):
    del args, kwargs
    raise RuntimeError(
        'RunInference(use_model_manager=True) is not available in this '
        'pipeline: transforms/inference.py keeps Beam from importing torch '
        'for its model manager')


if _BASE not in sys.modules and _MANAGER not in sys.modules:
  _stub = types.ModuleType(_MANAGER, _NoModelManager.__doc__)
  _stub.ModelManager = _NoModelManager
  sys.modules[_MANAGER] = _stub

from apache_beam.ml.inference.base import ModelHandler
from apache_beam.ml.inference.base import RunInference

__all__ = ['ModelHandler', 'RunInference']
