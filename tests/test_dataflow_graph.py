"""The Dataflow job for GPU workers, built from the README's flags without
contacting Google (Beam's --dry_run stops before staging and submission)."""

from __future__ import annotations

import apache_beam as beam
from apache_beam.options.pipeline_options import DebugOptions
from apache_beam.options.pipeline_options import GoogleCloudOptions
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.options.pipeline_options import WorkerOptions

from pipeline import presets
from pipeline.options import EmbedOptions
from pipeline.run import build_pipeline
from tests import corpora

IMAGE = 'us-docker.pkg.dev/my-project/beam/text-embed-gpu:2.77.0'
ACCELERATOR = 'worker_accelerator=type:nvidia-l4;count:1;install-nvidia-driver'


def test_dataflow_gpu_job_graph(minilm_export):
  argv = ['--runner', 'DataflowRunner', '--project', 'my-project',
          '--region', 'us-central1', '--temp_location', 'gs://my-bucket/tmp',
          '--sdk_container_image', IMAGE,
          '--dataflow_service_options', ACCELERATOR,
          '--experiments', 'use_runner_v2', '--machine_type', 'g2-standard-8',
          '--input', corpora.SAMPLE,
          '--output', 'gs://my-bucket/embeddings/docs',
          '--large_model', '--require_gpu', '--precision', 'bf16',
          '--dry_run', 'True']
  options = PipelineOptions(argv)
  p = beam.Pipeline(options=options)
  build_pipeline(p, options.view_as(EmbedOptions),
                 presets.from_export_dir(minilm_export))
  job = p.run().job
  names = {t.unique_name for t in
           job.proto_pipeline.components.transforms.values()}
  assert {'Embed/Tokenize/BeamML_RunInference',
          'Embed/Encode/BeamML_RunInference', 'Read', 'Write',
          'WriteDeadLetters'} <= names
  [env] = job.proto_pipeline.components.environments.values()
  assert env.urn == 'beam:env:docker:v1' and IMAGE.encode() in env.payload
  opts = job.options
  assert ACCELERATOR in opts.view_as(GoogleCloudOptions).dataflow_service_options
  assert 'use_runner_v2' in opts.view_as(DebugOptions).experiments
  assert opts.view_as(WorkerOptions).machine_type == 'g2-standard-8'
  embed = opts.view_as(EmbedOptions)
  assert embed.large_model and embed.require_gpu and embed.precision == 'bf16'
