#!/usr/bin/env bash
# The SPIKE appliance in an nspawn machine on this host (Debian 12, as root).
#
#   sudo scripts/appliance.sh up        build what is missing, boot SPIRE + keepers + Nexus +
#                                       bootstrap, wait for spike.target, store and read a secret
#   sudo scripts/appliance.sh status    live unit states and seal status; exit 0 unsealed,
#                                       4 sealed, 3 unreachable
#   sudo scripts/appliance.sh recover DIR  export the recovery shards (do it once, keep offline)
#   sudo scripts/appliance.sh restore DIR  after a power cut: unseal from those shards
#   sudo scripts/appliance.sh spike ... run the spike CLI inside the machine
#   sudo scripts/appliance.sh shell     a root shell inside the machine
#   sudo scripts/appliance.sh down      stop it (data kept); destroy: stop and delete the data
set -euo pipefail
exec python3 "$(dirname "$0")/../vm-tests/driver/appliance.py" "$@"
