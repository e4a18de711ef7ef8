# NixOS VM test running vm-tests/scenarios/hardening.py (see scenario.nix).
import ./scenario.nix "hardening"
