"""The job's graph, built from a launch Plan (pipeline/launch.py): read ->
embed -> write, with the dead letters of every step.

build_pipeline reads every decision from the plan (the model, the
precision that runs, the backends) and changes nothing: the same plan
builds the same graph, from the command or from a test or a notebook.
"""

from __future__ import annotations

import apache_beam as beam

from pipeline.launch import Plan
from transforms import embed as embed_lib
from transforms import read as read_lib
from transforms import records
from transforms.dedup import HandleDuplicateIds
from transforms.incremental import CarriedRecords, CarryForward
from transforms.write import WriteDeadLetters, WriteEmbeddings


def build_pipeline(p: beam.Pipeline, plan: Plan) -> dict:
  """Adds the read -> embed -> write graph to `p` without running it.

  Returns the main PCollections by name, for tests and for callers that
  extend the graph.
  """
  options, where, model = plan.embed, plan.where, plan.model
  fingerprint = plan.spec.fingerprint()
  fields = read_lib.Fields(options.id_field, options.text_field,
                           options.text_b_field, options.metadata_fields,
                           options.max_document_bytes)
  own = where.own_files()
  read = p | 'Read' >> read_lib.ReadDocuments(
      options.input, options.input_format, fields, query=options.input_query,
      skip=own)
  policy = where.on_duplicate_id(options)
  docs = read.main | 'DuplicateIds' >> HandleDuplicateIds(policy)
  to_embed, changes, carried = docs.main, {}, None
  if where.previous:
    reread = read_lib.ReadDocuments(
        options.input, options.input_format, fields,
        query=options.input_query, counted=False, skip=own)
    carry = docs.main | 'CarryForward' >> CarryForward(
        where.previous, fingerprint, reread, policy)
    to_embed, changes['removed'] = carry.to_embed, carry.removed
    carried = CarriedRecords(where.previous, carry.dropped, where.output)
  embedded = to_embed | 'Embed' >> embed_lib.EmbedDocuments(
      plan.spec, model.preprocessor, model.encoder,
      max_batch_tokens=options.max_batch_tokens,
      batch_size=options.batch_size, sort_window=options.sort_window,
      large_model=options.large_model, jit_compile=options.jit_compile,
      require_gpu=options.require_gpu,
      encoder_accelerator=options.encoder_accelerator, packing=plan.packing)
  changes['embedded'] = embedded.main
  dead = ((*read.dead_letters, *docs.dead_letters, *embedded.dead_letters)
          | 'AllDeadLetters' >> beam.Flatten(pipeline=p))
  changes | 'Write' >> WriteEmbeddings(
      where.output, records.RunInfo(model.name, options.pooling, fingerprint,
                                    where.started), where.previous,
      carried)
  dead | 'WriteDeadLetters' >> WriteDeadLetters(where.dead_letters,
                                                where.started)
  return {'documents': docs.main, 'embedded': embedded.main,
          'dead_letters': dead}
