"""`smartctl`: the Smartfleet command line (talks to the gateway; `up` supervises a local stack)."""
