# Python prepended to every scenario script by vm-tests/*.nix. The scenarios call log("...")
# as the nspawn driver (vm-tests/driver) defines it; in the NixOS test driver `log` is the
# logger object, so route the call to its info().
''
  _spike_driver_logger = log


  def log(msg):
      _spike_driver_logger.info(msg)


''
