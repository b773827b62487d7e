"""Where files are: a local path, or a URL (gs://, file://, ...) that
Beam's FileSystems reach. The one place that tells them apart."""

from __future__ import annotations


def has_scheme(path: str) -> bool:
  """Whether a path is a URL with a scheme (gs://bucket/..., bq://...,
  file://...) rather than a local path."""
  return '://' in path


def absolute(path: str) -> str:
  """A local path made absolute (a URL as it is): for locations kept for
  another process, run from another folder."""
  import os
  return path if has_scheme(path) else os.path.abspath(path)
