"""Embedding queries exactly as an output's documents were embedded.

    from pipeline import query
    embedder = query.for_output('out/run_local/embeddings')
    vectors = embedder.encode(['how do I sort a list?'])  # float32 [1, dim]

for_output() reads how the output's vectors were made from the output
itself: the model_fingerprint its records carry, and the note a run keeps
beside the output under that fingerprint (transforms/provenance.py): the
model by content identity, pooling, normalisation, max_seq_length,
long-document handling, precision and layout. It finds that model again
(the preset, the folder or the TF Hub handles the run used, or one you
name) and refuses, in one line, a model whose content differs: a query
embedded with another model, pooling or normalisation gives vectors that
look fine and rank badly.

from_settings() takes the job's flags as keywords instead, for users
without an output. From a shell, `python -m pipeline.query --output OUT
TEXT...` (or the job's model flags in place of --output) prints each
text's vector as a JSON line. Either way the model loads once, and
encode() runs the
job's own tokenizer, batcher and encoder step (transforms/direct.py).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from typing import Optional, Sequence, Union

import numpy as np

from pipeline import presets
from transforms.elements import DeadLetter
from transforms.elements import Document
from transforms.provenance import Provenance
from transforms.spec import EmbeddingSpec

# The keyword settings that decide an embedding, as the job's flags name
# them (EmbeddingSpec's fields besides the model).
SETTINGS = tuple(f.name for f in dataclasses.fields(EmbeddingSpec)
                 if f.name != 'model')
# Where a model is, as the job's flags name it.
MODEL_FLAGS = ('model', 'model_dir', 'preprocessor', 'encoder')


class QueryEmbedder:
  """Texts -> float32 vectors, made as the job makes a document's."""

  def __init__(self, note: Provenance, model: presets.ResolvedModel):
    from transforms.direct import DirectEmbedder
    self.provenance = note
    self.model = model
    self._embedder = DirectEmbedder(note.spec, model.preprocessor,
                                    model.encoder, packing=note.packing)

  @property
  def spec(self) -> EmbeddingSpec:
    return self.provenance.spec

  @property
  def fingerprint(self) -> str:
    """The model_fingerprint of the records these vectors match."""
    return self.spec.fingerprint()

  def encode(self, texts: Union[str, Sequence[str]],
             texts_b: Optional[Sequence[str]] = None) -> np.ndarray:
    """float32 [len(texts), dim] (one text: [dim]). With texts_b, pairs,
    as --text_b_field embeds them. A text the job would reject (empty,
    holding U+0000) is a ValueError naming it."""
    if isinstance(texts, str):
      single = None if texts_b is None else [texts_b]
      return self.encode([texts], single)[0]
    texts = list(texts)
    if texts_b is not None and len(texts_b) != len(texts):
      raise ValueError(f'{len(texts)} texts but {len(texts_b)} texts_b')
    docs = []
    for i, text in enumerate(texts):
      text_b = None if texts_b is None else texts_b[i]
      for part in (text, text_b):
        if part is not None and not isinstance(part, str):
          raise ValueError(f'query {i + 1} is a {type(part).__name__}, '
                           'not a string')
      if not text.strip() or (text_b is not None and not text_b.strip()):
        raise ValueError(f'query {i + 1} is empty')
      if '\0' in text or (text_b and '\0' in text_b):
        raise ValueError(f'query {i + 1} holds U+0000, which the job '
                         'rejects too')
      docs.append(Document(id=str(i), text=text, text_b=text_b,
                           source=f'query {i + 1}'))
    if not docs:
      return np.zeros((0, 0), np.float32)
    out = []
    for result in self._embedder.embed(docs):
      if isinstance(result, DeadLetter):
        raise ValueError(f'{result.source} cannot be embedded: '
                         f'{result.error_type}: {result.message}')
      out.append(np.asarray(result.embedding, np.float32))
    return np.stack(out)


