"""What decides an embedding, declared once.

The model fingerprint written into every output record (which `--previous`
compares before reusing a vector) and the configuration the workers load
their model with are both read off one `EmbeddingSpec`, so a setting cannot
change the vectors without changing the fingerprint. Where the model files
lie is not part of it: the same model in another folder or bucket is the
same model (`model` is its content identity, see tfmodels/identity.py).

Settings that leave the vectors equal within float rounding (XLA, batch
sizes, token budgets, the runner) are left out on purpose, as is anything
about where the job runs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Optional

from tfmodels.embedder import POOLINGS, PRECISIONS
from transforms.batching import LONG_DOCUMENTS


def _choice(values: tuple) -> dict:
  return {'choices': values}


@dataclasses.dataclass(frozen=True)
class EmbeddingSpec:
  """Everything besides the text that decides a document's embedding."""
  # Content identity of the preprocessor + encoder pair: a digest of their
  # SavedModels, or a versioned TF Hub URL.
  model: str
  pooling: str = dataclasses.field(default='mean',
                                   metadata=_choice(POOLINGS))
  max_seq_length: int = 128
  normalize: bool = False
  long_documents: str = dataclasses.field(default='truncate',
                                          metadata=_choice(LONG_DOCUMENTS))
  chunk_stride: Optional[int] = None
  precision: str = dataclasses.field(default='fp32',
                                     metadata=_choice(PRECISIONS))

  def __post_init__(self):
    for f in dataclasses.fields(self):
      choices = f.metadata.get('choices')
      if choices and getattr(self, f.name) not in choices:
        raise ValueError(f'{f.name} must be one of {choices}, got '
                         f'{getattr(self, f.name)!r}')
    if self.max_seq_length < 8:
      raise ValueError('max_seq_length must be at least 8')
    if self.chunk_stride is not None and self.chunk_stride < 1:
      raise ValueError('chunk_stride must be positive')
    if self.chunk_stride is not None and (
        self.chunk_stride > self.max_seq_length - 2):
      # The widest window: a single text's two special tokens aside.
      raise ValueError(f'chunk_stride {self.chunk_stride} is more than a '
                       f'chunk window ({self.max_seq_length - 2} tokens at '
                       f'max_seq_length {self.max_seq_length}): tokens '
                       'between windows would not be embedded')

  def fingerprint(self) -> str:
    """Written into every output record as model_fingerprint."""
    fields = dataclasses.asdict(self)
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()
                          ).hexdigest()[:32]

  def model_kwargs(self) -> dict:
    """The EmbeddingModel settings that come from the spec."""
    return dict(pooling=self.pooling, normalize=self.normalize,
                max_seq_length=self.max_seq_length, precision=self.precision)
