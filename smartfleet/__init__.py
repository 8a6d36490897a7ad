"""Smartfleet contracts: Python generated from proto/ by `make proto`."""
