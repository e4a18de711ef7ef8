# NixOS VM test running vm-tests/scenarios/power_cut.py (see scenario.nix).
import ./scenario.nix "power_cut"
