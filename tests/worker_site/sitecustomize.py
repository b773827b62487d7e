"""Test-only: Beam's BigQuery clients pointed at bqemulator, in any process
started with this folder on PYTHONPATH (the EXTERNAL worker pool and the SDK
workers it spawns), and in the test process through tests/emulators.py.

Beam's BigQuery clients have no endpoint options, and the emulator lacks
three details of the real service; patch_beam_bigquery says which and why.
This folder holds only this file, so workers still import the project from
the installed sdist.

As sitecustomize, it does nothing unless BQ_EMULATOR_GRPC (host:port of
bqemulator's gRPC Storage Read API) and BIGQUERY_EMULATOR_HOST (its REST base
URL) are set. It imports nothing heavy at start-up: the patches are applied
right after `apache_beam.io.gcp.bigquery` is first imported (an import
hook), so processes that never touch BigQuery (pip, the pool) pay nothing.
BQ_EMULATOR_TRACE=1 logs, with the process id, each load job and read
client, so a test can tell which process did the BigQuery work.
"""

import importlib.abc
import importlib.machinery
import os
import sys

_TARGET = 'apache_beam.io.gcp.bigquery'


def patch_beam_bigquery(rest_url, grpc_endpoint):
  """Patches Beam's BigQuery clients; returns an undo function.

  1. Beam's apitools client (datasets, tables, jobs) has no endpoint option:
     its BASE_URL points at the emulator.
  2. DIRECT_READ builds BigQueryReadClient() without arguments: it gets an
     insecure gRPC channel to the emulator.
  3. After a DIRECT_READ, Beam lists datasets filtered by a temporary label
     and deletes what comes back; the emulator ignores the filter, so without
     this the cleanup deletes every dataset of the project. Filter here.
  4. Query reads ask for a destination table, which the emulator ignores:
     such jobs become CREATE TABLE <destination> AS <query>.
  """
  import grpc
  from apache_beam.io.gcp import bigquery as beam_bigquery
  from apache_beam.io.gcp import bigquery_tools
  from apache_beam.io.gcp.internal.clients import bigquery as apitools
  from google.cloud import bigquery_storage_v1
  from google.cloud.bigquery_storage_v1.services.big_query_read import (
      transports)

  wrapper = bigquery_tools.BigQueryWrapper
  saved = [(apitools.BigqueryV2, 'BASE_URL', apitools.BigqueryV2.BASE_URL),
           (beam_bigquery.bq_storage, 'BigQueryReadClient',
            beam_bigquery.bq_storage.BigQueryReadClient),
           (wrapper, '_clean_up_beam_labelled_temporary_datasets',
            wrapper._clean_up_beam_labelled_temporary_datasets),
           (wrapper, '_start_query_job', wrapper._start_query_job)]
  apitools.BigqueryV2.BASE_URL = f'{rest_url.rstrip("/")}/bigquery/v2/'
  read_client_class = bigquery_storage_v1.BigQueryReadClient

  def read_client(*_, **__):
    _trace('BigQueryReadClient (DIRECT_READ) -> ' + grpc_endpoint)
    return read_client_class(
        transport=transports.BigQueryReadGrpcTransport(
            channel=grpc.insecure_channel(grpc_endpoint)))

  beam_bigquery.bq_storage.BigQueryReadClient = read_client
  original_cleanup = saved[2][2]

  def cleanup(self, project_id, dataset_id=None, table_id=None, labels=None):
    _trace(f'temp-dataset cleanup project={project_id} labels={labels}')
    if labels is None or self.is_user_configured_dataset():
      return original_cleanup(self, project_id, dataset_id, table_id, labels)
    listed = self.client.datasets.List(
        apitools.BigqueryDatasetsListRequest(projectId=project_id))
    for d in listed.datasets:
      have = {p.key: p.value for p in
              (d.labels.additionalProperties if d.labels else [])}
      if all(have.get(k) == v for k, v in labels.items()):
        self._delete_dataset(project_id, d.datasetReference.datasetId, True)
    return None

  wrapper._clean_up_beam_labelled_temporary_datasets = cleanup
  original_query = saved[3][2]

  def start_query_job(self, project_id, query, use_legacy_sql,
                      flatten_results, job_id, priority, dry_run=False,
                      kms_key=None, job_labels=None):
    if not dry_run and not use_legacy_sql:
      t = self._get_temp_table(self._get_temp_table_project(project_id))
      query = (f'CREATE TABLE `{t.projectId}.{t.datasetId}.{t.tableId}` AS '
               f'{query}')
    return original_query(self, project_id, query, use_legacy_sql,
                          flatten_results, job_id, priority, dry_run, kms_key,
                          job_labels)

  wrapper._start_query_job = start_query_job
  if os.environ.get('BQ_EMULATOR_TRACE'):
    load = wrapper.perform_load_job

    def perform_load_job(self, destination, job_id, *a, **kw):
      _trace(f'load job {job_id} -> {destination.tableId}')
      return load(self, destination, job_id, *a, **kw)

    wrapper.perform_load_job = perform_load_job

  def undo():
    for owner, name, value in saved:
      setattr(owner, name, value)

  return undo


def _trace(what):
  if os.environ.get('BQ_EMULATOR_TRACE'):
    sys.stderr.write(f'[sitecustomize] pid {os.getpid()}: {what}\n')
    sys.stderr.flush()


class _Loader(importlib.abc.Loader):

  def __init__(self, inner):
    self._inner = inner

  def create_module(self, spec):
    return self._inner.create_module(spec)

  def exec_module(self, module):
    self._inner.exec_module(module)
    patch_beam_bigquery(os.environ['BIGQUERY_EMULATOR_HOST'],
                        os.environ['BQ_EMULATOR_GRPC'])
    if os.environ.get('BQ_EMULATOR_TRACE'):
      sys.stderr.write(f'[sitecustomize] pid {os.getpid()}: Beam BigQuery '
                       'patched for the emulator\n')


class _Finder(importlib.abc.MetaPathFinder):

  def find_spec(self, fullname, path, target=None):
    if fullname != _TARGET:
      return None
    spec = importlib.machinery.PathFinder.find_spec(fullname, path, target)
    if spec is not None and spec.loader is not None:
      spec.loader = _Loader(spec.loader)
      sys.meta_path.remove(self)  # once
    return spec


if (os.environ.get('BQ_EMULATOR_GRPC')
    and os.environ.get('BIGQUERY_EMULATOR_HOST')):
  sys.meta_path.insert(0, _Finder())
