"""File formats, one codec each: how rows are encoded to and decoded from
the format's bytes (Parquet's Arrow tables, TFRecord's framed
tf.train.Examples, JSON lines). Shared by the input sources
(transforms/sources/, which read a user's own schema), the output backends
(transforms/backends/, which write and read back the job's records for
--previous) and pipeline.read. Values are converted per field kind by
transforms/records.py's Kind, not here.
"""
