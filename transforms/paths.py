"""Where files are: a local path, or a URL (gs://, file://, ...) that
Beam's FileSystems reach. The one place that tells them apart."""

from __future__ import annotations


def has_scheme(path: str) -> bool:
  """Whether a path is a URL with a scheme (gs://bucket/..., bq://...,
  file://...) rather than a local path."""
  return '://' in path
