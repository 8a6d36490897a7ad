"""Account RPCs: the Scheduler API's CRUD (for gateways) and the node link's state exchange."""

from __future__ import annotations

import logging
from collections.abc import Callable

import grpc

from services.common.errors import FailedPrecondition, InvalidArgument
from services.scheduler._accounts import AccountStore
from services.scheduler._convert_accounts import account_to_pb, changes_from_pb, cooldown_from_pb
from services.scheduler._registry import NodeRegistry
from smartfleet.v1 import accounts_pb2, node_pb2

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
    ) -> accounts_pb2.Account:
        given = request.account
        account = await self._accounts.create(
            _required(given.name, "account.name"),
            labels=dict(given.labels),
            proxy=given.proxy,
            sessions_per_hour=given.sessions_per_hour,
            cooldown=cooldown_from_pb(given),
            status=given.status or "active",
            storage_state=request.storage_state,
        )
        return account_to_pb(account)

    async def UpdateAccount(
        self, request: accounts_pb2.UpdateAccountRequest, context: grpc.aio.ServicerContext
    ) -> accounts_pb2.Account:
        name = _required(request.account.name, "account.name")
        changes = changes_from_pb(request)
        account = await self._accounts.update(name, changes)
        if changes.status == "active" or changes.sessions_per_hour is not None:
            # An account may have become available to runs waiting for one.
            self._wake()
        return account_to_pb(account)

    async def GetAccount(
        self, request: accounts_pb2.AccountRef, context: grpc.aio.ServicerContext
    ) -> accounts_pb2.Account:
        return account_to_pb(await self._accounts.get(_required(request.name, "name")))

    async def ListAccounts(
        self, request: accounts_pb2.ListAccountsRequest, context: grpc.aio.ServicerContext
    ) -> accounts_pb2.ListAccountsResponse:
        accounts = await self._accounts.list_accounts()
        return accounts_pb2.ListAccountsResponse(
            accounts=[account_to_pb(account) for account in accounts]
        )

    async def DeleteAccount(
        self, request: accounts_pb2.AccountRef, context: grpc.aio.ServicerContext
    ) -> accounts_pb2.DeleteAccountResponse:
        await self._accounts.delete(_required(request.name, "name"))
        return accounts_pb2.DeleteAccountResponse()


class AccountLinkApi:
    def __init__(self, *, accounts: AccountStore, registry: NodeRegistry) -> None:
        self._accounts = accounts
        self._registry = registry

    def _registered(self, node_id: str) -> str:
        _required(node_id, "node_id")
        if all(node.info.node_id != node_id for node in self._registry.nodes()):
            raise FailedPrecondition(f"node {node_id!r} is not registered; register first")
        return node_id

    async def GetAccountState(
        self, request: node_pb2.AccountStateRequest, context: grpc.aio.ServicerContext
    ) -> node_pb2.AccountState:
        node_id = self._registered(request.node_id)
        name = _required(request.account, "account")
        state, proxy = await self._accounts.storage_state(name)
        # Who read which account's secret, never what it holds.
        logger.info("node %s read the storage state of account %s", node_id, name)
        return node_pb2.AccountState(
            node_id=node_id, account=name, storage_state=state, proxy=proxy
        )

    async def PutAccountState(
        self, request: node_pb2.AccountState, context: grpc.aio.ServicerContext
    ) -> node_pb2.PutAccountStateResponse:
        node_id = self._registered(request.node_id)
        name = _required(request.account, "account")
        if not request.storage_state:
            raise InvalidArgument("storage_state", "is required (the state a session ended with)")
        await self._accounts.put_storage_state(name, request.storage_state)
        logger.info("node %s wrote back the storage state of account %s", node_id, name)
        return node_pb2.PutAccountStateResponse()
