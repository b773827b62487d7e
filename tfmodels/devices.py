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
  import tensorflow as tf
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


# CPU features whose bf16 matrix products beat float32 (AMX tiles, AVX-512
# BF16 dot products). Without them bf16 is emulated: on an AVX2-only CPU
# the pipeline ran slower in bf16 than in fp32 (docs/performance.md).
BF16_CPU_FLAGS = ('amx_bf16', 'avx512_bf16')


def cpu_flags(cpuinfo: str | None = None) -> set[str]:
  """The CPU's feature flags, from /proc/cpuinfo (empty where there is
  none, e.g. not Linux)."""
  if cpuinfo is None:
    try:
      with open('/proc/cpuinfo', encoding='utf-8') as f:
        cpuinfo = f.read()
    except OSError:
      return set()
  for line in cpuinfo.splitlines():
    if line.startswith('flags'):
      return set(line.split(':', 1)[1].split())
  return set()


def auto_precision(*, gpu: bool, flags: set[str] | None = None) -> str:
  """What --precision auto means where the encoder runs: bf16 on a GPU or
  a CPU with native bf16 matrix products, fp32 elsewhere."""
  flags = cpu_flags() if flags is None else flags
  return 'bf16' if gpu or any(f in flags for f in BF16_CPU_FLAGS) else 'fp32'
