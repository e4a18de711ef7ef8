# NixOS VM test running vm-tests/scenarios/pitfalls.py (see scenario.nix).
import ./scenario.nix "pitfalls"
