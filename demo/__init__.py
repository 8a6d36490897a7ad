"""The demo site Smartfleet ships for `make demo` and the tests: a few pages on loopback."""

from demo.site import DemoSite

__all__ = ["DemoSite"]
