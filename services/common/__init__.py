"""Pieces every Smartfleet service shares: config, errors, logging, gRPC bootstrap, NATS bus."""
