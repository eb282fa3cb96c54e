#!/usr/bin/env bash
# Free disk on the runner for four images that exist twice (Docker, then containerd inside the
# kind node) plus DeepFace's official weights in every face-attributes pod (about 1.1 GB each).
# What goes: toolchains this job never uses.
set -euo pipefail

df -h /
sudo rm -rf /usr/share/dotnet /usr/local/lib/android /opt/ghc /usr/local/.ghcup \
  /opt/hostedtoolcache/CodeQL /usr/local/share/boost /usr/local/share/powershell
sudo docker image prune --all --force >/dev/null
df -h /
