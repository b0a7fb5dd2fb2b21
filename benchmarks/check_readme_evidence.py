"""Check that every number in the README's results tables comes from a committed file.

Each table under "## Results" is followed by a line ``Source: `benchmarks/results/<file>` ...`` (one or more
files, with the command that writes them) or ``Published: ...`` (numbers quoted from papers). Every number
in the table's cells (the first column, a row label, excepted; columns or rows whose header / label says
"published" excepted) must appear in a cited file: a file's number matches when, rounded to the README's
printed precision, it equals the README's number (a percentage also matches its fraction). The cited files
must say where and when they were made: a date (YYYY-MM-DD), a device and a jax version.

    python benchmarks/check_readme_evidence.py [README.md]

Exits 1 and lists every number it could not find.
"""

from __future__ import annotations

import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?(?:e[-+]?\d+)?%?(?![\w.])")
FILE_NUM = re.compile(r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")


def tables(text: str):
    """``(heading, header cells, rows, line after the table)`` of every markdown table in the Results
    section."""
    start = text.find("\n## Results")
    end = text.find("\n## ", start + 5)
    section = re.sub(r"```.*?```", "", text[start:end if end > 0 else len(text)], flags=re.S)  # no code blocks
    lines = section.splitlines()
    heading, i = "", 0
    while i < len(lines):
        if lines[i].startswith("#"):
            heading = lines[i].strip("# ")
        if lines[i].startswith("|") and i + 1 < len(lines) and re.match(r"^\|[-:| ]+\|$", lines[i + 1].strip()):
            header = [c.strip() for c in lines[i].strip().strip("|").split("|")]
            rows, j = [], i + 2
            while j < len(lines) and lines[j].startswith("|"):
                rows.append([c.strip() for c in lines[j].strip().strip("|").split("|")])
                j += 1
            after = ""
            k = j
            while k < len(lines) and not lines[k].strip():
                k += 1
            while k < len(lines) and lines[k].strip() and not lines[k].startswith(("|", "#")):
                after += " " + lines[k]
                k += 1
            yield heading, header, rows, after.strip()
            i = j
        else:
            i += 1


def precision(token: str) -> float:
    """Half a unit of the token's last printed digit."""
    t = token.rstrip("%")
    if "e" in t:
        mant, exp = t.split("e")
        d = len(mant.split(".")[1]) if "." in mant else 0
        return 0.5 * 10.0 ** (int(exp) - d)
    d = len(t.split(".")[1]) if "." in t else 0
    return 0.5 * 10.0 ** (-d)


def found(token: str, values: list[float]) -> bool:
    r = float(token.rstrip("%"))
    tol = precision(token) * (1 + 1e-9) + 1e-12
    cands = [r] + ([r / 100] if token.endswith("%") else [])
    tols = [tol] + ([tol / 100] if token.endswith("%") else [])
    return any(abs(v - c) <= t for v in values for c, t in zip(cands, tols))


def check(readme: str) -> list[str]:
    text = open(readme).read()
    problems = []
    for heading, header, rows, after in tables(text):
        if after.startswith("Published:"):
            continue
        files = re.findall(r"`(benchmarks/results/[^`]+)`", after) if after.startswith("Source:") else []
        if not files:
            problems.append(f"[{heading}] table {header} has no 'Source: `benchmarks/results/...`' line under it")
            continue
        values, stamp = [], ""
        for f in files:
            path = os.path.join(ROOT, f)
            if not os.path.exists(path):
                problems.append(f"[{heading}] cited file {f} does not exist")
                continue
            body = open(path, errors="replace").read()
            stamp += body
            values += [float(x) for x in FILE_NUM.findall(body)]
        if values and not (re.search(r"\d{4}-\d{2}-\d{2}", stamp) and re.search(r"jax[ =]v?\d", stamp)):
            problems.append(f"[{heading}] cited files {files} carry no date (YYYY-MM-DD) or jax version")
        skip_cols = {k for k, h in enumerate(header) if "published" in h.lower()}
        for row in rows:
            if "published" in row[0].lower():
                continue
            for k, cell in enumerate(row[1:], 1):
                if k in skip_cols:
                    continue
                for token in NUM.findall(cell.replace("**", "")):
                    if not found(token, values):
                        problems.append(f"[{heading}] {token} (row '{row[0]}', column '{header[k]}') is not in "
                                        f"{', '.join(files)}")
    return problems


def main():
    readme = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "README.md")
    problems = check(readme)
    n = sum(1 for _ in tables(open(readme).read()))
    for p in problems:
        print("MISSING", p)
    print(f"{n} results tables checked; {len(problems)} problems")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
