# The one image for Dataflow (docs/dataflow.md, "One way to ship the code"):
# the GPU workers' SDK container (runner v2, --sdk_container_image) and the
# Flex Template's launcher. TensorFlow's GPU image at the pinned TF version
# supplies CUDA and cuDNN; the Beam SDK's boot program comes from Beam's own
# Python 3.11 image at the pinned Beam version, so the worker harness
# matches the launching SDK; the Flex Template launcher program comes from
# Google's launcher base image. Tag it with the Beam version (the launch's
# preflight checks the tag). Not built in this project's CI (no Docker or
# registry access there).
ARG BEAM_VERSION=2.77.0
ARG TF_VERSION=2.21.0
FROM apache/beam_python3.11_sdk:${BEAM_VERSION} AS beam
FROM gcr.io/dataflow-templates-base/python311-template-launcher-base AS launcher

FROM tensorflow/tensorflow:${TF_VERSION}-gpu
COPY --from=beam /opt/apache/beam /opt/apache/beam
COPY --from=launcher /opt/google/dataflow/python_template_launcher \
     /opt/google/dataflow/python_template_launcher
WORKDIR /workspace
# setup.py reads requirements.in (install_requires); .dockerignore admits
# only what these COPY lines name.
COPY requirements.txt requirements.in setup.py MANIFEST.in README.md ./
COPY pipeline pipeline
COPY transforms transforms
COPY tfmodels tfmodels
# The template's entry point: the launcher runs it to build the job.
COPY flex/main.py flex/main.py
ENV FLEX_TEMPLATE_PYTHON_PY_FILE=/workspace/flex/main.py
# The lock pins the same TensorFlow as the base image (a no-op there), and
# the rest of the job's dependencies; pip check fails the build on conflicts.
RUN python3 -m pip install --no-cache-dir -r requirements.txt \
 && python3 -m pip install --no-cache-dir --no-deps . \
 && python3 -m pip check \
 && python3 -c "import apache_beam, tensorflow, tensorflow_hub, tensorflow_text, tfx_bsl"
# One TensorFlow per SDK process: without memory growth the first process
# would reserve the whole GPU (the job also sets it at model load).
ENV TF_FORCE_GPU_ALLOW_GROWTH=true
ENTRYPOINT ["/opt/apache/beam/boot"]
