#!/usr/bin/env bash
# Build the rlm-local sandbox image without any container registry (air-gapped servers, CI).
#
#   1. base image  rlm-local-base:bookworm   Debian minbase + python3, made with debootstrap and `docker import`
#   2. sandbox     rlm-local-sandbox:latest  sandbox/Dockerfile on top of it (the REPL worker, a non-root user)
#
# Idempotent: a step whose result exists (and, for the sandbox image, was built from the same Dockerfile, worker and
# base) is skipped, so a second run takes about a second. --force rebuilds the sandbox image, --force-base the base too.
# --base IMAGE uses an existing image (e.g. python:3.12-slim, pulled when online) instead of the debootstrap base.
set -euo pipefail

usage() {
    cat <<'EOF'
usage: build_sandbox_image.sh [--image NAME:TAG] [--base IMAGE] [--suite SUITE] [--mirror URL] [--force] [--force-base]

  --image NAME:TAG   sandbox image to build            (default: rlm-local-sandbox:latest)
  --base IMAGE       build on this image instead of the debootstrap base (e.g. python:3.12-slim)
  --suite SUITE      Debian suite for the base         (default: bookworm)
  --mirror URL       Debian mirror for debootstrap     (default: from /etc/apt/sources.list.d, else deb.debian.org)
  --force            rebuild the sandbox image even if it is up to date
  --force-base       rebuild the debootstrap base as well (implies --force)
EOF
}

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SANDBOX_DIR="${RLM_SANDBOX_DIR:-}"
if [[ -z "$SANDBOX_DIR" ]]; then
    for candidate in "$HERE/../sandbox" "$HERE"; do
        if [[ -f "$candidate/Dockerfile" && -f "$candidate/repl_worker.py" ]]; then
            SANDBOX_DIR="$(cd "$candidate" && pwd)"
            break
        fi
    done
fi
IMAGE="rlm-local-sandbox:latest"
SUITE="bookworm"
BASE=""
MIRROR="${RLM_DEBIAN_MIRROR:-}"
FORCE=0
FORCE_BASE=0

while [[ $# -gt 0 ]]; do
    case "$1" in
        --image) IMAGE="$2"; shift 2 ;;
        --base) BASE="$2"; shift 2 ;;
        --suite) SUITE="$2"; shift 2 ;;
        --mirror) MIRROR="$2"; shift 2 ;;
        --force) FORCE=1; shift ;;
        --force-base) FORCE=1; FORCE_BASE=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "build_sandbox_image.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
    esac
done

say() { echo "[sandbox build] $*" >&2; }
die() { echo "[sandbox build] error: $*" >&2; exit 1; }

[[ -n "$SANDBOX_DIR" ]] || die "cannot find sandbox/Dockerfile and sandbox/repl_worker.py (set RLM_SANDBOX_DIR)"
command -v docker >/dev/null || die "the docker command is missing: install Docker (e.g. apt-get install docker.io)"
if ! docker info >/dev/null 2>&1; then
    die "the Docker engine does not answer: start it with 'sudo systemctl start docker' (or 'sudo dockerd &')"
fi

image_exists() { docker image inspect "$1" >/dev/null 2>&1; }
image_label() { docker image inspect -f "{{ index .Config.Labels \"$2\" }}" "$1" 2>/dev/null || true; }

