"""docs/config.md, generated from the schema's help texts (`lorabench keys --markdown`; `make docs` writes the file,
tests/test_docs.py fails when it is stale): every key of `train`, `compare` and `sweep` configs with its default."""
from __future__ import annotations

from lorabench.config.loading import field_help
from lorabench.config.schema import CompareConfig, ExperimentConfig, ModelEntry, SweepSection

INTRO = """# Config reference

Generated from the schema's help texts by `lorabench keys --markdown` (`make docs` rewrites this file; a test fails
when it is stale). `lorabench keys train|compare|sweep` prints the same in a terminal.

A config is YAML with the sections `data`, `model`, `lora` and `train`; every key has a default, and
`--set section.key=value` overrides any key (the value is read as YAML: `1e-4`, `null`, `[a, b]`). Unknown keys,
wrong types, values out of range, a key written twice and settings that another key makes unused are one-line
errors naming the key, before anything is read or trained. Relative file paths resolve against the config file's
folder. Every run records its resolved config (every key, defaults included) in run.json and config.yaml.
"""


def _table(rows: list[tuple[str, str, str]]) -> str:
    lines = ["| key | default | meaning |", "|---|---|---|"]
    for key, default, text in rows:
        lines.append(f"| `{key}` | {f'`{default}`' if default else ''} | {text.replace('|', chr(92) + '|')} |")
    return "\n".join(lines)


def markdown_reference() -> str:
    """The whole reference page as Markdown."""
    train = field_help(ExperimentConfig)
    train_keys = {k for k, _, _ in train}
    compare = [r for r in field_help(CompareConfig) if r[0] not in train_keys or r[0] == "model"]
    compare = [r for r in compare if not r[0].startswith("models.")]
    entries = field_help(ModelEntry, "models[].")
    sweep = field_help(SweepSection, "sweep.")
    parts = [INTRO,
             "## `lorabench train` (an experiment)\n", _table(train),
             "\n## `lorabench compare`\n\nThe sections of an experiment (shared by every model; `model` is a mapping of "
             "model keys), and:\n", _table(compare),
             "\nEach `models:` entry:\n", _table(entries),
             "\n## `lorabench sweep`\n\nAn experiment (the keys of `lorabench train`, the base of every trial) and the "
             "`sweep:` section:\n", _table(sweep)]
    return "\n".join(parts).rstrip() + "\n"
