"""Where the encoder's time goes, op by op: TensorFlow's profiler over an
export's packed call, in each precision, side by side in one run.

  .venv/bin/python bench/ops.py                       # minilm-l6, fp32,bf16
  .venv/bin/python bench/ops.py --model_dir DIR --rows 8 --length 128
  .venv/bin/python bench/ops.py --smoke               # 2 rows of 16 tokens

The call is the one the job makes (`packed`, `packed_bf16`, ...: rows of
--length tokens, one document per row, random token ids), timed over
--rounds alternating rounds of --calls calls (median per call), then run
--repeat times under TensorFlow's profiler. Per precision it prints the
milliseconds per call, the matrix products' share, the achieved rate of
the projections and attention products (GFLOP/s), and the ops that took
longest: time inside each TensorFlow op kernel, summed over the op's
calls, per call of the encoder (on 2 cores two kernels can overlap, so
shares are of the summed kernel time). The last line is one JSON object.
Kernels are oneDNN's where TensorFlow uses them: `_MklNativeFusedMatMul`
is a product fused with its bias (and GELU), `_MklMatMul` one without.
"""

from __future__ import annotations

import argparse
import collections
import glob
import json
import os
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import tfmodels  # noqa: F401  TensorFlow's process defaults, first

from bench.gpu import flops_per_batch
from bench.throughput import cpu_info, cpu_line

# Names of the op kernels that are the matrix products.
PRODUCTS = ('_MklNativeFusedMatMul', '_MklMatMul', '_MklBatchMatMulV2',
            '_MklFusedBatchMatMulV2', 'MatMul', 'BatchMatMulV2',
            '_FusedMatMul')
# Profiler events that are not op kernels.
NOT_OPS = ('Record', 'StartRegion', 'StopRegion', 'Run', 'Process')


def op_times(fn, inputs, repeat: int) -> dict:
  """{op type: seconds per call} from TensorFlow's profiler (the host
  plane's TraceMe events named 'name:Type')."""
  import tensorflow as tf
  from tensorflow.tsl.profiler.protobuf import xplane_pb2
  logdir = tempfile.mkdtemp(prefix='bench-ops-')
  tf.profiler.experimental.start(logdir)
  for _ in range(repeat):
    fn(inputs)['mean'].numpy()
  tf.profiler.experimental.stop()
  [path] = glob.glob(os.path.join(logdir, '**', '*.xplane.pb'),
                     recursive=True)
  space = xplane_pb2.XSpace()
  with open(path, 'rb') as f:
    space.ParseFromString(f.read())
  total: collections.Counter = collections.Counter()
  for plane in space.planes:
    if 'host' not in plane.name.lower():
      continue
    for line in plane.lines:
      for event in line.events:
        name = plane.event_metadata[event.metadata_id].name
        # Op kernels are 'node name:OpType'; the executor's own events
        # ('ExecutorState::Process', 'EagerExecute: __inference_...') and
        # the function around them are not.
        if ':' not in name or '::' in name:
          continue
        op = name.rsplit(':', 1)[1]
        if op.startswith((' ', '__inference')) or op in NOT_OPS:
          continue
        total[op] += event.duration_ps
  return {op: ps / 1e12 / repeat for op, ps in total.items()}


