"""The static HTML run report that `--report PATH.html` writes after a run.

One self-contained file (plots as inline PNG data URIs, no JavaScript, no
external resources), so that it can be mailed, attached to a ticket or
opened offline years later and still show the same thing. It reads the
run's output and dead letters back with pipeline.read, the same way a user
would, so the report shows what was written rather than what the job
believed it wrote.

matplotlib is imported inside the functions here, and run.py imports this
module only when --report is given: runs without a report never pay for it.
Plots are drawn on the Agg canvas directly (no pyplot), so nothing here
touches matplotlib's global backend or figure registry.

The work is split so that each step can be tested alone:
  load_run (I/O) -> RunData -> figure_* (data -> Figure) -> png (Figure ->
  bytes) -> render_html (pieces -> text) -> write_atomically.
"""

from __future__ import annotations

import base64
import collections
import dataclasses
import datetime
import html
import io
import json
import os
import re
from typing import Optional, Sequence

import numpy as np

from pipeline import read
from pipeline import summary as summary_lib
from transforms import backends
from transforms import paths

# At most this many embeddings in the PCA map: enough to see clusters, few
# enough that the scatter stays readable and the PNG small.
PCA_SAMPLE = 2000
PCA_SEED = 0
# Values of the colour field drawn in their own colour; the rest are "other".
TOP_VALUES = 10
# The images the report has, by id (tests look them up by these).
PLOT_IDS = ('token-lengths', 'buckets', 'throughput', 'dead-letters',
            'embedding-map')
# The image a nightly run's report (--previous) has besides them.
NIGHTLY_ID = 'nightly'
DPI = 110


@dataclasses.dataclass(frozen=True)
class RunData:
  """What the plots need, read back from the run's output and dead letters
  in one streamed pass each: counts over every record, and a bounded
  sample of vectors (so that the launcher's memory does not depend on the
  output's size)."""
  token_counts: dict  # tokens -> output records of that length
  truncated: int  # output records flagged truncated
  total: int  # output records
  vectors: np.ndarray  # float32 [sampled records, dim], at most PCA_SAMPLE
  color_field: Optional[str]  # the metadata field that colours the map
  color_values: list  # its value per sampled record (or empty)
  color_note: str  # why the map has one colour, when it does
  error_types: collections.Counter  # dead letters by error type
  dead_letter_error: Optional[str]  # why the dead letters could not be read
  # Output records by embedded_at (one value per run that embedded them).
  embedded_at: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Plot:
  """One rendered plot: an <img> with its caption."""
  id: str
  alt: str
  caption: str
  png: bytes


# --- reading the run back ---------------------------------------------------


def dead_letter_location(options) -> tuple[str, str]:
  """(URI, format) where the run wrote its dead letters: asks the backends,
  which own the default-naming rule (--dead_letter or next to --output)."""
  out = backends.output(options.output, options.output_format)
  letters = backends.dead_letters(out, options.dead_letter,
                                  options.dead_letter_format)
  return letters.uri, letters.format


def color_field(options) -> Optional[str]:
  """--report_color_field, else the first --metadata_fields, else none."""
  fields = tuple(getattr(options, 'metadata_fields', None) or ())
  return options.report_color_field or (fields[0] if fields else None)


def sample(records, limit: int = PCA_SAMPLE, seed: int = PCA_SEED) -> list:
  """A uniform sample of at most `limit` of the records, kept while they
  stream by (reservoir sampling, seeded: the same output gives the same
  sample)."""
  rng = np.random.default_rng(seed)
  kept: list = []
  for i, record in enumerate(records):
    if i < limit:
      kept.append(record)
    else:
      j = int(rng.integers(0, i + 1))
      if j < limit:
        kept[j] = record
  return kept


class _Tally:
  """Counts over every record as they stream by (token lengths,
  truncation, the run that embedded it), passing each record on."""

  def __init__(self):
    self.token_counts: collections.Counter = collections.Counter()
    self.embedded_at: collections.Counter = collections.Counter()
    self.truncated = 0
    self.total = 0

  def through(self, records):
    for record in records:
      self.total += 1
      self.token_counts[int(record.get('num_tokens') or 0)] += 1
      self.truncated += bool(record.get('truncated'))
      self.embedded_at[record.get('embedded_at')] += 1
      yield record


