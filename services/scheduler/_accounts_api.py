"""Account RPCs: the Scheduler API's CRUD (for gateways) and the node link's state exchange."""

from __future__ import annotations

import logging
from collections.abc import Callable

import grpc

from services.common.errors import FailedPrecondition, InvalidArgument, PermissionDenied
from services.scheduler._accounts import AccountStore
from services.scheduler._convert_accounts import (
    account_to_pb,
    changes_from_pb,
    cooldown_from_pb,
    status_from_pb,
)
from services.scheduler._paging import page_by_name
from services.scheduler._registry import NodeRegistry
from services.scheduler.jobs import JobStore
from smartfleet.v1 import accounts_pb2, node_link_pb2

logger = logging.getLogger(__name__)


def _required(value: str, field: str) -> str:
    if not value:
        raise InvalidArgument(field, "is required")
    if len(value) > 128:
        raise InvalidArgument(field, "is longer than 128 characters")
    return value


class AccountsApi:
    def __init__(self, *, accounts: AccountStore, wake: Callable[[], None]) -> None:
        self._accounts = accounts
        # An account that became available may unblock runs waiting for one.
        self._wake = wake

    async def CreateAccount(
        self, request: accounts_pb2.CreateAccountRequest, context: grpc.aio.ServicerContext
    ) -> accounts_pb2.CreateAccountResponse:
        given = request.account
        account = await self._accounts.create(
            _required(given.name, "account.name"),
            labels=dict(given.labels),
            proxy=given.proxy,
            sessions_per_hour=given.sessions_per_hour,
            cooldown=cooldown_from_pb(given),
            status=status_from_pb(given.status),
            storage_state=request.storage_state,
        )
        return accounts_pb2.CreateAccountResponse(account=account_to_pb(account))

    async def UpdateAccount(
        self, request: accounts_pb2.UpdateAccountRequest, context: grpc.aio.ServicerContext
    ) -> accounts_pb2.UpdateAccountResponse:
        name = _required(request.account.name, "account.name")
        changes = changes_from_pb(request)
        account = await self._accounts.update(name, changes)
        if changes.status == "active" or changes.sessions_per_hour is not None:
            # An account may have become available to runs waiting for one.
            self._wake()
        return accounts_pb2.UpdateAccountResponse(account=account_to_pb(account))

    async def GetAccount(
        self, request: accounts_pb2.GetAccountRequest, context: grpc.aio.ServicerContext
    ) -> accounts_pb2.GetAccountResponse:
        account = await self._accounts.get(_required(request.name, "name"))
        return accounts_pb2.GetAccountResponse(account=account_to_pb(account))

    async def ListAccounts(
        self, request: accounts_pb2.ListAccountsRequest, context: grpc.aio.ServicerContext
    ) -> accounts_pb2.ListAccountsResponse:
        page, token = page_by_name(
            await self._accounts.list_accounts(),
            lambda account: account.name,
            listing="accounts",
            page_size=request.page_size,
            page_token=request.page_token,
        )
        return accounts_pb2.ListAccountsResponse(
            accounts=[account_to_pb(account) for account in page], next_page_token=token
        )

    async def DeleteAccount(
        self, request: accounts_pb2.DeleteAccountRequest, context: grpc.aio.ServicerContext
    ) -> accounts_pb2.DeleteAccountResponse:
        await self._accounts.delete(_required(request.name, "name"))
        return accounts_pb2.DeleteAccountResponse()


class AccountLinkApi:
    """Account secrets for nodes, least privilege: a node gets an account's state only for a
    job it runs as that account while the job is out, and every read is logged (node, account,
    job — never what the state holds)."""

    def __init__(self, *, accounts: AccountStore, registry: NodeRegistry, jobs: JobStore) -> None:
        self._accounts = accounts
        self._registry = registry
        self._jobs = jobs

    async def _holding(self, node_id: str, account: str, job_id: str) -> None:
        _required(node_id, "node_id")
        _required(account, "account")
        _required(job_id, "job_id")
        if all(node.info.node_id != node_id for node in self._registry.nodes()):
            raise FailedPrecondition(f"node {node_id!r} is not registered; register first")
        if not await self._jobs.dispatched_as(job_id, account):
            raise PermissionDenied(
                f"job {job_id!r} is not out running as account {account!r}; "
                "account state is handed out only for such a job"
            )

    async def GetAccountState(
        self, request: node_link_pb2.GetAccountStateRequest, context: grpc.aio.ServicerContext
    ) -> node_link_pb2.GetAccountStateResponse:
        await self._holding(request.node_id, request.account, request.job_id)
        state, proxy = await self._accounts.storage_state(request.account)
        # Who read which account's secret for which job, never what it holds.
        logger.info(
            "node %s read the storage state of account %s for job %s",
            request.node_id,
            request.account,
            request.job_id,
            extra={"node_id": request.node_id, "job_id": request.job_id},
        )
        return node_link_pb2.GetAccountStateResponse(
            account=request.account, storage_state=state, proxy=proxy
        )

    async def PutAccountState(
        self, request: node_link_pb2.PutAccountStateRequest, context: grpc.aio.ServicerContext
    ) -> node_link_pb2.PutAccountStateResponse:
        await self._holding(request.node_id, request.account, request.job_id)
        if not request.storage_state:
            raise InvalidArgument("storage_state", "is required (the state a session ended with)")
        await self._accounts.put_storage_state(request.account, request.storage_state)
        logger.info(
            "node %s wrote back the storage state of account %s for job %s",
            request.node_id,
            request.account,
            request.job_id,
            extra={"node_id": request.node_id, "job_id": request.job_id},
        )
        return node_link_pb2.PutAccountStateResponse()
