"""The worker processes of local runs with --direct_running_mode
multi_processing: Beam's own SDK worker, started with SIGINT ignored.

Why: a terminal's Ctrl-C reaches every process of its foreground group,
and Beam's workers would each print a KeyboardInterrupt traceback while
the command (pipeline/interrupts.py) decides what the interrupt does: it
kills its workers on the way out. SIGTERM keeps its default (the worker
ends without a word).

local_runner() is the one place that starts them: FnApiRunner's public
default_environment, a SubprocessSDKEnvironment running this module.
FnApiRunner replaces its environment with Beam's own worker command when
the options say multi_processing, so that mode is handed over here and the
runner told in_memory (which keeps the given environment: N processes of
this module for --direct_num_workers N).
"""

import logging
import signal
import sys

if __name__ == '__main__':
  signal.signal(signal.SIGINT, signal.SIG_IGN)

from apache_beam.options.pipeline_options import DirectOptions
from apache_beam.runners.portability.fn_api_runner import fn_runner
from apache_beam.transforms import environments

COMMAND = f'{sys.executable} -m pipeline.worker'


class _NotTheWorkerCountWarning(logging.Filter):
  """FnApiRunner warns that in_memory runs one worker; with this module's
  environment it runs --direct_num_workers processes."""

  def filter(self, record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith(
        'If direct_num_workers is not equal to 1')


def local_runner(options, progress_request_frequency=None):
  """The in-process runner; its workers are this module's processes when
  the options ask for multi_processing."""
  direct = options.view_as(DirectOptions)
  environment = None
  if direct.direct_running_mode == 'multi_processing':
    environment = environments.SubprocessSDKEnvironment.from_command_string(
        command_string=COMMAND)
    direct.direct_running_mode = 'in_memory'
    logger = logging.getLogger(fn_runner.__name__)
    if not any(isinstance(f, _NotTheWorkerCountWarning)
               for f in logger.filters):
      logger.addFilter(_NotTheWorkerCountWarning())
  return fn_runner.FnApiRunner(
      default_environment=environment,
      progress_request_frequency=progress_request_frequency)


def main() -> None:
  from apache_beam.runners.worker import sdk_worker_main
  sdk_worker_main.main(sys.argv)


if __name__ == '__main__':
  main()
