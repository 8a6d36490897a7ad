"""Smartfleet services: scheduler, browser node, gateway, and what they share."""

__version__ = "0.1.0"
