"""How many padded tokens one encoder call may hold, and knowing when it held
too many.

A token budget can only start from an estimate: what an encoder allocates
per token depends on the kernels, XLA's fusions and the allocator. The
estimate below errs low on purpose, and the pipeline lowers a bucket's budget
whenever the device runs out of memory (transforms/embed.py), so a wrong
guess costs a few retried calls, not the job.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from dataclasses import dataclass
from typing import Optional

# Where no accelerator holds the model: the budget this project's CPU
# measurements ran with (docs/performance.md), and the
# --max_batch_tokens default before auto.
CPU_TOKEN_BUDGET = 8192

# Of the device's memory, what the model may use: the rest is left to the
# CUDA context, cuDNN/XLA workspaces and fragmentation.
_USABLE_FRACTION = 0.85
_RESERVED_BYTES = 1 << 30
# Live activations per token, in values, are bounded by about
# 8 H + 2 I + 2 heads x L within one layer (residual, Q/K/V, context and
# output projections, the feed-forward intermediate and its activation,
# attention scores and probabilities); layers run one after another, so
# layers add weights, not activations. This factor covers what the estimate
# does not see (copies around casts, the packer, pooling).
_SAFETY = 2.0

# GPU memory by device name, for when nvidia-smi is not on the PATH.
_KNOWN_MEMORY_GIB = (('H200', 141), ('H100', 80), ('A100-SXM4-80GB', 80),
                     ('A100 80GB', 80), ('A100', 40), ('L4', 24), ('T4', 16),
                     ('V100', 16), ('P100', 16), ('P4', 8))


@dataclass(frozen=True)
class ModelShape:
  """What decides an encoder's memory, learnt from the loaded encoder itself
  (any TF Hub encoder with the BERT interface, not only this project's)."""
  hidden_size: int
  num_layers: int
  num_heads: int
  intermediate_size: int
  parameters: int


@dataclass(frozen=True)
class Device:
  """Where the encoder runs: a GPU's name and memory, or the CPU."""
  name: str
  memory_bytes: Optional[int] = None  # None on CPU

  @property
  def is_gpu(self) -> bool:
    return self.memory_bytes is not None


def activation_bytes(precision: str) -> int:
  return 4 if precision == 'fp32' else 2


def weight_bytes(shape: ModelShape, precision: str) -> int:
  """Weights are stored in float32; lower precisions add their cast copy."""
  return shape.parameters * (4 + (0 if precision == 'fp32' else 2))


def token_budget(*, shape: Optional[ModelShape], device: Device,
                 precision: str, seq_length: int, max_rows: int,
                 packed: bool = False) -> int:
  """Padded tokens per call for one length bucket, a whole number of rows.

  On a CPU: CPU_TOKEN_BUDGET. On a GPU: (85% of its memory - 1 GiB - the
  weights) / (bytes per activation value x (8 H + 2 I + 2 heads x L) x 2),
  at least one row and at most max_rows rows. Packed rows add their
  attention mask, L float32 values per token (and as much again while it is
  built), whatever the precision. It assumes the encoder has the GPU to
  itself (--large_model, or one SDK process per GPU).
  """
  if not device.is_gpu:
    budget = CPU_TOKEN_BUDGET
  else:
    usable = (device.memory_bytes * _USABLE_FRACTION - _RESERVED_BYTES -
              weight_bytes(shape, precision))
    per_token = activation_bytes(precision) * _SAFETY * (
        8 * shape.hidden_size + 2 * shape.intermediate_size +
        2 * shape.num_heads * seq_length)
    if packed:
      per_token += 4 * _SAFETY * 2 * seq_length
    budget = int(max(usable, 0) // per_token)
  rows = max(1, min(max_rows, budget // seq_length))
  return rows * seq_length


def is_out_of_memory(exc: BaseException) -> bool:
  """TensorFlow's out-of-memory error, also when re-raised by another
  process (a shared large_model copy): by type, else by TF's message."""
  import tensorflow as tf
  if isinstance(exc, tf.errors.ResourceExhaustedError):
    return True
  text = str(exc)
  return 'ResourceExhaustedError' in type(exc).__name__ or (
      'OOM when allocating' in text or 'RESOURCE_EXHAUSTED' in text)


def _nvidia_smi_memory() -> Optional[int]:
  # Dataflow's driver install puts it under /usr/local/nvidia/bin.
  exe = shutil.which('nvidia-smi') or shutil.which(
      'nvidia-smi', path='/usr/local/nvidia/bin')
  if not exe:
    return None
  try:
    out = subprocess.run(
        [exe, '--query-gpu=memory.total', '--format=csv,noheader,nounits',
         '-i', '0'], capture_output=True, text=True, timeout=20, check=True)
    return int(float(out.stdout.strip().splitlines()[0])) << 20
  except (OSError, ValueError, IndexError, subprocess.SubprocessError):
    return None


def find_device() -> Device:
  """The first GPU TensorFlow sees, with its memory (nvidia-smi, else a table
  of device names), or the CPU."""
  import tensorflow as tf
  gpus = tf.config.list_physical_devices('GPU')
  if not gpus:
    return Device(name='cpu')
  name = tf.config.experimental.get_device_details(gpus[0]).get(
      'device_name', gpus[0].name)
  memory = _nvidia_smi_memory()
  if memory is None:
    memory = next((gib << 30 for key, gib in _KNOWN_MEMORY_GIB
                   if key in name), 16 << 30)
    logging.warning('GPU memory of %s not read from nvidia-smi; assuming '
                    '%d GiB', name, memory >> 30)
  return Device(name=name, memory_bytes=memory)
