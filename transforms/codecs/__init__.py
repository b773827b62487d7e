"""File formats, one codec each: how rows are encoded to and decoded from
the format's bytes (Parquet's Arrow tables, TFRecord's framed
tf.train.Examples, JSON lines). Shared by the input sources
(transforms/sources/, which read a user's own schema), the output backends
(transforms/backends/, which write and read back the job's records for
--previous) and pipeline.read. Values are converted per field kind by
transforms/records.py's Kind, not here.
"""


class DamagedFile(ValueError):
  """A file whose bytes are not what its writer wrote: cut short, or
  changed after it was written. Raised by the codecs' checked readers, so
  that every reader of a format says the same thing (the file, where in
  it, and what is wrong) instead of returning other values, stopping
  early without a word, or dumping the damaged bytes."""

  ADVICE = ('the file was cut or changed after it was written: write it '
            'again (re-run the job that wrote it) or remove it')

  def __init__(self, path: str, where: str, problem: str):
    self.path, self.where, self.problem = path, where, problem
    super().__init__(f'{path or "a file"}: {where} is damaged: {problem}; '
                     f'{self.ADVICE}')
