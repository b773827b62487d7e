"""Preflight: what a run needs from Google Cloud, checked in seconds, before
anything slow.

Why: without it, a Dataflow launch that lacks credentials, a writable
temporary location, a BigQuery dataset or a complete model folder fails
late (after the job is built and staged, or on the workers, after the GPUs
started) or hangs: Beam's own credential lookup retries for about two
minutes, and a quiet run prints nothing meanwhile. Each check here asks
once, under a deadline (SECONDS), and fails with one line naming the fix.

The checks run for DataflowRunner, and on any runner for what a flag
names on gs:// or bq://. (A model folder, local or gs://, is checked
when the launch resolves the model, right after these: it reads the
model's identity there, so that check is not skippable.) Each check has a
name (CHECKS): `--skip_preflight
NAME,...` skips some for set-ups they do not fit (an image named another
way, a dataset another job creates), `--skip_preflight all` every one.

Light at import (stdlib only), because pipeline/options.py declares
--skip_preflight's names from CHECKS before Beam or TensorFlow is imported.
"""

from __future__ import annotations

import dataclasses
import re
import threading
import time
import uuid
from typing import Callable, Optional

# Each check's deadline: a service that does not answer in this time is
# reported as not answering, rather than waited for.
SECONDS = 8.0

# What the image check expects: the job's images are tagged with the Beam
# version they were built for (docs/dataflow.md, "The worker image").
_VERSION_TAG = re.compile(r'^\d+\.\d+\.\d+')


class PreflightError(ValueError):
  """One failed check, as the one line to print."""

  def __init__(self, check: str, message: str):
    super().__init__(f'preflight {check}: {message} (--skip_preflight {check} '
                     'skips this check)')
    self.check = check


@dataclasses.dataclass(frozen=True)
class Flight:
  """What the checks look at, read from the options once."""
  dataflow: bool
  dry_run: bool
  project: Optional[str]
  region: Optional[str]
  endpoint: str
  scopes: tuple
  impersonate: Optional[str]
  temp_location: Optional[str]
  staging_location: Optional[str]
  image: Optional[str]
  # Every location a flag names (inputs, outputs, model folders, query).
  locations: tuple
  # bq:// tables the run writes (the output, table dead letters).
  tables_written: tuple

  @property
  def cloud(self) -> bool:
    return self.dataflow or any(
        str(where).startswith(('gs://', 'bq://')) for where in self.locations)


def flight(options, embed) -> Flight:
  """The Flight of Beam PipelineOptions, and of their EmbedOptions view
  (handed in: this module does not import the options' module, which
  imports it)."""
  from apache_beam.options.pipeline_options import GoogleCloudOptions
  from apache_beam.options.pipeline_options import StandardOptions
  from apache_beam.options.pipeline_options import TestOptions
  from apache_beam.options.pipeline_options import WorkerOptions
  cloud = options.view_as(GoogleCloudOptions)
  written = [embed.output]
  if embed.dead_letter:
    written.append(embed.dead_letter)
  elif str(embed.output or '').startswith('bq://'):
    written.append(f'{embed.output}_dead_letter')
  return Flight(
      dataflow=options.view_as(StandardOptions).runner == 'DataflowRunner',
      dry_run=bool(options.view_as(TestOptions).dry_run),
      project=cloud.project, region=cloud.region,
      endpoint=cloud.dataflow_endpoint or GoogleCloudOptions.DATAFLOW_ENDPOINT,
      scopes=tuple(cloud.gcp_oauth_scopes or ()),
      impersonate=cloud.impersonate_service_account,
      temp_location=cloud.temp_location,
      staging_location=cloud.staging_location,
      image=options.view_as(WorkerOptions).sdk_container_image,
      locations=tuple(w for w in (
          embed.input, embed.output, embed.previous, embed.dead_letter,
          embed.model_dir, embed.preprocessor, embed.encoder,
          cloud.temp_location, cloud.staging_location) if w) + (
              ('bq://(--input_query)',) if embed.input_query else ()),
      tables_written=tuple(t for t in written
                           if str(t or '').startswith('bq://')))


