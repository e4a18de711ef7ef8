#!/usr/bin/env bash
# Bring up the SPIKE appliance in an nspawn machine (delivered with the appliance issue).
set -euo pipefail
cat >&2 <<'MSG'
appliance.sh: not available yet.
When complete, `sudo scripts/appliance.sh up` will: build the binaries and SPIRE when missing,
debootstrap a cached Debian root, boot SPIRE + keepers + Nexus + bootstrap in a systemd-nspawn
machine, wait for spike.target, store and read a secret with `spike`, and print how to continue.
MSG
exit 2
