"""The values the job's settings take, where its flags offer them.

Declared here, with no Beam or TensorFlow import, so that the command can
print --help and refuse a bad flag value before it imports either (seconds:
pipeline/options.py, pipeline/flags.py). The modules that act on a setting
import its values from here.
"""

# --input_format besides 'auto': the file sources (transforms/sources/, whose
# registry a test holds to this list).
INPUT_FORMATS = ('text', 'jsonl', 'csv', 'parquet', 'tfrecord')
# --output_format and --dead_letter_format besides 'auto'
# (transforms/backends/).
OUTPUT_FORMATS = ('tfrecord', 'parquet')
DEAD_LETTER_FORMATS = ('jsonl', 'parquet')
# --pg_index (transforms/backends/postgres.py).
PG_INDEXES = ('hnsw',)
# --on_duplicate_id (transforms/dedup.py).
ON_DUPLICATE_ID = ('keep', 'first', 'error')
# --max_document_bytes by default: larger documents go to the dead letters
# as document_too_large (docs/running.md, "Very large documents").
MAX_DOCUMENT_BYTES = 16 << 20

# --long_documents (transforms/batching.py).
LONG_DOCUMENTS = ('truncate', 'chunk')
# --packing: several documents per encoder row where the encoder can take
# them (auto), always (on: an error where it cannot), or never.
PACKING = ('auto', 'on', 'off')
# Row lengths of packed batches below max_seq_length (which is always one).
# A token costs more in a longer row (attention over the whole row: 1.2-1.8x
# per token at 256-512 tokens against 64-128, measured on CPU for MiniLM and
# the roberta-large shape), so short documents go to short rows; 32-token
# rows were no cheaper than 64 on roberta-large, and each length is one more
# XLA shape (docs/performance.md, "Packed rows").
PACKED_ROW_LENGTHS = (64, 128, 256, 512)