class _Context:
  """What one check finds and a later one uses (the credentials)."""

  def __init__(self):
    self.credentials = None
    self.account = None
    self.own_project = None

  def load_credentials(self, f: Flight):
    if self.credentials is None:
      self.credentials, self.account, self.own_project = _credentials_of(f)
    return self.credentials


def _credentials_of(f: Flight):
  """Application Default Credentials as Beam finds them (its scopes and
  impersonation), without its retries: (credentials, who, their project)."""
  import google.auth
  from google.auth import exceptions
  try:
    credentials, project = google.auth.default(scopes=list(f.scopes) or None)
  except exceptions.DefaultCredentialsError as e:
    # Google's text where it says more than "not found" (a key file that
    # is missing or malformed).
    why = ('' if 'credentials were not found' in str(e)
           else f' ({_first_line(e)})')
    raise PreflightError('credentials', (
        f'no Google credentials found{why}; run `gcloud auth '
        'application-default login`, or set GOOGLE_APPLICATION_CREDENTIALS '
        'to a service account key file')) from e
  who = getattr(credentials, 'service_account_email', None) or getattr(
      credentials, 'account', None) or 'user credentials'
  if f.impersonate:
    from google.auth import impersonated_credentials
    chain = f.impersonate.split(',')
    credentials = impersonated_credentials.Credentials(
        source_credentials=credentials, target_principal=chain[-1],
        delegates=chain[:-1], target_scopes=list(f.scopes) or None)
    who = f'{chain[-1]} (impersonated by {who})'
  return credentials, who, project


def _first_line(e: BaseException) -> str:
  text = str(e).strip()
  return text.splitlines()[0] if text else type(e).__name__


def _credentials(f: Flight, context: _Context) -> str:
  context.load_credentials(f)
  return context.account


def _project(f: Flight, context: _Context) -> str:
  """Whether these credentials may use Dataflow in --project and
  --region: Dataflow's own answer to listing one job, which is what a
  launch needs (403: another project's credentials, or a missing role;
  404: no such project)."""
  if not f.project:
    raise PreflightError('project', (
        'DataflowRunner needs --project PROJECT' + (
            f' (the credentials\' project is {context.own_project})'
            if context.own_project else '')))
  if not f.region:
    raise PreflightError('project', 'DataflowRunner needs --region REGION, '
                         'e.g. us-central1 (where the GPUs are)')
  from google.auth import exceptions
  from google.auth.transport.requests import AuthorizedSession
  session = AuthorizedSession(context.load_credentials(f))
  url = (f'{f.endpoint.rstrip("/")}/v1b3/projects/{f.project}/locations/'
         f'{f.region}/jobs')
  try:
    answer = session.get(url, params={'pageSize': 1}, timeout=SECONDS)
  except exceptions.RefreshError as e:
    raise PreflightError('project', (
        f'the credentials ({context.account}) cannot get a token: '
        f'{_first_line(e)}; run `gcloud auth application-default login`'
    )) from e
  except Exception as e:  # a network error, said as it is
    raise PreflightError('project', f'cannot reach Dataflow at {f.endpoint}: '
                         f'{_first_line(e)}') from e
  if answer.status_code == 200:
    return f'{f.project} in {f.region}'
  why = _api_message(answer)
  theirs = (f'; the credentials\' own project is {context.own_project}'
            if context.own_project and context.own_project != f.project
            else '')
  if answer.status_code == 403:
    raise PreflightError('project', (
        f'the credentials ({context.account}) may not use Dataflow in '
        f'project {f.project}: {why}{theirs}. Grant them '
        'roles/dataflow.developer there, enable the API (gcloud services '
        f'enable dataflow.googleapis.com --project {f.project}), or pass '
        '--project of the project they belong to'))
  if answer.status_code == 404:
    raise PreflightError('project', (
        f'Dataflow knows no project {f.project} in region {f.region}: '
        f'{why}{theirs}'))
  raise PreflightError('project', (
      f'Dataflow answered HTTP {answer.status_code} for project '
      f'{f.project}: {why}'))


def _api_message(answer) -> str:
  try:
    return answer.json()['error']['message']
  except Exception:  # noqa: BLE001 (not Google's error shape)
    return answer.text.strip()[:200] or answer.reason


