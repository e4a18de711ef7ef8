# NixOS VM test running vm-tests/scenarios/fresh_boot.py (see scenario.nix).
import ./scenario.nix "fresh_boot"