def load_run(options) -> RunData:
  """Reads the output and the dead letters back, streamed: every record is
  counted, and a sample of PCA_SAMPLE is kept for the map. The format of
  the dead letters is given rather than detected, so that a run with no
  dead letters (possibly no shard at all) reads as zero of them. A
  dead-letter location that cannot be read is reported in its panel
  instead of losing the whole report."""
  field = color_field(options)
  out = read.backend(options.output, options.output_format,
                     metadata=(field,) if field else ())
  tally = _Tally()
  kept = sample(tally.through(out.scan(
      ['embedding', 'num_tokens', 'truncated', 'embedded_at'] +
      ([field] if field else []))))
  vectors = (np.stack([np.asarray(r['embedding'], np.float32) for r in kept])
             if kept else np.zeros((0, 0), np.float32))
  values = [r.get(field) for r in kept] if field else []
  note = ''
  if field is None:
    note = ('no metadata field to colour by (give --metadata_fields or '
            '--report_color_field)')
  elif kept and all(v is None for v in values):
    note = f'the output has no field {field!r} to colour by'
    field, values = None, []
  error_types, problem = collections.Counter(), None
  uri, fmt = dead_letter_location(options)
  try:
    letters = read.backend(uri, fmt, dead_letters=True)
    error_types.update(str(r.get('error_type'))
                       for r in letters.scan(['error_type']))
  except Exception as e:  # noqa: BLE001
    problem = f'could not read the dead letters at {uri}: {e}'
  return RunData(token_counts=dict(tally.token_counts),
                 truncated=tally.truncated, total=tally.total,
                 vectors=vectors, color_field=field, color_values=values,
                 color_note=note, error_types=error_types,
                 dead_letter_error=problem,
                 embedded_at=dict(tally.embedded_at))


# --- pure computations ------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Nightly:
  """A nightly run's documents (--previous): the summary's counts, and
  the output's records as read back, by the run that embedded them."""
  read: int
  embedded: int  # new or changed: the only ones the encoder saw
  reused: int
  rejected: int
  removed: int  # ids of --previous gone from the corpus
  carried: int  # reused records copied into an output rewritten whole
  # The output takes changes (the --previous table): its reused rows stay
  # where they are, none is carried.
  in_place: bool
  records: int  # records in the output
  records_this_run: int  # of them, embedded by this run


def nightly(summary: dict, data: RunData, options) -> Optional[Nightly]:
  """The figures of a nightly run's panel, or None for a full run (one
  that found no --previous output, too: --previous_if_exists). The
  records this run embedded are those of the newest `embedded_at` (one
  value per run, when the run started), if it embedded any."""
  if not getattr(options, 'previous', None) or summary_lib.first_run(
      summary):
    return None
  embedded = int(summary.get('documents_embedded') or 0)
  reused = int(summary.get('documents_reused') or 0)
  carried = int(summary.get('records_carried') or 0)
  stamps = [stamp for stamp in data.embedded_at if stamp is not None]
  newest = data.embedded_at[max(stamps)] if embedded and stamps else 0
  return Nightly(
      read=int(summary.get('documents_read') or 0), embedded=embedded,
      reused=reused, rejected=int(summary.get('documents_rejected') or 0),
      removed=int(summary.get('documents_removed') or 0), carried=carried,
      in_place=bool(reused) and not carried, records=data.total,
      records_this_run=newest)


