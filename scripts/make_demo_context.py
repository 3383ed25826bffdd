"""Write the quickstart's context: ~400,000 characters (about 3x the default model's window) hiding one fact."""

from __future__ import annotations

import sys
from pathlib import Path

try:
    from rlm_local.synthetic import needle_task
except ImportError:  # run from a checkout without the package installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from rlm_local.synthetic import needle_task


def main() -> int:
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "demo-context.txt")
    task = needle_task(seed=2025, chars=400_000, item="access code")
    target.write_text(task.context, encoding="utf-8")
    print(f"wrote {len(task.context):,} characters to {target}; expected answer: {task.answer}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
