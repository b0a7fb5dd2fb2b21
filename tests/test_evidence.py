"""benchmarks/check_readme_evidence.py: a README table's numbers must be in its cited, stamped file."""

import importlib.util
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
spec = importlib.util.spec_from_file_location("check", os.path.join(ROOT, "benchmarks", "check_readme_evidence.py"))
check = importlib.util.module_from_spec(spec)
spec.loader.exec_module(check)

TABLE = """# x

## Results

### A

| name | value | share |
|---|---|---|
| one | 1.23 [0.5, 2.0] | 94.8% |
| two (published) | 99 | 1% |

{source}

## Status
"""


def _run(tmp_path, monkeypatch, source, body):
    res = tmp_path / "benchmarks" / "results"
    res.mkdir(parents=True)
    (res / "a.md").write_text(body)
    monkeypatch.setattr(check, "ROOT", str(tmp_path))
    readme = tmp_path / "README.md"
    readme.write_text(TABLE.format(source=source))
    return check.check(str(readme))


STAMP = "Written on 2026-12-01; jax 0.10.2\n"


def test_numbers_found_at_the_printed_precision(tmp_path, monkeypatch):
    problems = _run(tmp_path, monkeypatch, "Source: `benchmarks/results/a.md` (cmd).",
                    STAMP + "fd 1.2349 ci 0.49 2.0 conf 0.948")
    assert problems == []


def test_a_changed_number_is_named(tmp_path, monkeypatch):
    problems = _run(tmp_path, monkeypatch, "Source: `benchmarks/results/a.md` (cmd).",
                    STAMP + "fd 1.2449 ci 0.49 2.0 conf 0.948")
    assert len(problems) == 1 and "1.23" in problems[0] and "row 'one'" in problems[0]


def test_a_table_without_source_or_stamp_fails(tmp_path, monkeypatch):
    assert "no 'Source:" in _run(tmp_path, monkeypatch, "", STAMP)[0]
    problems = _run(tmp_path / "b", monkeypatch, "Source: `benchmarks/results/a.md`.", "1.23 0.5 2.0 0.948")
    assert "no date" in problems[0]


def test_precision_rules():
    assert check.found("6.4e-09", [6.43e-9]) and not check.found("6.4e-09", [6.5e-9])
    assert check.found("94.8%", [0.9481]) and check.found("94.8%", [94.8])
    assert check.found("17", [17.4]) and not check.found("17", [17.6])
