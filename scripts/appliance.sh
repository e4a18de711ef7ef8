#!/usr/bin/env bash
# The SPIKE appliance in an nspawn machine on this host (Debian 12, as root).
#
#   sudo scripts/appliance.sh up        build what is missing, boot SPIRE + keepers + Nexus +
#                                       bootstrap, wait for spike.target, store and read a secret
#   sudo scripts/appliance.sh status    unit states, seal status, and what is missing
#   sudo scripts/appliance.sh spike ... run the spike CLI inside the machine
#   sudo scripts/appliance.sh shell     a root shell inside the machine
#   sudo scripts/appliance.sh down      stop it (data kept); destroy: stop and delete the data
set -euo pipefail
exec python3 "$(dirname "$0")/../vm-tests/driver/appliance.py" "$@"
