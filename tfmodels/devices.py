"""GPU set-up for workers: memory growth, and failing fast without a GPU."""

from __future__ import annotations


class NoGpuError(RuntimeError):
  pass


def configure_gpus(require_gpu: bool = False) -> list[str]:
  """Turns on memory growth for every visible GPU and returns their names.

  Without memory growth TensorFlow reserves nearly all GPU memory in the
  first process that touches a GPU, so the other SDK processes of a Dataflow
  worker fail to start. Must run before TensorFlow initialises the GPUs
  (before any model is loaded); later calls leave the setting as it is.
  With require_gpu, no visible GPU is an error instead of a silent and
  much slower CPU run.
  """
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  gpus = tf.config.list_physical_devices('GPU')
  for gpu in gpus:
    try:
      tf.config.experimental.set_memory_growth(gpu, True)
    except RuntimeError:
      pass  # already initialised by an earlier load in this process
  if require_gpu and not gpus:
    raise NoGpuError(
        '--require_gpu: TensorFlow sees no GPU here (tf.config.'
        'list_physical_devices("GPU") is empty). On Dataflow, check '
        '--dataflow_service_options worker_accelerator=...;'
        'install-nvidia-driver and a worker image with CUDA '
        '(--sdk_container_image); locally, drop --require_gpu to run on CPU.')
  return [gpu.name for gpu in gpus]
