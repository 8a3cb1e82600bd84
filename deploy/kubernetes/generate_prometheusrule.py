"""Generate deploy/kubernetes/prometheusrule.yaml from the rule files in deploy/prometheus/.

Every ``deploy/prometheus/*.yml`` with a top-level ``groups`` key (the alert and
recording rule files; not ``prometheus.yml`` nor the ``*.test.yml`` unit tests)
contributes its groups, files in name order, groups in file order, unchanged.

    python deploy/kubernetes/generate_prometheusrule.py          # rewrite the file
    python deploy/kubernetes/generate_prometheusrule.py --check  # exit 1 if stale

The test suite runs the same check, so the two cannot drift.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
RULES_DIR = ROOT / "deploy" / "prometheus"
TARGET = ROOT / "deploy" / "kubernetes" / "prometheusrule.yaml"


class _Dumper(yaml.SafeDumper):
    """Writes multi-line strings (PromQL expressions) as literal blocks, as written."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)

# libyaml's safe loader where PyYAML was built with it (it reads the same documents as
# yaml.safe_load, ten times faster); the pure-Python one otherwise.
_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _rule_documents(rules_dir: Path) -> list[tuple[Path, dict[str, Any]]]:
    """Return each ``*.yml`` file of ``rules_dir`` with a top-level ``groups``, parsed."""
    found = []
    for path in sorted(rules_dir.glob("*.yml")):
        document = yaml.load(path.read_text(encoding="utf-8"), Loader=_LOADER)
        if isinstance(document, dict) and "groups" in document:
            found.append((path, document))
    return found


def rule_files(rules_dir: Path = RULES_DIR) -> list[Path]:
    """Return the rule files of ``rules_dir``: ``*.yml`` files with a top-level ``groups``."""
    return [path for path, _ in _rule_documents(rules_dir)]


def render(rules_dir: Path = RULES_DIR) -> str:
    """Return the text of the PrometheusRule holding every group of the rule files."""
    documents = _rule_documents(rules_dir)
    files = [path for path, _ in documents]
    groups: list[Any] = []
    for _, document in documents:
        groups.extend(document["groups"])
    names = ", ".join(f"deploy/prometheus/{path.name}" for path in files)
    resource = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "taskforce", "labels": {"app.kubernetes.io/name": "taskforce"}},
        "spec": {"groups": groups},
    }
    header = (
        f"# Generated from {names} by deploy/kubernetes/generate_prometheusrule.py.\n"
        "# Do not edit: change the rule files, then run the script.\n"
    )
    body = yaml.dump(resource, Dumper=_Dumper, sort_keys=False, width=100, allow_unicode=True)
    return header + body


def main(argv: list[str] | None = None) -> int:
    """Write the PrometheusRule, or with ``--check`` report whether it is up to date."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the file is stale")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = TARGET.read_text(encoding="utf-8") if TARGET.exists() else ""
        if current != text:
            print(f"{TARGET.relative_to(ROOT)} is stale: run {Path(__file__).relative_to(ROOT)}")
            return 1
        return 0
    TARGET.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
