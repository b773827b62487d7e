"""TensorFlow-only model code: tokenizers, encoders and their TF Hub exports.

No Beam imports here: these modules are also used by benchmarks and the
export command, and must stay importable in a plain TensorFlow environment.
"""
