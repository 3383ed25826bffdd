"""Shared fixtures. Real-engine fixtures start one vLLM engine per test module (start-up is the slow part)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