def _temp_location(f: Flight, context: _Context) -> str:
  """--temp_location and --staging_location on Cloud Storage, writable:
  Dataflow stages the job there, and BigQuery FILE_LOADS its files (a dry
  run, which writes nothing, checks only where they are)."""
  del context
  if f.dataflow and not f.temp_location:
    raise PreflightError('temp_location', (
        'DataflowRunner needs --temp_location gs://BUCKET/tmp (a bucket in '
        'the job\'s region, which the job\'s service account may write)'))
  checked = []
  for flag, where in (('temp_location', f.temp_location),
                      ('staging_location', f.staging_location)):
    if not where or where in checked:
      continue
    if f.dataflow and not where.startswith('gs://'):
      raise PreflightError('temp_location', (
          f'--{flag} {where} is not on Cloud Storage: Dataflow\'s workers '
          'read the job from there; give gs://BUCKET/PATH'))
    if not where.startswith('gs://'):
      continue
    if f.dry_run:
      # A dry run writes nothing, not even a probe.
      checked.append(f'{where} on Cloud Storage')
      continue
    _probe(where, flag)
    checked.append(f'{where} writable')
  return ', '.join(checked) or 'none on gs://'


def _probe(folder: str, flag: str) -> None:
  """Writes and removes one small object in `folder`, through Beam's
  FileSystems (the job's own client and credentials)."""
  from apache_beam.io.filesystems import FileSystems
  from transforms.backends.files import cause
  probe = FileSystems.join(folder, f'.text-embed-preflight-{uuid.uuid4().hex}')
  try:
    FileSystems.create(probe).close()
  except Exception as e:
    # Beam's writer says a missing bucket as a bare status tuple.
    why = (f'bucket gs://{_bucket(folder)} does not exist'
           if re.search(r'\b404\b', str(e)) else cause(e))
    raise PreflightError('temp_location', (
        f'cannot write --{flag} {folder}: {why}; create the bucket '
        f'(gcloud storage buckets create gs://{_bucket(folder)} --location '
        'REGION) or grant the account roles/storage.objectAdmin on it'
    )) from e
  FileSystems.delete([probe])


def _bucket(path: str) -> str:
  return path[len('gs://'):].split('/')[0]


def _bigquery(f: Flight, context: _Context) -> str:
  """Each table the run writes: its dataset exists, and where the table
  does not yet, the credentials may create one (a probe table, created
  and deleted: BigQuery has no way to ask)."""
  del context
  from google.api_core import exceptions
  from google.cloud import bigquery
  from transforms import bigquery_tables as tables
  said = []
  for uri in f.tables_written:
    project, dataset, table = tables.TableName.of(uri)
    client = bigquery.Client(project=project)
    try:
      client.get_dataset(f'{project}.{dataset}', retry=None, timeout=SECONDS)
    except exceptions.NotFound as e:
      raise PreflightError('bigquery', (
          f'{uri}: dataset {project}.{dataset} does not exist; create it in '
          f'the job\'s region: bq --location=REGION mk --dataset '
          f'{project}:{dataset}')) from e
    except exceptions.GoogleAPICallError as e:
      raise PreflightError('bigquery', (
          f'{uri}: cannot read dataset {project}.{dataset}: '
          f'{_first_line(e)}; grant the account roles/bigquery.dataEditor on '
          'it')) from e
    try:
      client.get_table(f'{project}.{dataset}.{table}', retry=None,
                       timeout=SECONDS)
      said.append(f'{uri} exists')
      continue
    except exceptions.NotFound:
      pass
    probe = f'{project}.{dataset}._text_embed_preflight_{uuid.uuid4().hex[:12]}'
    try:
      client.create_table(bigquery.Table(probe, schema=[
          bigquery.SchemaField('id', 'STRING')]), retry=None, timeout=SECONDS)
    except exceptions.GoogleAPICallError as e:
      raise PreflightError('bigquery', (
          f'{uri}: may not create tables in dataset {project}.{dataset}: '
          f'{_first_line(e)}; grant the account roles/bigquery.dataEditor on '
          'it')) from e
    client.delete_table(probe, retry=None, timeout=SECONDS,
                        not_found_ok=True)
    said.append(f'{uri} can be created')
  return ', '.join(said)


