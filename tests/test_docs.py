"""The documentation site's contracts that need no Sphinx build: every results file is included by a docs
page (so no figure is copied by hand), and the pages name no internal issue numbers. The API reference's
coverage is checked after the build by ``docs/check_api.py`` (in ``.ci/run``)."""

import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = os.path.join(ROOT, "docs")
RESULTS = os.path.join(ROOT, "benchmarks", "results")


def _pages():
    for root, dirs, files in os.walk(DOCS):
        dirs[:] = [d for d in dirs if not d.startswith("_")]
        for f in files:
            if f.endswith(".md"):
                yield os.path.join(root, f)


def test_every_results_file_is_included_by_a_docs_page():
    included = set()
    for page in _pages():
        for ref in re.findall(r"benchmarks/results/([\w.\-]+)", open(page).read()):
            included.add(ref)
    shown = {f for f in os.listdir(RESULTS) if not f.endswith(".json")}  # JSON: the data behind a table
    assert not shown - included, sorted(shown - included)
    assert not included - set(os.listdir(RESULTS)), sorted(included - set(os.listdir(RESULTS)))


def test_docs_cite_no_internal_issue_numbers():
    bad = [f"{os.path.relpath(p, ROOT)}: {m}" for p in _pages() for m in re.findall(r"\(#\d+\)|issue #?\d+",
                                                                                    open(p).read())]
    assert not bad, bad
