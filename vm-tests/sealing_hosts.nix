# NixOS VM test running vm-tests/scenarios/sealing_hosts.py (see scenario.nix): the
# machines' sealing mode comes from the script's `# vm-test:` line.
import ./scenario.nix "sealing_hosts"
