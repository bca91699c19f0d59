"""Lines per section of the three scripts, as a reader meets them (sections are the
`# ----- name` banners; "docstring and imports" is everything before the first).

    python benchmarks/script_sections.py                  # today's scripts
    python benchmarks/script_sections.py --rev 1ae4d34    # the same, at a git revision
"""
from __future__ import annotations

import argparse
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ("a3c_cartpole.py", "a3c_kungfu.py", "a3c_carracing.py")
BANNER = re.compile(r"^# -{20,} (.+)$|^# ={20,} (PLUMBING)$")


def sections(text: str) -> dict[str, int]:
    counts, name = {"docstring and imports": 0}, "docstring and imports"
    for line in text.splitlines():
        found = BANNER.match(line)
        if found:
            name = found.group(1) or found.group(2)
            counts[name] = counts.get(name, 0)
        counts[name] += 1
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rev", help="a git revision instead of the files on disk")
    args = parser.parse_args()
    for script in SCRIPTS:
        text = (subprocess.run(["git", "show", f"{args.rev}:{script}"], cwd=ROOT, capture_output=True, text=True,
                               check=True).stdout if args.rev else (ROOT / script).read_text())
        counts = sections(text)
        print(f"{script}: {sum(counts.values())} lines")
        for name, lines in counts.items():
            print(f"  {lines:5d}  {name}")


if __name__ == "__main__":
    main()
