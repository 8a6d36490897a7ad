"""Jobs: the one owner of job rows, their status, every transition and the run counters."""

from services.scheduler.jobs._rules import after_failure
from services.scheduler.jobs._store import JobStore
from services.scheduler.jobs._types import Claim, Job, JobStatus, RetryDue, Stored, job_id

__all__ = ["Claim", "Job", "JobStatus", "JobStore", "RetryDue", "Stored", "after_failure", "job_id"]