def rates(samples: Sequence, figure: str = 'documents_embedded'
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(start, end, `figure` per second: documents embedded by default) of
  each interval between consecutive progress samples; intervals of no time
  are skipped."""
  starts, ends, values = [], [], []
  for before, after in zip(samples, samples[1:]):
    seconds = after.seconds - before.seconds
    if seconds > 0:
      starts.append(before.seconds)
      ends.append(after.seconds)
      values.append((getattr(after, figure) - getattr(before, figure))
                    / seconds)
  return (np.asarray(starts, np.float64), np.asarray(ends, np.float64),
          np.asarray(values, np.float64))


def pca_2d(vectors: np.ndarray, limit: int = PCA_SAMPLE,
           seed: int = PCA_SEED) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(indices of the sampled rows, their [n, 2] projection on the first two
  principal components, the share of variance each explains). A fixed seed
  and a sign convention (largest loading positive) make the map the same
  for the same output."""
  n = vectors.shape[0]
  rng = np.random.default_rng(seed)
  rows = (np.sort(rng.choice(n, size=limit, replace=False)) if n > limit
          else np.arange(n))
  if n == 0 or vectors.shape[1] == 0:
    return rows, np.zeros((len(rows), 2)), np.zeros(2)
  x = vectors[rows].astype(np.float64)
  x -= x.mean(axis=0)
  _, s, vt = np.linalg.svd(x, full_matrices=False)
  signs = np.sign(vt[np.arange(len(vt)), np.abs(vt).argmax(axis=1)])
  vt = vt * np.where(signs == 0, 1, signs)[:, None]
  points = np.zeros((len(rows), 2))
  k = min(2, len(vt))
  points[:, :k] = x @ vt[:k].T
  variance = s ** 2
  share = np.zeros(2)
  if variance.sum() > 0:
    share[:k] = variance[:k] / variance.sum()
  return rows, points, share


def top_values(values: Sequence, top: int = TOP_VALUES) -> list[str]:
  """The `top` most frequent values (ties by name) as labels; the others
  are drawn as "other"."""
  counts = collections.Counter(_label(v) for v in values)
  ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
  return [value for value, _ in ranked[:top]]


def _label(value) -> str:
  return '(none)' if value is None or value == '' else str(value)


def _short(text: str, width: int = 28) -> str:
  return text if len(text) <= width else text[:width - 1] + '\u2026'


# --- figures (data -> matplotlib Figure) -----------------------------------


def _figure(width: float = 6.0, height: float = 3.8):
  """A Figure on the Agg canvas, with layout that keeps labels apart."""
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure
  fig = Figure(figsize=(width, height), dpi=DPI, layout='constrained')
  FigureCanvasAgg(fig)
  return fig


def text_figure(title: str, text: str, width: float = 6.0,
                height: float = 3.8):
  """A panel that says why there is nothing to plot, in place of a plot."""
  fig = _figure(width, height)
  ax = fig.subplots()
  ax.set_axis_off()
  ax.set_title(title)
  ax.text(0.5, 0.5, text, ha='center', va='center', fontsize=13,
          color='#555555', wrap=True, transform=ax.transAxes)
  return fig


def figure_token_lengths(token_counts: dict, truncated: int,
                         max_seq_length: int):
  """How long the documents are against --max_seq_length: a pile at the
  limit says the limit cuts many documents (raise it or --long_documents
  chunk); a distribution far below it says it could be lowered."""
  title = 'Token lengths'
  documents = sum(token_counts.values())
  if not documents:
    return text_figure(title, 'No embedded documents')
  fig = _figure()
  ax = fig.subplots()
  lengths = np.asarray(list(token_counts), np.int64)
  top = max(int(lengths.max()), max_seq_length)
  bins = np.linspace(0, top + 1, min(40, top + 1) + 1)
  ax.hist(lengths, bins=bins, weights=list(token_counts.values()),
          color='#4c72b0', edgecolor='white', linewidth=0.5)
  ax.axvline(max_seq_length, color='#c44e52', linestyle='--', linewidth=1.5,
             label=f'truncation limit (max_seq_length {max_seq_length})')
  ax.set_xlabel('tokens per document (special tokens included)')
  ax.set_ylabel('documents')
  ax.set_title(f'{title}: {documents:,} documents, '
               f'{truncated:,} truncated')
  _integer_ticks(ax.yaxis)
  # Below the axes: inside, it would hide the bars piled at the limit.
  fig.legend(loc='outside lower center', fontsize=8, frameon=False)
  return fig


def figure_buckets(batches: dict, padding: dict):
  """Where the encoder's time went: batches per length bucket, and how
  much of each bucket's computed tokens were real (1.0 = no padding)."""
  title = 'Batches and padding efficiency per length bucket'
  lengths = sorted({int(k) for k in (*batches, *padding)})
  if not lengths:
    return text_figure(title, 'No batches ran\n(nothing was embedded)')
  fig = _figure()
  ax = fig.subplots()
  x = np.arange(len(lengths))
  counts = [batches.get(str(n), 0) for n in lengths]
  bars = ax.bar(x, counts, color='#4c72b0', label='batches')
  ax.set_xlabel('bucket length (tokens)')
  ax.set_ylabel('batches')
  step = max(1, -(-len(lengths) // 16))  # at most 16 tick labels
  ax.set_xticks(x[::step], [str(n) for n in lengths][::step],
                rotation=45 if len(lengths) > 8 else 0)
  ax.margins(y=0.15)
  right = ax.twinx()
  shares = [padding.get(str(n), np.nan) for n in lengths]
  line, = right.plot(x, shares, color='#dd8452', marker='o', linewidth=1.5,
                     label='padding efficiency (real / computed tokens)')
  right.set_ylim(0, 1.05)
  right.set_ylabel('padding efficiency')
  _integer_ticks(ax.yaxis)
  ax.set_title(title, fontsize=11)
  fig.legend(handles=[bars, line], loc='outside lower center', ncols=2,
             fontsize=8, frameon=False)
  return fig


def figure_throughput(starts: np.ndarray, ends: np.ndarray,
                      values: np.ndarray, overall: Optional[float],
                      seconds: Optional[float],
                      read: Optional[np.ndarray] = None):
  """Each interval's rate as a flat step over the interval, so that a run
  with few samples still reads right; the x axis starts at the run's start
  so that the time before the first sample (start-up) shows. `read`, for a
  nightly run, is the documents read per second over the same intervals:
  its work is reading and comparing every document, and embedding the few
  that changed, so the embedded rate alone would be nearly flat at 0."""
  fig = _figure()
  ax = fig.subplots()
  xs = np.column_stack([starts, ends]).ravel()
  ys = np.repeat(values, 2)
  top = max(float(values.max()), overall or 0)
  if read is not None:
    ax.plot(xs, np.repeat(read, 2), color='#8172b3', linewidth=1.5,
            label='read (each compared with --previous)')
    top = max(top, float(read.max()))
  ax.fill_between(xs, ys, color='#4c72b0', alpha=0.15, linewidth=0)
  ax.plot(xs, ys, color='#4c72b0', linewidth=1.5,
          label=('embedded (new or changed only)' if read is not None else
                 'between progress samples'))
  if overall:
    ax.axhline(overall, color='#55a868', linestyle='--', linewidth=1.2,
               label=f'whole run: {overall:,.1f} embedded/s' if read
               is not None else f'whole run: {overall:,.1f} documents/s')
  ax.set_xlabel('seconds since the start')
  ax.set_xlim(0, max(float(ends.max()), seconds or 0))
  ax.set_ylim(0, top * 1.1 or 1)
  if read is not None:
    ax.set_ylabel('documents per second')
    ax.set_title('Documents read and embedded per second over time')
  else:
    ax.set_ylabel('documents embedded per second')
    ax.set_title('Documents embedded per second over time')
  fig.legend(loc='outside lower center', ncols=2, fontsize=8, frameon=False)
  return fig


def figure_nightly(n: Nightly):
  """Where a nightly run's documents went: embedded (the encoder's only
  work), reused, rejected, and what became of the previous records
  (removed, carried). Each bar is labelled with its count, as the embedded
  bar of a quiet night is a sliver beside the reused one."""
  carried = ('carried (none: the --previous table keeps them)'
             if n.in_place else 'carried into the rewritten output')
  rows = [('embedded (new or changed)', n.embedded, '#4c72b0'),
          ('reused from --previous', n.reused, '#55a868'),
          ('rejected', n.rejected, '#c44e52'),
          ('removed (gone from the corpus)', n.removed, '#8c8c8c'),
          (carried, n.carried, '#8fbc8f')]
  rows.reverse()  # barh draws bottom-up: embedded on top
  fig = _figure(height=3.2)
  ax = fig.subplots()
  names = [name for name, _, _ in rows]
  values = [value for _, value, _ in rows]
  ax.barh(names, values, color=[color for _, _, color in rows])
  for y, value in enumerate(values):
    ax.text(value, y, f' {value:,}', va='center', fontsize=9)
  ax.set_xlim(0, max(max(values), 1) * 1.2)
  _integer_ticks(ax.xaxis)
  ax.set_xlabel('documents (removed, carried: previous records)')
  ax.set_title(f'{n.read:,} documents read against --previous',
               fontsize=11)
  return fig


def figure_dead_letters(error_types: collections.Counter,
                        problem: Optional[str] = None):
  """Which kinds of bad records a run met, largest first, so that one
  dominant cause stands out."""
  title = 'Dead letters by error type'
  if problem:
    return text_figure(title, 'The dead letters could not be read\n'
                       '(see the caption)')
  if not error_types:
    return text_figure(title, 'No dead letters')
  counts = error_types.most_common()
  counts.reverse()  # barh draws bottom-up: the largest on top
  fig = _figure(height=max(2.4, 1.2 + 0.35 * len(counts)))
  ax = fig.subplots()
  names = [_short(name) for name, _ in counts]
  values = [n for _, n in counts]
  ax.barh(names, values, color='#c44e52')
  for y, n in enumerate(values):
    ax.text(n, y, f' {n:,}', va='center', fontsize=9)
  ax.set_xlim(0, max(values) * 1.15)
  _integer_ticks(ax.xaxis)
  ax.set_xlabel('records')
  ax.set_title(f'{title}: {error_types.total():,} in all')
  return fig


def figure_embedding_map(points: np.ndarray, share: np.ndarray,
                         labels: Optional[list], field: Optional[str]):
  """The PCA scatter; `labels` (one per point, already folded to the top
  values + "other") colours it, or None for one colour."""
  title = 'Embeddings projected on their first two principal components'
  if not len(points):
    return text_figure(title, 'No embeddings', width=8.5, height=6.0)
  fig = _figure(width=8.5, height=6.0)
  ax = fig.subplots()
  size = 10 if len(points) > 500 else 22
  if labels is None:
    ax.scatter(points[:, 0], points[:, 1], s=size, alpha=0.6,
               color='#4c72b0', linewidths=0)
  else:
    order = [v for v, _ in collections.Counter(labels).most_common()
             if v != 'other'] + (['other'] if 'other' in labels else [])
    palette = _palette()
    labels = np.asarray(labels, dtype=object)
    for i, value in enumerate(order):
      mine = labels == value
      color = '#b0b0b0' if value == 'other' else palette[i % len(palette)]
      ax.scatter(points[mine, 0], points[mine, 1], s=size, alpha=0.7,
                 color=color, linewidths=0,
                 label=f'{_short(value)} ({int(mine.sum()):,})',
                 zorder=1 if value == 'other' else 2)
    ax.legend(title=_short(field or ''), loc='upper left',
              bbox_to_anchor=(1.01, 1.0), fontsize=8, title_fontsize=9,
              markerscale=1.5, frameon=False)
  ax.set_xlabel(f'PC1 ({share[0]:.1%} of the variance)')
  ax.set_ylabel(f'PC2 ({share[1]:.1%} of the variance)')
  ax.set_title(title, fontsize=11)
  return fig


def _integer_ticks(axis) -> None:
  """Counts are whole numbers: no 0.2-batch ticks on small runs."""
  from matplotlib.ticker import MaxNLocator
  axis.set_major_locator(MaxNLocator(integer=True))


def _palette() -> list:
  from matplotlib import colormaps
  return list(colormaps['tab10'].colors)


def png(fig) -> bytes:
  """A figure as PNG bytes (then dropped: nothing keeps figures alive)."""
  buf = io.BytesIO()
  fig.savefig(buf, format='png', dpi=DPI, facecolor='white')
  return buf.getvalue()


# --- the plots of one run ---------------------------------------------------


def plots(data: RunData, summary: dict, options,
          samples: Sequence) -> tuple[list[Plot], Optional[str]]:
  """Every plot of the report, and the sentence that replaces the
  documents/s plot when there are too few progress samples for one. A
  nightly run (--previous) has its documents' panel too."""
  night = nightly(summary, data, options)
  out = [_plot_token_lengths(data, options), _plot_buckets(summary)]
  throughput, missing = _plot_throughput(summary, samples,
                                         no_samples_reason(options), night)
  if throughput:
    out.append(throughput)
  out += [_plot_dead_letters(data), _plot_embedding_map(data)]
  if night:
    out.append(_plot_nightly(night, summary))
  return out, missing


def _plot_token_lengths(data: RunData, options) -> Plot:
  n, limit = data.total, options.max_seq_length
  return Plot(
      'token-lengths',
      f'Histogram of the token lengths of {n:,} embedded documents, with '
      f'the truncation limit of {limit} tokens marked; {data.truncated:,} '
      'were truncated.',
      f'Token lengths of the {n:,} documents in the output; '
      f'<b>{data.truncated:,}</b> were truncated at --max_seq_length '
      f'{limit} (dashed line).',
      png(figure_token_lengths(data.token_counts, data.truncated, limit)))


def _plot_buckets(summary: dict) -> Plot:
  batches = summary.get('batches_per_bucket') or {}
  padding = summary.get('padding_per_bucket') or {}
  overall = summary.get('padding_efficiency')
  shown = f'{overall:.1%}' if overall is not None else 'n/a'
  return Plot(
      'buckets',
      f'Bar chart of batches per length bucket ({len(batches)} buckets, '
      f'{summary.get("batches", 0):,} batches) with each bucket\'s padding '
      'efficiency as a line.',
      f'{summary.get("batches", 0):,} encoder batches in {len(batches)} '
      f'length buckets; padding efficiency over the run {shown} (real '
      'tokens / tokens computed).',
      png(figure_buckets(batches, padding)))


def no_samples_reason(options) -> str:
  """Why a run can have no progress samples, from its flags."""
  if getattr(options, 'progress_every', None) == 0:
    return 'progress was off (--progress_every 0)'
  runner = None
  if hasattr(options, 'view_as'):
    from apache_beam.options.pipeline_options import StandardOptions
    runner = options.view_as(StandardOptions).runner
  from pipeline import progress_sources
  if runner in progress_sources.SOURCES:
    return f'{runner} reported no counts while the job ran'
  return f'{runner or "this runner"} gives no live counts'


def _plot_throughput(summary: dict, samples: Sequence, reason: str,
                     night: Optional[Nightly] = None
                     ) -> tuple[Optional[Plot], Optional[str]]:
  if not samples:
    return None, ('No documents/s plot: no progress samples were taken '
                  f'during this run ({reason}).')
  starts, ends, values = rates(samples)
  if not len(values):
    return None, ('No documents/s plot: the run ended before a second '
                  'progress sample, so there is no rate over time to show '
                  '(it was shorter than about two seconds).')
  overall = summary.get('documents_per_second')
  if night:
    return _plot_nightly_throughput(summary, samples, night), None
  return Plot(
      'throughput',
      f'Line chart of documents embedded per second over {ends[-1]:.0f} '
      f'seconds, from {len(samples)} progress samples; peak '
      f'{values.max():,.1f} documents/s.',
      f'Documents embedded per second between {len(samples)} progress '
      f'samples; {overall or 0:,.1f} documents/s over the whole run '
      f'({summary.get("seconds", 0):,.1f} s, start-up included).',
      png(figure_throughput(starts, ends, values, overall,
                            summary.get('seconds')))), None


def _per_second(count: int, seconds) -> str:
  return f'{count / seconds:,.1f}' if seconds else 'n/a'


def _plot_nightly_throughput(summary: dict, samples: Sequence,
                             night: Nightly) -> Plot:
  """A nightly run's rates: documents read and documents embedded per
  second. The embedded rate counts only the documents the encoder saw."""
  starts, ends, values = rates(samples)
  _, _, read = rates(samples, 'documents_read')
  overall = summary.get('documents_per_second')
  seconds = summary.get('seconds') or 0
  return Plot(
      'throughput',
      f'Line chart of documents read and documents embedded per second '
      f'over {ends[-1]:.0f} seconds, from {len(samples)} progress samples; '
      f'peaks {read.max():,.1f} read/s and {values.max():,.1f} embedded/s.',
      f'Documents read (each compared with --previous) and embedded per '
      f'second between {len(samples)} progress samples. The embedded rate '
      f'counts only the work done, the {night.embedded:,} new or changed '
      f'documents: {overall or 0:,.1f} documents/s over the whole run '
      f'({seconds:,.1f} s, start-up included; the summary\'s '
      f'documents_per_second); {night.read:,} documents were read, '
      f'{_per_second(night.read, seconds)} per second.',
      png(figure_throughput(starts, ends, values, overall, seconds, read)))


def _plot_nightly(night: Nightly, summary: dict) -> Plot:
  """The nightly run's panel: every figure in the caption is in a span
  of its own (nightly-*), so that a reader, or a test, finds it."""
  def figure(name: str, value: int) -> str:
    return f'<span id="nightly-{name}">{value:,}</span>'

  if night.in_place:
    carried = (f'The output is the --previous table: its unchanged rows '
               f'stay where they are ({figure("carried", night.carried)} '
               f'carried; {summary.get("rows_upserted", 0):,} rows upserted, '
               f'{summary.get("rows_deleted", 0):,} deleted).')
  else:
    carried = (f'{figure("carried", night.carried)} unchanged records were '
               'carried into the rewritten output.')
  encoder = summary.get('encoder_seconds') or 0
  caption = (
      f'Of {figure("read", night.read)} documents read, '
      f'{figure("embedded", night.embedded)} were embedded (new or changed '
      f'since --previous), {figure("reused", night.reused)} reused and '
      f'{figure("rejected", night.rejected)} rejected; '
      f'{figure("removed", night.removed)} ids of --previous no longer in '
      f'the corpus were removed. {carried} The output holds '
      f'{figure("records", night.records)} records, '
      f'{figure("records-this-run", night.records_this_run)} of them '
      'embedded by this run (by embedded_at). Rates count only the work '
      f'done: the {night.embedded:,} embedded documents, '
      f'{summary.get("documents_per_second") or 0:,.1f} per second of the '
      f'run\'s {summary.get("seconds") or 0:,.1f} s '
      '(documents_per_second), and '
      f'{_per_second(night.embedded, encoder)} per second of the encoder\'s '
      f'{encoder:,.2f} s; the reused documents cost no encoder time.')
  return Plot(
      NIGHTLY_ID,
      f'Bar chart of this nightly run\'s documents: {night.embedded:,} '
      f'embedded, {night.reused:,} reused, {night.rejected:,} rejected, '
      f'{night.removed:,} removed and {night.carried:,} carried.',
      caption, png(figure_nightly(night)))


def _plot_dead_letters(data: RunData) -> Plot:
  n = data.error_types.total()
  kinds = len(data.error_types)
  if data.dead_letter_error:
    caption = html.escape(data.dead_letter_error)
    alt = 'The dead letters could not be read.'
  else:
    caption = (f'<span id="dead-letter-total">{n:,}</span> dead letters '
               f'of {kinds} error types.' if n else
               '<span id="dead-letter-total">0</span> dead letters.')
    alt = (f'Horizontal bar chart of {n:,} dead letters by error type.' if n
           else 'There were no dead letters.')
  return Plot('dead-letters', alt, caption,
              png(figure_dead_letters(data.error_types,
                                      data.dead_letter_error)))


def _plot_embedding_map(data: RunData) -> Plot:
  rows, points, share = pca_2d(data.vectors)
  total = data.total
  labels = None
  if data.color_field:
    shown = [_label(data.color_values[i]) for i in rows]
    keep = set(top_values(shown))
    labels = [v if v in keep else 'other' for v in shown]
    colour = (f'coloured by <code>{html.escape(data.color_field)}</code>'
              f' ({len(keep)} most frequent values'
              f'{", the rest as other" if "other" in labels else ""})')
  else:
    colour = f'in one colour: {html.escape(data.color_note)}'
  shown_part = (f'a sample of {len(rows):,} of the {total:,} embeddings '
                f'(seed {PCA_SEED})' if len(rows) < total
                else f'all {total:,} embeddings')
  return Plot(
      'embedding-map',
      f'Scatter plot of {shown_part} projected on their first two principal '
      f'components{", coloured by " + data.color_field if labels else ""}.',
      f'PCA projection of {shown_part}, {colour}. PC1 and PC2 explain '
      f'{share[0]:.1%} and {share[1]:.1%} of the variance.',
      png(figure_embedding_map(points, share, labels, data.color_field)))


# --- HTML -------------------------------------------------------------------

_CSS = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto,
       "DejaVu Sans", sans-serif; color: #222; background: #fafafa;
       margin: 0; padding: 24px; }
main { max-width: 1140px; margin: 0 auto; }
h1 { font-size: 24px; margin: 0 0 4px; }
h2 { font-size: 18px; margin: 28px 0 10px; }
.meta { color: #555; margin: 0 0 16px; }
.meta code { word-break: break-all; }
.grid { display: grid; gap: 16px;
        grid-template-columns: repeat(auto-fit, minmax(480px, 1fr)); }
figure { margin: 0; background: #fff; border: 1px solid #ddd;
         border-radius: 6px; padding: 10px; }
figure.wide { margin-top: 16px; }
figure.narrow { max-width: 700px; }
figure img { display: block; width: 100%; height: auto; }
figure.wide img { max-width: 935px; margin: 0 auto; }
figcaption { font-size: 13px; color: #444; margin-top: 6px; }
.flag { white-space: nowrap; }
p.missing { background: #fff; border: 1px dashed #bbb; border-radius: 6px;
            padding: 16px; color: #555; margin: 0; }
table { border-collapse: collapse; background: #fff; font-size: 13px; }
th, td { border: 1px solid #ddd; padding: 4px 10px; text-align: left;
         vertical-align: top; }
th { font-weight: 600; background: #f3f3f3; white-space: nowrap; }
td { font-family: ui-monospace, "DejaVu Sans Mono", monospace;
     word-break: break-word; }
"""


def _img(plot: Plot) -> str:
  data = base64.b64encode(plot.png).decode('ascii')
  width, height = _png_size(plot.png)
  return (f'<img id="{plot.id}" alt="{html.escape(plot.alt)}" '
          f'width="{width}" height="{height}" '
          f'src="data:image/png;base64,{data}">')


def _png_size(data: bytes) -> tuple[int, int]:
  """Width and height from the PNG header (IHDR), for the <img> size."""
  return (int.from_bytes(data[16:20], 'big'),
          int.from_bytes(data[20:24], 'big'))


def _figure_html(plot: Plot, wide: bool = False, narrow: bool = False
                 ) -> str:
  cls = ' class="wide"' if wide else ' class="narrow"' if narrow else ''
  return (f'<figure{cls}>{_img(plot)}'
          f'<figcaption id="{plot.id}-caption">{_flags(plot.caption)}'
          '</figcaption>'
          '</figure>')


def _flags(text: str) -> str:
  """Keeps '--flag value' on one line: browsers break lines after a
  hyphen, which would leave a lone '--' at a line's end."""
  return re.sub(r'(--[a-z_]+(?: \d+)?)', r'<span class="flag">\1</span>',
                text)


def shown_value(value) -> str:
  """A summary value as one short line: dicts as key: value pairs, long
  lists cut, floats and ints as they are."""
  if isinstance(value, dict):
    return ', '.join(f'{k}: {shown_value(v)}' for k, v in value.items()) or '{}'
  if isinstance(value, (list, tuple)):
    head = ', '.join(shown_value(v) for v in value[:12])
    more = f', \u2026 ({len(value)} in all)' if len(value) > 12 else ''
    return f'[{head}{more}]'
  if value is None or isinstance(value, bool):
    return json.dumps(value)
  return str(value)


def summary_table(summary: dict) -> str:
  rows = ''.join(
      f'<tr id="summary-{html.escape(str(k))}"><th scope="row">'
      f'{html.escape(str(k))}</th><td>{html.escape(shown_value(v))}</td></tr>'
      for k, v in summary.items())
  return f'<table id="summary">{rows}</table>'


def render_html(*, title: str, heading: str, meta: list[tuple[str, str]],
                plots_: Sequence[Plot], missing: Optional[str],
                summary: dict) -> str:
  """The whole page: `title` for the browser tab and bookmarks,
  `heading` on the page. Every value is escaped here; captions are HTML
  built in this module from escaped values."""
  by_id = {p.id: p for p in plots_}
  small = []
  for pid in PLOT_IDS[:4]:
    if pid in by_id:
      small.append(_figure_html(by_id[pid]))
    elif pid == 'throughput' and missing:
      small.append(f'<p class="missing" id="throughput-missing">'
                   f'{_flags(html.escape(missing))}</p>')
  wide = (_figure_html(by_id['embedding-map'], wide=True)
          if 'embedding-map' in by_id else '')
  night = (f'<h2>Nightly run: embedded, reused, removed, carried</h2>'
           f'{_figure_html(by_id[NIGHTLY_ID], narrow=True)}'
           if NIGHTLY_ID in by_id else '')
  meta_html = ' &middot; '.join(
      f'{html.escape(k)} <code>{html.escape(v)}</code>' for k, v in meta)
  return (
      '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
      '<meta name="viewport" content="width=device-width, initial-scale=1">'
      f'<title>{html.escape(title)}</title><style>{_CSS}</style></head>'
      f'<body><main><h1>{html.escape(heading)}</h1>'
      f'<p class="meta">{meta_html}</p>{night}'
      f'<h2>Batching and throughput</h2><div class="grid">{"".join(small)}'
      f'</div><h2>Embeddings</h2>{wide}'
      f'<h2>Summary</h2>{summary_table(summary)}'
      '</main></body></html>\n')


def _source(options) -> str:
  return str(getattr(options, 'input', None)
             or getattr(options, 'input_query', None) or '?')


def _meta(summary: dict, options, now: datetime.datetime) -> list:
  previous = getattr(options, 'previous', None)
  return [('input', _source(options)),
          ('output', str(summary.get('output', options.output))),
          *([('previous', str(previous))] if previous else []),
          ('precision', str(summary.get('precision', '?'))),
          ('packing', str(summary.get('packing', '?'))),
          ('written', now.strftime('%Y-%m-%d %H:%M:%S UTC'))]


def write_atomically(path: str, text: str) -> None:
  """Temp file in the same folder, then os.replace: a reader (or a crash)
  never sees half a report, and an earlier report stays until the new one
  is complete. Created with open(), so the permissions follow the umask."""
  path = os.path.abspath(path)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  temp = os.path.join(os.path.dirname(path),
                      f'.{os.path.basename(path)}.{os.getpid()}.tmp')
  try:
    with open(temp, 'w', encoding='utf-8') as f:
      f.write(text)
      f.flush()
      os.fsync(f.fileno())
    os.replace(temp, path)
  finally:
    if os.path.exists(temp):
      os.remove(temp)


def write(path: str, *, summary: dict, options, samples: Sequence) -> None:
  """Writes the report of a finished run to `path` (a local file).

  `summary` is the run's summary dict, `options` its EmbedOptions and
  `samples` the progress samples taken during the run (objects with
  .seconds and .documents_embedded; may be empty)."""
  if paths.has_scheme(path):
    raise ValueError(f'--report takes a local file path, got {path!r}')
  data = load_run(options)
  figures, missing = plots(data, summary, options, list(samples))
  now = datetime.datetime.now(datetime.timezone.utc)
  model = summary.get('model', '?')
  source = _short(os.path.basename(_source(options).rstrip('/')) or
                  _source(options), 60)
  write_atomically(path, render_html(
      title=f'{model} on {source}, {now:%Y-%m-%d %H:%M} UTC: run report',
      heading=f'Embedding run report: {model} on {source}',
      meta=_meta(summary, options, now), plots_=figures, missing=missing,
      summary=summary))
