"""Packaging for workers: Dataflow's --setup_file installs this on each one.

Dependencies are the top-level pins of requirements.in; the full lock is
requirements.txt (use it for local environments and container images).
"""

import os

import setuptools

here = os.path.dirname(os.path.abspath(__file__))


def _requirements():
  with open(os.path.join(here, 'requirements.in'), encoding='utf-8') as f:
    return [line.split('#')[0].strip() for line in f
            if line.split('#')[0].strip()]


setuptools.setup(
    name='beam-text-embed',
    version='0.1.0',
    description='Apache Beam batch text-embedding pipeline with TF Hub '
    'BERT-style encoders',
    packages=['pipeline', 'transforms', 'transforms.backends',
              'transforms.codecs', 'transforms.leases', 'transforms.sources',
              'tfmodels'],
    python_requires='>=3.11,<3.12',
    install_requires=_requirements(),
)