# The Debian mirror the host already uses (deb822 sources first, then the one-line format).
find_mirror() {
    local file uris suites line
    for file in /etc/apt/sources.list.d/*.sources; do
        [[ -f "$file" ]] || continue
        uris="" suites=""
        while IFS= read -r line || [[ -n "$line" ]]; do
            if [[ -z "${line// }" ]]; then  # a blank line ends a stanza
                if [[ -n "$uris" && " $suites " == *" $SUITE "* ]]; then echo "${uris%% *}"; return 0; fi
                uris="" suites=""
            fi
            case "$line" in
                URIs:*) uris="$(echo "${line#URIs:}" | xargs)" ;;
                Suites:*) suites="$(echo "${line#Suites:}" | xargs)" ;;
            esac
        done <"$file"
        if [[ -n "$uris" && " $suites " == *" $SUITE "* ]]; then echo "${uris%% *}"; return 0; fi
    done
    for file in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [[ -f "$file" ]] || continue
        line="$(grep -E "^deb (\[[^]]*\] )?[a-z]+://[^ ]+ $SUITE( |$)" "$file" | head -n1 || true)"
        if [[ -n "$line" ]]; then
            line="$(echo "$line" | sed -E 's/^deb (\[[^]]*\] )?//')"
            echo "${line%% *}"
            return 0
        fi
    done
    echo "http://deb.debian.org/debian"
}

build_base() {
    local base="$1" rootfs
    command -v debootstrap >/dev/null \
        || die "debootstrap is missing: apt-get install debootstrap (or pass --base python:3.12-slim when online)"
    [[ "$(id -u)" == 0 ]] || die "debootstrap needs root: run this script with sudo"
    [[ -n "$MIRROR" ]] || MIRROR="$(find_mirror)"
    rootfs="$(mktemp -d "${TMPDIR:-/tmp}/rlm-rootfs.XXXXXX")"
    # shellcheck disable=SC2064
    trap "rm -rf '$rootfs'" EXIT
    say "debootstrap $SUITE from $MIRROR (about a minute)"
    debootstrap --variant=minbase --include=python3-minimal,python3 "$SUITE" "$rootfs" "$MIRROR" \
        >"$rootfs.log" 2>&1 || { tail -n 20 "$rootfs.log" >&2; rm -f "$rootfs.log"; die "debootstrap failed"; }
    rm -f "$rootfs.log"
    # What a REPL never needs: package caches, documentation, translations.
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* "$rootfs"/usr/share/doc/* \
        "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/usr/share/locale/* "$rootfs"/var/log/*
    say "importing the root filesystem as $base"
    tar -C "$rootfs" --numeric-owner -c . | docker import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change 'CMD ["python3"]' \
        --message "rlm-local base: debootstrap --variant=minbase $SUITE + python3" \
        - "$base" >/dev/null
    rm -rf "$rootfs"
    trap - EXIT
}

# ---- 1. base ----------------------------------------------------------------------------------------------------
if [[ -z "$BASE" ]]; then
    BASE="rlm-local-base:$SUITE"
    if image_exists "$BASE" && [[ "$FORCE_BASE" == 0 ]]; then
        say "base $BASE exists (--force-base rebuilds it)"
    else
        build_base "$BASE"
    fi
elif ! image_exists "$BASE"; then
    say "pulling $BASE"
    docker pull "$BASE" >/dev/null || die "cannot pull $BASE: offline? leave out --base to build a base with debootstrap"
fi
BASE_ID="$(docker image inspect -f '{{ .Id }}' "$BASE")"

# ---- 2. sandbox image -------------------------------------------------------------------------------------------
# The same digest is computed by rlm_local.sandbox_image.source_digest(): the sandbox files in order, sha256.
SANDBOX_FILES=(Dockerfile repl_worker.py rlm_helpers.py seccomp_filter.py)
DIGEST="$(cd "$SANDBOX_DIR" && cat "${SANDBOX_FILES[@]}" | sha256sum | cut -c1-64)"
if [[ "$FORCE" == 0 ]] && image_exists "$IMAGE" \
    && [[ "$(image_label "$IMAGE" rlm-local.source-digest)" == "$DIGEST" ]] \
    && [[ "$(image_label "$IMAGE" rlm-local.base-id)" == "$BASE_ID" ]]; then
    say "$IMAGE is up to date (--force rebuilds it)"
    echo "$IMAGE"
    exit 0
fi
context="$(mktemp -d "${TMPDIR:-/tmp}/rlm-build.XXXXXX")"
# shellcheck disable=SC2064
trap "rm -rf '$context' '$context.log'" EXIT
(cd "$SANDBOX_DIR" && cp "${SANDBOX_FILES[@]}" "$context/")
OLD_ID="$(docker image inspect -f '{{ .Id }}' "$IMAGE" 2>/dev/null || true)"
say "building $IMAGE on $BASE"
docker build --quiet \
    --build-arg "BASE_IMAGE=$BASE" \
    --label "rlm-local.source-digest=$DIGEST" \
    --label "rlm-local.base-id=$BASE_ID" \
    --label "rlm-local.base=$BASE" \
    -t "$IMAGE" "$context" >/dev/null 2>"$context.log" \
    || { cat "$context.log" >&2; rm -f "$context.log"; die "docker build failed"; }
rm -f "$context.log"
if [[ -n "$OLD_ID" && "$OLD_ID" != "$(docker image inspect -f '{{ .Id }}' "$IMAGE")" ]]; then
    docker rmi "$OLD_ID" >/dev/null 2>&1 || true  # the previous build, now untagged (kept if a container uses it)
fi
say "built $IMAGE"
echo "$IMAGE"
