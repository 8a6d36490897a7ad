"""Fleet API calls for accounts (a FleetClient with the account RPCs)."""

from __future__ import annotations

import typer
from google.protobuf.field_mask_pb2 import FieldMask

from cli._client import FleetClient
from cli._context import connection_for
from smartfleet.v1 import accounts_pb2


class AccountsClient(FleetClient):
    def __enter__(self) -> AccountsClient:
        return self

    def create_account(
        self, account: accounts_pb2.Account, *, storage_state: bytes = b""
    ) -> accounts_pb2.Account:
        request = accounts_pb2.CreateAccountRequest(account=account, storage_state=storage_state)
        return self._unary(self._stub.CreateAccount, request).account

    def update_account(
        self, account: accounts_pb2.Account, *, paths: list[str], storage_state: bytes = b""
    ) -> accounts_pb2.Account:
        request = accounts_pb2.UpdateAccountRequest(
            account=account, storage_state=storage_state, update_mask=FieldMask(paths=paths)
        )
        return self._unary(self._stub.UpdateAccount, request).account

    def get_account(self, name: str) -> accounts_pb2.Account:
        request = accounts_pb2.GetAccountRequest(name=name)
        return self._unary(self._stub.GetAccount, request).account

    def list_accounts(self) -> list[accounts_pb2.Account]:
        response = self._unary(self._stub.ListAccounts, accounts_pb2.ListAccountsRequest())
        return list(response.accounts)

    def delete_account(self, name: str) -> None:
        self._unary(self._stub.DeleteAccount, accounts_pb2.DeleteAccountRequest(name=name))


def open_accounts_client(ctx: typer.Context) -> AccountsClient:
    return AccountsClient(connection_for(ctx))
