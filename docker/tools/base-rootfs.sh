#!/usr/bin/env bash
# Build a stand-in for the Dockerfiles' Python base image without a registry or a Docker engine.
#
#   docker/tools/base-rootfs.sh CACHE_DIR
#
# Writes CACHE_DIR/base-rootfs.tar once per machine: a `debootstrap --variant=minbase bookworm`
# root filesystem with Debian's python3 (3.11), pip and venv. It is made to look like
# python:3.11-slim-bookworm where the Dockerfiles depend on it: `python`, `python3` and `pip`
# on PATH, CA certificates installed, a UTF-8 locale in the environment (set on import).
# Nothing here is needed by the Dockerfiles on a real build; only images-test uses it.
set -euo pipefail

cache=${1:?usage: base-rootfs.sh CACHE_DIR}
tar_out="$cache/base-rootfs.tar"
[ -s "$tar_out" ] && { echo "base rootfs: cached at $tar_out"; exit 0; }

# Use the mirror this machine's apt already uses (deb.debian.org unless configured otherwise).
mirror=${DEBOOTSTRAP_MIRROR:-}
if [ -z "$mirror" ]; then
  mirror=$(grep -hoE '(URIs:|deb) +https?://[^ ]+/debian/?( |$)' /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null \
             | awk '{print $2}' | head -n1 || true)
  mirror=${mirror:-http://deb.debian.org/debian}
fi

mkdir -p "$cache"
work=$(mktemp -d "$cache/rootfs.XXXXXX")
trap 'rm -rf "$work"' EXIT
root="$work/root"
echo "base rootfs: debootstrap bookworm from $mirror"
debootstrap --variant=minbase \
  --include=python3,python3-pip,python3-venv,python-is-python3,ca-certificates \
  bookworm "$root" "$mirror" >"$work/debootstrap.log" 2>&1 || { tail -n 40 "$work/debootstrap.log"; exit 1; }

# python:3.11-slim has `pip` on PATH as well as `python`.
[ -e "$root/usr/bin/pip" ] || ln -s pip3 "$root/usr/bin/pip"
# Keep it small, like the slim image: no apt lists, no downloaded .debs, no docs.
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb \
       "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/var/log/*.log
# Device nodes and mount points are supplied by the runtime.
rm -rf "${root:?}"/dev/* "${root:?}"/proc/* "${root:?}"/sys/*
chroot "$root" python --version
chroot "$root" python -m venv --help >/dev/null

tar -C "$root" --numeric-owner -cf "$tar_out.tmp" .
mv "$tar_out.tmp" "$tar_out"
echo "base rootfs: $(du -h "$tar_out" | cut -f1) at $tar_out"