def for_output(output: str, *, output_format: str = 'auto',
               model_cache_dir: Optional[str] = None,
               **flags) -> QueryEmbedder:
  """The embedder of an output's queries (file prefix, bq:// or
  postgresql:// table). `flags`: where the model is, if not where the run
  had it (model, model_dir, or preprocessor and encoder); and, for an
  output that has no note (written by an older version), the job's
  settings (pooling, max_seq_length, normalize, long_documents,
  chunk_stride, precision, packing), checked against its records'
  fingerprint."""
  return QueryEmbedder(*provenance_of(output, output_format=output_format,
                                      model_cache_dir=model_cache_dir,
                                      **flags))


def from_settings(*, model_cache_dir: Optional[str] = None,
                  packing: str = 'auto', **flags) -> QueryEmbedder:
  """An embedder from the job's flags, as keywords (model='minilm-l6',
  normalize=True, ...; the job's defaults otherwise)."""
  _check_names(flags, MODEL_FLAGS + SETTINGS)
  resolved = _resolve(flags, model_cache_dir)
  return QueryEmbedder(_note(resolved, flags, packing), resolved)


def provenance_of(output: str, *, output_format: str = 'auto',
                  model_cache_dir: Optional[str] = None, packing=None,
                  **flags) -> tuple[Provenance, presets.ResolvedModel]:
  """How an output's vectors were made, and the model found for them
  (checked by content)."""
  from pipeline import read
  _check_names(flags, MODEL_FLAGS + SETTINGS)
  backend = read.backend(output, output_format)
  fingerprint = _fingerprint(backend, output)
  notes = backend.notes()
  note = notes.find(fingerprint)
  settings = {k: v for k, v in flags.items() if k in SETTINGS}
  located = {k: v for k, v in flags.items() if k in MODEL_FLAGS and v}
  if note is None:
    if not located:
      raise ValueError(
          f'{output} does not record how its vectors were made ({notes.shown()}'
          f' has no note of their fingerprint {fingerprint}: an output '
          'written by an older version); pass the run\'s model (--model or '
          '--model_dir) and its --pooling, --max_seq_length, --normalize, '
          '--long_documents, --chunk_stride and --precision')
    resolved = _resolve(located, model_cache_dir)
    note = _note(resolved, settings, packing or 'auto')
    if note.fingerprint != fingerprint:
      raise ValueError(
          f'these settings make vectors of fingerprint {note.fingerprint}, '
          f'but {output} holds vectors of {fingerprint}: check the model and '
          '--pooling, --max_seq_length, --normalize, --long_documents, '
          '--chunk_stride and --precision of the run that wrote it')
    return note, resolved
  for name, value in settings.items():
    if value is not None and getattr(note.spec, name) != value:
      raise ValueError(
          f'{output} was embedded with {name}={getattr(note.spec, name)!r}, '
          f'not {value!r}: its queries must be too (leave {name} out)')
  if packing is not None:
    note = dataclasses.replace(note, packing=bool(packing))
  return note, _found_model(note, located, model_cache_dir, output)


def _check_names(flags: dict, known: tuple) -> None:
  unknown = sorted(set(flags) - set(known))
  if unknown:
    raise TypeError(f'unknown setting(s) {", ".join(unknown)}; known: '
                    f'{", ".join(known)}')


def _fingerprint(backend, output: str) -> str:
  """The fingerprint of the output's first record: one run writes one
  (a changed spec re-embeds every record), and a search checks every
  record it reads against it."""
  try:
    first = next(iter(backend.scan(['model_fingerprint'])), None)
  except (ValueError, RuntimeError, OSError) as e:
    raise ValueError(f'cannot read {output}: {e}') from e
  if first is None:
    raise ValueError(f'{output} holds no embeddings')
  return first['model_fingerprint']


def _resolve(located: dict, model_cache_dir: Optional[str]
             ) -> presets.ResolvedModel:
  return presets.resolve(located.get('model'), located.get('preprocessor'),
                         located.get('encoder'), model_cache_dir,
                         located.get('model_dir')).with_identity()


