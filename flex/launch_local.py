"""Runs the Flex Template's entry point (flex/main.py) here, with a
launch.json's parameters, the way Dataflow's Flex launcher passes them:
each parameter as --name=value (checked against flex/metadata.json, as
Dataflow checks them), the environment's fields as Beam's flags, and
--runner=DataflowRunner. Flags after the file are added as they are.

Why: a schedule posts the same launch.json every night, and a mistake in it
(a parameter the template does not take, a value its regex refuses, a
dataset that does not exist) otherwise shows only in the launcher's log on
Google Cloud, after the night's launch. With --preflight_only=true the
template's own checks run here in seconds, with your credentials:

  .venv/bin/python flex/launch_local.py launch.json \\
      --project=MY_PROJECT --region=us-central1 --preflight_only=true
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))

# launch.json's environment fields -> the Beam flags the launcher passes
# (FlexTemplateRuntimeEnvironment).
ENVIRONMENT_FLAGS = {
    'tempLocation': 'temp_location', 'stagingLocation': 'staging_location',
    'sdkContainerImage': 'sdk_container_image',
    'additionalExperiments': 'experiments', 'machineType': 'machine_type',
    'maxWorkers': 'max_num_workers', 'numWorkers': 'num_workers',
    'serviceAccountEmail': 'service_account_email',
    'network': 'network', 'subnetwork': 'subnetwork',
    'dataflowServiceOptions': 'dataflow_service_options'}


def launch_argv(launch: dict) -> list[str]:
  """The launcher's argv for a launch.json's launchParameter; ValueError
  for what Dataflow would refuse (an unknown parameter or environment
  field, a value that its regex refuses)."""
  with open(os.path.join(HERE, 'metadata.json'), encoding='utf-8') as f:
    spec = {p['name']: p for p in json.load(f)['parameters']}
  argv = ['--runner=DataflowRunner']
  if launch.get('jobName'):
    argv.append(f'--job_name={launch["jobName"]}')
  for name, value in launch.get('parameters', {}).items():
    if name not in spec:
      raise ValueError(f'parameter {name} is not one of the template\'s '
                       '(flex/metadata.json)')
    for regex in spec[name].get('regexes', []):
      if not re.match(regex, value):
        raise ValueError(f'parameter {name}={value!r} does not match the '
                         f'template\'s {regex}')
    argv.append(f'--{name}={value}')
  for field, value in launch.get('environment', {}).items():
    if field not in ENVIRONMENT_FLAGS:
      raise ValueError(f'environment field {field} is not one this script '
                       f'knows ({", ".join(ENVIRONMENT_FLAGS)})')
    for item in value if isinstance(value, list) else [value]:
      argv.append(f'--{ENVIRONMENT_FLAGS[field]}={item}')
  return argv


def main(args: list[str]) -> int:
  if not args or args[0] in ('-h', '--help'):
    print(__doc__)
    return 0 if args else 2
  try:
    with open(args[0], encoding='utf-8') as f:
      launch = json.load(f)['launchParameter']
    argv = launch_argv(launch)
  except (OSError, ValueError, KeyError) as e:
    why = f'no launchParameter ({e})' if isinstance(e, KeyError) else e
    print(f'flex/launch_local.py: error: {args[0]}: {why}', file=sys.stderr)
    return 2
  return subprocess.call([sys.executable, os.path.join(HERE, 'main.py'),
                          *argv, *args[1:]])


if __name__ == '__main__':
  sys.exit(main(sys.argv[1:]))
