# NixOS VM test running vm-tests/scenarios/restarts.py (see scenario.nix).
import ./scenario.nix "restarts"