def _image(f: Flight, context: _Context) -> str:
  """--sdk_container_image is tagged with the Beam version that launches:
  the worker harness in the image must match the SDK that builds the job,
  or the workers fail at start-up, after the machines are paid for."""
  del context
  from apache_beam import version
  image = f.image
  if '@' in image:
    return f'{image} (pinned by digest: its Beam version is not checked)'
  name = image.rsplit('/', 1)[-1]
  tag = name.split(':', 1)[1] if ':' in name else ''
  found = _VERSION_TAG.match(tag)
  if not found or found.group(0) != version.__version__:
    raise PreflightError('image', (
        f'--sdk_container_image {image} is tagged '
        f'{tag or "latest (no tag)"}, but this launcher runs Beam '
        f'{version.__version__}; build the image for it (docker build '
        f'--build-arg BEAM_VERSION={version.__version__} ...) and tag it '
        f':{version.__version__}'))
  return image


@dataclasses.dataclass(frozen=True)
class Check:
  name: str
  # Whether the check concerns this run.
  applies: Callable[[Flight], bool]
  # Runs it: what it found, in a few words, or raises PreflightError.
  run: Callable[[Flight, _Context], str]


CHECKS = (
    Check('credentials', lambda f: f.cloud, _credentials),
    # A dry run submits nothing, so Dataflow is not asked.
    Check('project', lambda f: f.dataflow and not f.dry_run, _project),
    Check('temp_location', lambda f: f.dataflow or any(
        str(w).startswith('gs://') for w in (f.temp_location,
                                             f.staging_location)),
          _temp_location),
    # Not on a dry run, which builds the job offline (as the outputs' own
    # launch checks do).
    Check('bigquery', lambda f: bool(f.tables_written) and not f.dry_run,
          _bigquery),
    Check('image', lambda f: bool(f.image), _image),
)
NAMES = tuple(c.name for c in CHECKS)


def skip_list(value: str) -> tuple:
  """--skip_preflight: check names, comma-separated, or all."""
  names = tuple(n.strip() for n in value.split(',') if n.strip())
  if names == ('all',):
    return NAMES
  unknown = [n for n in names if n not in NAMES]
  if unknown:
    import argparse
    raise argparse.ArgumentTypeError(
        f'unknown check {", ".join(unknown)}; the checks are '
        f'{", ".join(NAMES)}, or all')
  return names


@dataclasses.dataclass(frozen=True)
class Passed:
  name: str
  found: str
  seconds: float


def run(f: Flight, *, skip=()) -> list[Passed]:
  """Runs the checks that concern `f`, in order, each under its deadline;
  the first failure raises PreflightError. What passed, for the
  preflight-only mode's lines."""
  context = _Context()
  passed = []
  for check in CHECKS:
    if check.name in skip or not check.applies(f):
      continue
    start = time.monotonic()
    found = _within(SECONDS, check, f, context)
    passed.append(Passed(check.name, found, time.monotonic() - start))
  return passed


def _within(seconds: float, check: Check, f: Flight, context: _Context):
  """The check's result, or a PreflightError once `seconds` pass: a
  client's own retries (minutes) are not waited for. The thread that
  still waits is a daemon, left behind."""
  out: dict = {}

  def target():
    try:
      out['found'] = check.run(f, context)
    except BaseException as e:  # noqa: BLE001 (raised in the caller)
      out['error'] = e

  worker = threading.Thread(target=target, daemon=True,
                            name=f'preflight-{check.name}')
  worker.start()
  worker.join(seconds)
  if worker.is_alive():
    raise PreflightError(check.name, f'no answer within {seconds:.0f} s '
                         f'({_waited_for(check.name, f)})')
  error = out.get('error')
  if isinstance(error, PreflightError):
    raise error
  if error is not None:
    raise PreflightError(check.name, _first_line(error)) from error
  return out['found']


def _waited_for(name: str, f: Flight) -> str:
  return {
      'credentials': 'Google credentials: the metadata server or the token '
                     'endpoint',
      'project': f'Dataflow at {f.endpoint}',
      'temp_location': f'Cloud Storage, writing {f.temp_location}',
      'bigquery': 'BigQuery',
      'image': 'nothing remote',
  }[name]
