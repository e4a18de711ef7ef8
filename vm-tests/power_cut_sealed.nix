# NixOS VM test running vm-tests/scenarios/power_cut_sealed.py (see scenario.nix): the
# machines' sealing mode comes from the script's `# vm-test:` line.
import ./scenario.nix "power_cut_sealed"