def _note(resolved: presets.ResolvedModel, settings: dict,
          packing: str) -> Provenance:
  """The provenance the job would note with these flags and model."""
  given = {k: v for k, v in settings.items()
           if k in SETTINGS and v is not None}
  if given.get('precision') == 'auto':
    from tfmodels.devices import auto_precision, configure_gpus
    given['precision'] = (auto_precision(gpu=bool(configure_gpus()))
                          if resolved.low_precision else 'fp32')
  if packing not in ('auto', 'on', 'off', True, False):
    raise ValueError(f'packing must be auto, on or off, not {packing!r}')
  packed = resolved.packed_rows and packing in ('auto', 'on', True)
  if packing in ('on', True) and not resolved.packed_rows:
    raise ValueError(f'packing on needs an encoder with packed calls; '
                     f'{resolved.name} has none')
  spec = EmbeddingSpec(model=resolved.identity, **given)
  return Provenance(spec=spec, model_name=resolved.name,
                    preprocessor=resolved.preprocessor,
                    encoder=resolved.encoder, packing=packed)


def _found_model(note: Provenance, located: dict,
                 model_cache_dir: Optional[str],
                 output: str) -> presets.ResolvedModel:
  """The model that made the output: where `located` says, else where the
  run had it; refused if its content is another."""
  failures = []
  for where in ([located] if located else _where_noted(note)):
    shown = ' '.join(f'--{k} {v}' for k, v in where.items())
    try:
      resolved = _resolve(where, model_cache_dir)
    except (ValueError, RuntimeError, OSError) as e:
      failures.append(f'cannot be loaded from {shown}: {e}')
      continue
    if resolved.identity == note.spec.model:
      return resolved
    failures.append(
        f'the model at {shown} is another (its content differs: '
        f'{_short(resolved.identity)}, not {_short(note.spec.model)})')
  raise ValueError(
      f'{output} was embedded with {note.model_name}, and {failures[-1]}; '
      'pass --model_dir FOLDER holding the model the run used')


def _where_noted(note: Provenance) -> list[dict]:
  """Where to look for the run's model, in order."""
  if note.model_dir:
    return [{'model_dir': note.model_dir}]
  preset = presets.PRESETS.get(note.model_name)
  if preset and preset.exported:
    # A preset's export, in the cache the run used, or built in this
    # cache from the same source.
    folder = note.preprocessor.rstrip('/').rsplit('/', 1)[0]
    return [{'model_dir': folder}, {'model': note.model_name}]
  return [{'preprocessor': note.preprocessor, 'encoder': note.encoder}]


def _short(identity: str) -> str:
  return identity if len(identity) <= 24 else identity[:20] + '...'



# The job's flags that a query takes: where the output or the model is, and
# what decides an embedding.
QUERY_FLAGS = ('output', 'output_format', 'model_cache_dir', 'packing',
               *MODEL_FLAGS, *SETTINGS)


def parser() -> argparse.ArgumentParser:
  """The job's own flags (declared once, in pipeline/options.py), of which
  a query takes QUERY_FLAGS, and the texts."""
  from pipeline import options
  p = argparse.ArgumentParser(
      prog='python -m pipeline.query',
      description='Print the vector of each TEXT, one JSON object a line '
      '({"text", "model_fingerprint", "embedding"}), made exactly as the '
      'documents of --output were (the model and settings it recorded), or '
      'as the job would make it with the model and settings flags given '
      'here (the job\'s own flags, with its defaults).')
  p.add_argument('texts', nargs='+', metavar='TEXT',
                 help='text to embed (before the flags: a switch such as '
                 '--normalize takes the word after it as its value)')
  options.add_flags(p, only=QUERY_FLAGS)
  return p


def main(argv=None) -> int:
  p = parser()
  args = p.parse_args(argv)
  defaults = vars(p.parse_args(['-']))
  given = {dest: value for dest, value in vars(args).items()
           if dest != 'texts' and value != defaults[dest]}
  from pipeline import console
  console.configure(verbose=False)
  try:
    if args.output:
      embedder = for_output(**{k: v for k, v in given.items()
                               if k != 'output'}, output=args.output)
    else:
      embedder = from_settings(**given)
    vectors = embedder.encode(args.texts)
  except (ValueError, RuntimeError, OSError) as e:
    print(f'pipeline.query: error: {e}', file=sys.stderr)
    return 2
  for text, vector in zip(args.texts, vectors):
    print(json.dumps({'text': text, 'model_fingerprint': embedder.fingerprint,
                      'embedding': [round(float(v), 7) for v in vector]},
                     ensure_ascii=False))
  return 0


if __name__ == '__main__':
  sys.exit(main())
