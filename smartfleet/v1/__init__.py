"""Generated from proto/smartfleet/v1 by `make proto`; do not edit."""
