"""EmbedOptions: the job's flags (pipeline/options.py) as Beam's
PipelineOptions.

A module of its own because importing Beam takes over a second, and the
command answers --help and refuses a bad flag without it: pipeline/
options.py imports neither Beam nor this module.
"""

from apache_beam.options.pipeline_options import PipelineOptions

from pipeline import options


class EmbedOptions(PipelineOptions):
  """Flags of `python -m pipeline.run`; Beam's own flags work alongside."""

  @classmethod
  def _add_argparse_args(cls, parser):
    options.add_flags(parser)
