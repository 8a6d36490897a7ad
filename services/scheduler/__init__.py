"""The scheduler: owns runs, jobs and nodes; dispatches job envelopes; ingests results."""

from services.scheduler.server import SchedulerService, serve

__all__ = ["SchedulerService", "serve"]
