"""python -m pipeline.export_model: which kinds need --out.

minilm-l6 without --out goes into the model cache that the job's
--model minilm-l6 reads (docs/models.md, "The model cache"); the cache
holds it only as the job converts it, so options that change the
conversion need a folder of their own. bert and roberta have no cache
entry and always need --out. (tests/test_readme_commands.py converts into
the cache.)
"""

from __future__ import annotations

import pytest

from pipeline import export_model

pytestmark = pytest.mark.unit


@pytest.mark.parametrize('argv, message', [
    (['bert', '--from', 'hf'], 'bert needs --out DIR'),
    (['roberta', '--from', 'hf'], 'roberta needs --out DIR'),
    (['minilm-l6', '--seq_length', '256'],
     '--seq_length and --special_tokens_in_text need --out DIR'),
    (['minilm-l6', '--special_tokens_in_text', 'text'],
     '--seq_length and --special_tokens_in_text need --out DIR'),
])
def test_refused_without_out(argv, message, capsys):
  with pytest.raises(SystemExit) as exit_info:
    export_model.main(argv)
  assert exit_info.value.code == 2
  assert message in capsys.readouterr().err.strip().splitlines()[-1]
