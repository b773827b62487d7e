"""A stand-in for the Dataflow job service (dataflow.googleapis.com), on
127.0.0.1, for tests that launch a job with `--runner DataflowRunner`.

Beam's Dataflow client takes the service's address from the public
pipeline option `--dataflow_endpoint`; an address that contains
`localhost` makes it talk REST over plain HTTP (Beam's apiclient picks the
REST transport for it), so the stand-in is reached as
`http://localhost:PORT` (`Standin.endpoint`). It answers the v1b3 REST
calls a launch, a wait and a cancel make:
- jobs create (projects.locations.jobs.create): a new job id, the request's
  clientRequestId echoed (Beam refuses an answer without it);
- jobs get: the job's state, as the script says at this moment;
- jobs update with requestedState JOB_STATE_CANCELLED: the job is
  cancelled (recorded in `cancelled`);
- messages list and getMetrics: none.
Everything else is 404; with `project`, a request for another project is
403. Every request is recorded (`requests`). A create
request can be held (`hold_create`) until the test releases it: a launch
interrupted while it waits for Dataflow to name the job.

The job's states follow a script: (state, seconds) pairs from the job's
creation, the last one held for good, e.g.
`[('JOB_STATE_PENDING', 5), ('JOB_STATE_RUNNING', 2), ('JOB_STATE_DONE', 0)]`.

Staging goes to the GCS emulator (tests/emulators.py), which is also
where the fake credentials come from: Beam's client sends them to the
stand-in as a bearer token, and the stand-in does not check them. What
Beam stages for a launch without --setup_file or --requirements_file (Beam
2.77): the pipeline proto (pipeline.pb) and
submission_environment_dependencies.txt (a `pip freeze` of the launching
environment); no SDK tarball (--sdk_location default means the worker
image's SDK), so a launch needs no network.
"""

from __future__ import annotations

import json
import re
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import NamedTuple, Optional

from google.cloud.dataflow_v1beta3.types import JobState

# JobState's names by value: Beam sends enums as integers.
STATES = {s.value: s.name for s in JobState}

_JOBS = re.compile(r'^/v1b3/projects/([^/]+)/locations/([^/]+)/jobs'
                   r'(?:/([^/:?]+))?(/messages|/metrics)?$')


class Request(NamedTuple):
  method: str
  path: str
  body: Optional[dict]
  at: float  # time.monotonic() when it came


class _Job:
  def __init__(self, job_id: str, project: str, location: str, name: str,
               script):
    self.id, self.project, self.location, self.name = (
        job_id, project, location, name)
    self.created = time.monotonic()
    self.script = list(script)
    self.final: Optional[str] = None  # set by a cancel

  def state(self) -> str:
    if self.final:
      return self.final
    elapsed = time.monotonic() - self.created
    for state, seconds in self.script:
      if elapsed < seconds:
        return state
      elapsed -= seconds
    return self.script[-1][0]

  def json(self) -> dict:
    return {'id': self.id, 'projectId': self.project,
            'location': self.location, 'name': self.name,
            'type': 'JOB_TYPE_BATCH', 'currentState': self.state(),
            'currentStateTime': time.strftime('%Y-%m-%dT%H:%M:%SZ',
                                              time.gmtime())}


class Standin:
  """The stand-in service: start(), endpoint, requests, cancelled, stop().
  A context manager too."""

  def __init__(self, script=(('JOB_STATE_PENDING', 0),),
               hold_create: bool = False, project: Optional[str] = None):
    """hold_create: a create request waits for release() (a launch held
    mid-submission); create_arrived is set when one comes. project: the
    one project the caller may use (others: 403, as Dataflow answers
    credentials without a role there); None: any."""
    self.script = script
    self.project = project
    self.create_arrived = threading.Event()
    self._released = threading.Event()
    if not hold_create:
      self._released.set()
    self.requests: list[Request] = []
    self.jobs: dict[str, _Job] = {}
    self.cancelled: list[str] = []
    self._lock = threading.Lock()
    self._server: Optional[ThreadingHTTPServer] = None

  @property
  def endpoint(self) -> str:
    """The value for --dataflow_endpoint."""
    return f'http://localhost:{self._server.server_address[1]}'

  def start(self) -> 'Standin':
    standin = self

    class Handler(BaseHTTPRequestHandler):
      protocol_version = 'HTTP/1.1'

      def log_message(self, *args):  # quiet
        pass

      def _answer(self, method: str):
        length = int(self.headers.get('Content-Length') or 0)
        raw = self.rfile.read(length) if length else b''
        body = json.loads(raw) if raw else None
        path = self.path.split('?', 1)[0]
        if method == 'POST' and path.endswith('/jobs'):
          standin.create_arrived.set()
          standin._released.wait(120)
        with standin._lock:
          standin.requests.append(Request(method, path, body,
                                          time.monotonic()))
          status, answer = standin._route(method, path, body)
        data = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header('Content-Type', 'application/json')
        self.send_header('Content-Length', str(len(data)))
        self.end_headers()
        self.wfile.write(data)

      def do_GET(self):
        self._answer('GET')

      def do_POST(self):
        self._answer('POST')

      def do_PUT(self):
        self._answer('PUT')

    class Server(ThreadingHTTPServer):
      daemon_threads = True

      def handle_error(self, request, client_address):
        """A client gone mid-request (a launch stopped by a signal) is
        what the tests do; anything else is printed as usual."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
          super().handle_error(request, client_address)

    self._server = Server(('127.0.0.1', 0), Handler)
    threading.Thread(target=self._server.serve_forever, daemon=True,
                     name='dataflow-standin').start()
    return self

  def release(self) -> None:
    """Lets a held create request through."""
    self._released.set()

  def stop(self) -> None:
    self.release()
    if self._server:
      self._server.shutdown()
      self._server.server_close()
      self._server = None

  def __enter__(self) -> 'Standin':
    return self.start()

  def __exit__(self, *exc) -> None:
    self.stop()

  def created(self) -> list[str]:
    """Ids of the jobs created, in order."""
    with self._lock:
      return list(self.jobs)

  def _route(self, method: str, path: str, body: Optional[dict]):
    match = _JOBS.match(path)
    if not match:
      return 404, {'error': {'code': 404, 'message': f'no {path}'}}
    project, location, job_id, sub = match.groups()
    if self.project is not None and project != self.project:
      return 403, {'error': {
          'code': 403, 'status': 'PERMISSION_DENIED',
          'message': f'(stand-in) Permission denied on project {project}'}}
    if job_id is None:
      if method != 'POST':
        return 200, {'jobs': [j.json() for j in self.jobs.values()]}
      job_id = f'{time.strftime("%Y-%m-%d_%H_%M_%S")}-{len(self.jobs) + 1}'
      job = _Job(job_id, project, location, (body or {}).get('name', ''),
                 self.script)
      self.jobs[job_id] = job
      return 200, dict(job.json(),
                       clientRequestId=(body or {}).get('clientRequestId'))
    job = self.jobs.get(job_id)
    if job is None:
      return 404, {'error': {'code': 404, 'message': f'no job {job_id}'}}
    if sub == '/messages':
      return 200, {'jobMessages': []}
    if sub == '/metrics':
      return 200, {'metrics': []}
    if method == 'PUT':
      wanted = (body or {}).get('requestedState')
      wanted = STATES.get(wanted, wanted)
      if wanted == 'JOB_STATE_CANCELLED':
        self.cancelled.append(job_id)
        job.final = 'JOB_STATE_CANCELLED'
    return 200, job.json()