def nominal_peak_gflops(cpu: dict, precision: str):
  """Dense peak of the products from the reported clock, the cores and the
  flags: FLOPs per cycle and core of the widest unit the flags name (AMD's
  AVX-512 runs as two 256-bit halves: 32 fp32 / 64 bf16; Intel's server
  cores have two 512-bit FMA units: 64 / 128, AMX 1,024 bf16; AVX2: 32 fp32
  on both). A virtual machine may report its base clock, below what the
  cores boost to: a measured rate above this peak says so. None where it
  cannot tell."""
  flags, amd = set(cpu['flags']), cpu['vendor'] == 'AuthenticAMD'
  if not cpu['mhz']:
    return None
  if precision == 'fp32':
    per_cycle = (32 if amd else 64) if 'avx512f' in flags else (
        32 if 'avx2' in flags else None)
  elif precision == 'bf16':
    per_cycle = 1024 if 'amx_bf16' in flags else (
        (64 if amd else 128) if 'avx512_bf16' in flags else None)
  else:
    per_cycle = None
  if per_cycle is None:
    return None
  return round(cpu['cpus'] * cpu['mhz'] / 1000 * per_cycle, 1)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--model_dir', default=None,
                      help='An export of this project (default: the '
                      'minilm-l6 preset, exported into .cache/models).')
  parser.add_argument('--precisions', default='fp32,bf16')
  parser.add_argument('--rows', type=int, default=64)
  parser.add_argument('--length', type=int, default=128)
  parser.add_argument('--rounds', type=int, default=3)
  parser.add_argument('--calls', type=int, default=3)
  parser.add_argument('--repeat', type=int, default=2,
                      help='Calls under the profiler.')
  parser.add_argument('--top', type=int, default=12)
  parser.add_argument('--smoke', action='store_true',
                      help='2 rows of 16 tokens, one round: checks that it '
                      'runs.')
  args = parser.parse_args()
  if args.smoke:
    args.rows, args.length, args.rounds, args.calls, args.repeat = (
        2, 16, 1, 1, 1)
  import numpy as np
  import tensorflow as tf

  from tfmodels import embedder, export
  model_dir = args.model_dir
  if model_dir is None:
    from pipeline import presets
    model_dir = presets.ensure_exported(
        'minilm-l6', os.path.join(ROOT, '.cache', 'models'))
  manifest = export.read_manifest(model_dir)
  encoder = embedder.import_hub().load(
      os.path.join(model_dir, export.ENCODER_DIR))
  precisions = args.precisions.split(',')
  fns = {p: embedder.packed_function(encoder, p) for p in precisions}
  rng = np.random.default_rng(0)
  shape = [args.rows, args.length]
  inputs = {
      # Ids from 1000 up: ordinary tokens in both vocabularies.
      'input_word_ids': tf.constant(rng.integers(1000, 20000, shape),
                                    tf.int32),
      'segment_ids': tf.ones(shape, tf.int32),
      'input_type_ids': tf.zeros(shape, tf.int32)}
  for fn in fns.values():
    fn(inputs)['mean'].numpy()  # traced and optimised before timing
  times: dict = {p: [] for p in precisions}
  for _ in range(args.rounds):
    for p, fn in fns.items():
      start = time.perf_counter()
      for _ in range(args.calls):
        fn(inputs)['mean'].numpy()
      times[p].append((time.perf_counter() - start) / args.calls)
  # export.json has no feed-forward size: BERT's 4 H, as budget.py assumes.
  hidden = manifest['hidden_size']
  work = flops_per_batch({'hidden_size': hidden,
                          'intermediate_size': 4 * hidden,
                          'num_hidden_layers': manifest['num_layers']},
                         args.length, args.rows)
  cpu = cpu_info()
  print(cpu_line(cpu))
  print(f'model: {model_dir} (hidden {manifest["hidden_size"]}, '
        f'{manifest["num_layers"]} layers, {manifest["format"]}); call: '
        f'{args.rows} rows x {args.length} tokens')
  out = {'cpu': cpu, 'rows': args.rows, 'length': args.length,
         'format': manifest['format'], 'precisions': {}}
  for p, fn in fns.items():
    seconds = statistics.median(times[p])
    ops = op_times(fn, inputs, args.repeat)
    kernels = sum(ops.values()) or 1.0
    products = sum(v for k, v in ops.items() if k in PRODUCTS)
    peak = nominal_peak_gflops(cpu, p)
    rate = work / seconds / 1e9
    of_peak = f' ({100 * rate / peak:.0f}% of a nominal {peak:g})' if (
        peak) else ''
    print(f'\n{p}: {seconds * 1000:.1f} ms per call, {rate:.1f} GFLOP/s'
          f'{of_peak}; products {100 * products / kernels:.0f}% of kernel '
          'time')
    for op, s in sorted(ops.items(), key=lambda kv: -kv[1])[:args.top]:
      print(f'  {op:<28}{s * 1000:>9.1f} ms {100 * s / kernels:>6.1f}%')
    out['precisions'][p] = {
        'ms_per_call': round(seconds * 1000, 2),
        'gflops': round(rate, 1),
        'nominal_peak_gflops': peak,
        'products_share': round(products / kernels, 3),
        'ops_ms': {k: round(v * 1000, 2) for k, v in sorted(
            ops.items(), key=lambda kv: -kv[1])}}
  if 'fp32' in times and 'bf16' in times:
    out['ratio_bf16_vs_fp32'] = round(statistics.median(times['fp32']) /
                                      statistics.median(times['bf16']), 3)
    print(f'\nbf16 / fp32 speed: {out["ratio_bf16_vs_fp32"]}')
  print(json.dumps(out))


if __name__ == '__main__':
  main()
