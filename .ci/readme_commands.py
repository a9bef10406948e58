"""Print the shell commands of the README's quickstart block, one per line, as written.

CI runs exactly these (``.ci/run``): what a newcomer types is what CI proves.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def quickstart_commands(text: str) -> list[str]:
    block = re.search(r"^## Quickstart\n.*?^```(?:bash|sh)\n(.*?)^```", text, re.S | re.M)
    if block is None:
        raise SystemExit(f"{README}: no ```bash block under '## Quickstart'")
    lines = [line.strip() for line in block.group(1).splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


if __name__ == "__main__":
    commands = quickstart_commands(README.read_text(encoding="utf-8"))
    if len(commands) != 2:
        sys.exit(f"{README}: expected the quickstart's two commands, found {commands}")
    print("\n".join(commands))
