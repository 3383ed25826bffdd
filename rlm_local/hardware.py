"""What this machine offers an engine: an NVIDIA GPU or only CPUs."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess


@functools.cache
def has_nvidia_gpu() -> bool:
    """True when an NVIDIA driver answers; RLM_LOCAL_DEVICE=cpu|gpu overrides the probe."""
    forced = os.environ.get("RLM_LOCAL_DEVICE", "").lower()
    if forced in ("cpu", "gpu"):
        return forced == "gpu"
    if not shutil.which("nvidia-smi"):
        return False
    try:
        return subprocess.run(["nvidia-smi", "-L"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False
