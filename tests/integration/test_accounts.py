"""Accounts over the real Scheduler API and node link, on SQLite and PostgreSQL, with real NATS."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import nats
import pytest
from cryptography.fernet import Fernet
from google.protobuf.duration_pb2 import Duration
from google.protobuf.field_mask_pb2 import FieldMask
from nats.errors import TimeoutError as NatsTimeout
from sqlalchemy import text
from sqlalchemy.engine import make_url

from services.common import bus
from services.common.config import SchedulerSettings
from services.common.contracts import envelope_from_bytes, result_to_pb
from services.common.nats_server import EmbeddedNatsServer
from services.common.spec import AccountSelector
from services.common.types import ErrorClass, Outcome
from services.scheduler import SchedulerService
from smartfleet.v1 import (
    accounts_pb2,
    fleet_service_pb2_grpc,
    node_link_pb2,
    node_link_pb2_grpc,
    runs_pb2,
)
from tests.integration.test_scheduler import channel, database_url, ok_result, register

__all__ = ["channel", "database_url"]  # fixtures used here
pytestmark = pytest.mark.timeout(60)

COOKIE_VALUE = "s3cr3t-session-cookie-4f1c9a"
STATE = json.dumps(
    {
        "cookies": [
            {
                "name": "sid",
                "value": COOKIE_VALUE,
                "domain": "127.0.0.1",
                "path": "/",
                "expires": -1,
                "httpOnly": True,
                "secure": False,
                "sameSite": "Lax",
            }
        ],
        "origins": [{"origin": "http://127.0.0.1", "localStorage": [{"name": "k", "value": "v"}]}],
    }
).encode()


@pytest.fixture
async def scheduler(
    nats_server: EmbeddedNatsServer, database_url: str
) -> AsyncIterator[SchedulerService]:
    """SQLite keeps its generated key file; PostgreSQL gets SMARTFLEET_SECRET_KEY."""
    sqlite = database_url.startswith("sqlite")
    settings = SchedulerSettings(
        scheduler_listen="127.0.0.1:0",
        database_url=database_url,
        database_upgrade=True,
        nats_url=nats_server.url,
        heartbeat_interval=timedelta(milliseconds=200),
        secret_key=None if sqlite else Fernet.generate_key().decode(),
    )
    service = SchedulerService(settings)
    await service.start()
    try:
        yield service
    finally:
        await service.stop(grace=timedelta(seconds=0.5))


def account(name: str, **fields: object) -> accounts_pb2.Account:
    return accounts_pb2.Account(name=name, **fields)  # type: ignore[arg-type]


async def create(
    api: fleet_service_pb2_grpc.FleetServiceStub, name: str, *, state: bytes = b"", **fields: object
) -> accounts_pb2.Account:
    request = accounts_pb2.CreateAccountRequest(
        account=account(name, **fields), storage_state=state
    )
    return (await api.CreateAccount(request, timeout=5)).account


async def test_account_crud_over_the_api(channel: grpc.aio.Channel) -> None:
    """Create, get, list, update with and without a mask, delete; duplicates are refused."""
    api = fleet_service_pb2_grpc.FleetServiceStub(channel)
    created = await create(
        api,
        "shop-user-1",
        state=STATE,
        labels={"pool": "shop", "tier": "gold"},
        proxy="http://proxy.internal:3128",
        sessions_per_hour=30,
    )
    assert created.status == accounts_pb2.ACCOUNT_STATUS_ACTIVE and created.has_storage_state
    assert created.cooldown.ToTimedelta() == timedelta(minutes=15)
    assert dict(created.labels) == {"pool": "shop", "tier": "gold"}
    await create(api, "shop-user-2")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await create(api, "shop-user-1")
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS

    listed = await api.ListAccounts(accounts_pb2.ListAccountsRequest(), timeout=5)
    assert [a.name for a in listed.accounts] == ["shop-user-1", "shop-user-2"]
    assert not listed.accounts[1].has_storage_state

    # A mask changes exactly what it names, clearing the proxy and the labels.
    masked = (
        await api.UpdateAccount(
            accounts_pb2.UpdateAccountRequest(
                account=account(
                    "shop-user-1", status=accounts_pb2.ACCOUNT_STATUS_DISABLED, sessions_per_hour=99
                ),
                update_mask=FieldMask(paths=["proxy", "labels", "status"]),
            ),
            timeout=5,
        )
    ).account
    assert (masked.proxy, dict(masked.labels), masked.status) == (
        "",
        {},
        accounts_pb2.ACCOUNT_STATUS_DISABLED,
    )
    assert masked.sessions_per_hour == 30 and masked.has_storage_state
    # Without a mask, every field given changes.
    unmasked = (
        await api.UpdateAccount(
            accounts_pb2.UpdateAccountRequest(
                account=account("shop-user-1", cooldown=Duration(seconds=60), labels={"a": "b"})
            ),
            timeout=5,
        )
    ).account
    assert unmasked.cooldown.seconds == 60 and dict(unmasked.labels) == {"a": "b"}
    assert unmasked.status == accounts_pb2.ACCOUNT_STATUS_DISABLED
    cleared = (
        await api.UpdateAccount(
            accounts_pb2.UpdateAccountRequest(
                account=account("shop-user-1"), update_mask=FieldMask(paths=["storage_state"])
            ),
            timeout=5,
        )
    ).account
    assert not cleared.has_storage_state

    await api.DeleteAccount(accounts_pb2.DeleteAccountRequest(name="shop-user-1"), timeout=5)
    calls = (
        (api.GetAccount, accounts_pb2.GetAccountRequest),
        (api.DeleteAccount, accounts_pb2.DeleteAccountRequest),
    )
    for call, request in calls:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call(request(name="shop-user-1"), timeout=5)  # type: ignore[operator]
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def dispatched_job(api: fleet_service_pb2_grpc.FleetServiceStub, account: str) -> str:
    """Start a one-session run as `account` and wait for its job to be out on the bus."""
    spec = runs_pb2.RunSpec(
        targets=["http://127.0.0.1:9/"],
        sessions=1,
        accounts=runs_pb2.AccountSelector(names=[account]),
    )
    run = (await api.CreateRun(runs_pb2.CreateRunRequest(spec=spec, start=True), timeout=5)).run
    for _ in range(200):
        jobs = (await api.ListJobs(runs_pb2.ListJobsRequest(run_id=run.id), timeout=5)).jobs
        if jobs:
            return jobs[0].id
        await asyncio.sleep(0.05)
    raise AssertionError("the run's job was never dispatched")


async def test_a_node_reads_an_account_only_for_a_job_it_runs_as_it(
    scheduler: SchedulerService, channel: grpc.aio.Channel
) -> None:
    """Account state goes out only for a dispatched job of that account: another account's
    name, an unknown job or a finished job is PERMISSION_DENIED."""
    api = fleet_service_pb2_grpc.FleetServiceStub(channel)
    link = node_link_pb2_grpc.NodeLinkServiceStub(channel)
    await create(api, "mine", state=STATE)
    await create(api, "theirs", state=STATE)
    await register(link, slots=1)
    job_id = await dispatched_job(api, "mine")
    ok = node_link_pb2.GetAccountStateRequest(node_id="peer", account="mine", job_id=job_id)
    assert (await link.GetAccountState(ok, timeout=5)).storage_state == STATE
    for account, job in (("theirs", job_id), ("mine", "no-such-job")):
        request = node_link_pb2.GetAccountStateRequest(node_id="peer", account=account, job_id=job)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await link.GetAccountState(request, timeout=5)
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED, (account, job)
    await api.CancelRun(runs_pb2.CancelRunRequest(run_id=job_id.rsplit("-", 1)[0]), timeout=5)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await link.GetAccountState(ok, timeout=5)
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_storage_state_is_encrypted_at_rest_and_nodes_read_it(
    scheduler: SchedulerService, channel: grpc.aio.Channel
) -> None:
    """The cookie is nowhere in the table (or SQLite file) in plaintext; the node link decrypts it."""
    api = fleet_service_pb2_grpc.FleetServiceStub(channel)
    link = node_link_pb2_grpc.NodeLinkServiceStub(channel)
    created = await create(api, "acct", state=STATE, proxy="socks5://127.0.0.1:1080")
    assert COOKIE_VALUE.encode() not in created.SerializeToString()

    async with scheduler.db.read() as session:
        raw = await session.scalar(text("SELECT storage_state FROM accounts WHERE name = 'acct'"))
    assert raw and COOKIE_VALUE.encode() not in bytes(raw)
    assert bytes(raw).startswith(b"gAAAAA")  # a Fernet token
    if scheduler.db.dialect == "sqlite":
        database = Path(make_url(scheduler.settings.database_url).database or "")
        for path in (database, database.with_name(database.name + "-wal")):
            if path.exists():
                assert COOKIE_VALUE.encode() not in path.read_bytes()
        key_file = database.with_name(database.name + ".key")
        assert key_file.exists() and key_file.stat().st_mode & 0o077 == 0

    request = node_link_pb2.GetAccountStateRequest(node_id="peer", account="acct", job_id="x-0")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await link.GetAccountState(request, timeout=5)
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION  # not registered
    await register(link, slots=1)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await link.GetAccountState(request, timeout=5)
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED  # no job runs as acct
    job_id = await dispatched_job(api, "acct")
    request = node_link_pb2.GetAccountStateRequest(node_id="peer", account="acct", job_id=job_id)
    state = await link.GetAccountState(request, timeout=5)
    assert state.storage_state == STATE and state.proxy == "socks5://127.0.0.1:1080"

    # A proxy password is a secret too: masked by the API, whole for nodes, kept across an
    # update that sends the masked form back.
    proxy = "http://egress:pr0xy-pa55@127.0.0.1:3128"
    shown = (
        await api.UpdateAccount(
            accounts_pb2.UpdateAccountRequest(
                account=account("acct", proxy=proxy), update_mask=FieldMask(paths=["proxy"])
            ),
            timeout=5,
        )
    ).account
    assert shown.proxy == "http://egress:***@127.0.0.1:3128"
    await api.UpdateAccount(
        accounts_pb2.UpdateAccountRequest(
            account=account("acct", proxy=shown.proxy, sessions_per_hour=5)
        ),
        timeout=5,
    )
    assert (await link.GetAccountState(request, timeout=5)).proxy == proxy
    async with scheduler.db.read() as session:
        row = (await session.execute(text("SELECT * FROM accounts WHERE name = 'acct'"))).one()
    assert all(b"pr0xy-pa55" not in str(column).encode() for column in row)

    written = json.dumps({"cookies": [], "origins": []}).encode()
    await link.PutAccountState(
        node_link_pb2.PutAccountStateRequest(
            node_id="peer", account="acct", job_id=job_id, storage_state=written
        ),
        timeout=5,
    )
    assert (await link.GetAccountState(request, timeout=5)).storage_state == written


async def test_round_robin_over_three_accounts(
    scheduler: SchedulerService, channel: grpc.aio.Channel
) -> None:
    """Assignment cycles through the matching accounts in turn, by labels and by names."""
    api = fleet_service_pb2_grpc.FleetServiceStub(channel)
    for name in ("a1", "a2", "a3"):
        await create(api, name, labels={"pool": "shop"})
    await create(api, "other", labels={"pool": "news"})
    await create(api, "off", labels={"pool": "shop"}, status=accounts_pb2.ACCOUNT_STATUS_DISABLED)
    now = datetime.now(UTC)
    by_labels = AccountSelector(labels={"pool": "shop"})
    picked = [await scheduler.accounts.assign(by_labels, now=now) for _ in range(7)]
    assert picked == ["a1", "a2", "a3", "a1", "a2", "a3", "a1"]
    by_names = AccountSelector(names=["a3", "other"])
    picked = [await scheduler.accounts.assign(by_names, now=now) for _ in range(3)]
    assert picked == ["other", "a3", "other"]


async def test_sessions_per_hour_is_respected_across_a_restart(
    scheduler: SchedulerService, channel: grpc.aio.Channel
) -> None:
    """An account with 2 sessions an hour gets 2, then none until the hour has passed."""
    api = fleet_service_pb2_grpc.FleetServiceStub(channel)
    await create(api, "slow", labels={"pool": "p"}, sessions_per_hour=2)
    selector = AccountSelector(labels={"pool": "p"})
    now = datetime.now(UTC)
    assert await scheduler.accounts.assign(selector, now=now) == "slow"
    assert await scheduler.accounts.assign(selector, now=now + timedelta(minutes=10)) == "slow"
    assert await scheduler.accounts.assign(selector, now=now + timedelta(minutes=20)) is None
    # A new store on the same database (a restarted scheduler) still counts them.
    from services.scheduler._accounts import AccountStore
    from services.scheduler._secrets import SecretBox

    restarted = AccountStore(
        scheduler.db, SecretBox(key=None, database_url=scheduler.settings.database_url)
    )
    assert await restarted.assign(selector, now=now + timedelta(minutes=30)) is None
    later = now + timedelta(minutes=61)
    assert await restarted.assign(selector, now=later) == "slow"
    assert await restarted.assign(selector, now=later) is None


async def test_cooldown_skips_the_account_until_it_ends(
    scheduler: SchedulerService, channel: grpc.aio.Channel
) -> None:
    """After an account failure the account is cooling, skipped, then back; --enable ends it."""
    api = fleet_service_pb2_grpc.FleetServiceStub(channel)
    await create(api, "c1", labels={"pool": "c"}, cooldown=Duration(seconds=300))
    await create(api, "c2", labels={"pool": "c"})
    selector = AccountSelector(labels={"pool": "c"})
    now = datetime.now(UTC)
    await scheduler.accounts.cool_down("c1", now=now)
    cooling = (await api.GetAccount(accounts_pb2.GetAccountRequest(name="c1"), timeout=5)).account
    assert cooling.status == accounts_pb2.ACCOUNT_STATUS_COOLING
    assert cooling.cooldown_until.ToDatetime(tzinfo=UTC) == now + timedelta(seconds=300)
    picked = [await scheduler.accounts.assign(selector, now=now) for _ in range(3)]
    assert picked == ["c2", "c2", "c2"]
    assert await scheduler.accounts.assign(selector, now=now + timedelta(seconds=301)) == "c1"
    await scheduler.accounts.cool_down("c1", now=now)
    enabled = (
        await api.UpdateAccount(
            accounts_pb2.UpdateAccountRequest(
                account=account("c1", status=accounts_pb2.ACCOUNT_STATUS_ACTIVE),
                update_mask=FieldMask(paths=["status"]),
            ),
            timeout=5,
        )
    ).account
    assert enabled.status == accounts_pb2.ACCOUNT_STATUS_ACTIVE and not enabled.HasField(
        "cooldown_until"
    )


async def test_dispatched_jobs_carry_accounts_and_failures_cool_them(
    channel: grpc.aio.Channel, nats_server: EmbeddedNatsServer
) -> None:
    """Envelopes name the selected accounts in turn; an account-class failure cools one down."""
    api = fleet_service_pb2_grpc.FleetServiceStub(channel)
    link = node_link_pb2_grpc.NodeLinkServiceStub(channel)
    for name in ("u1", "u2"):
        await create(api, name, labels={"pool": "login"})
    await register(link, slots=4)
    spec = runs_pb2.RunSpec(
        targets=["http://127.0.0.1:9/"],
        sessions=4,
        accounts=runs_pb2.AccountSelector(labels={"pool": "login"}),
    )
    await api.CreateRun(runs_pb2.CreateRunRequest(spec=spec, start=True), timeout=5)
    nc = await nats.connect(nats_server.url)
    envelopes: list[bytes] = []
    try:
        psub = await nc.jetstream().pull_subscribe_bind(
            bus.pool_consumer("chromium"), stream=bus.STREAM
        )
        while len(envelopes) < 4:
            try:
                messages = await psub.fetch(batch=4, timeout=2)
            except NatsTimeout:
                continue
            envelopes += [m.data for m in messages]
            for message in messages:
                await message.ack()
    finally:
        await nc.close()
    assert sorted(envelope_from_bytes(e).account for e in envelopes) == ["u1", "u1", "u2", "u2"]
    failed = next(e for e in envelopes if envelope_from_bytes(e).account == "u1")
    result = replace(
        ok_result(failed), outcome=Outcome.HTTP_ERROR, error_class=ErrorClass.ACCOUNT, account="u1"
    )
    await link.ReportResults(
        node_link_pb2.ReportResultsRequest(node_id="peer", results=[result_to_pb(result)]),
        timeout=5,
    )
    cooled = (await api.GetAccount(accounts_pb2.GetAccountRequest(name="u1"), timeout=5)).account
    assert cooled.status == accounts_pb2.ACCOUNT_STATUS_COOLING


async def test_bad_inputs_are_invalid_argument_naming_the_field(
    channel: grpc.aio.Channel,
) -> None:
    """Names, labels, proxies, limits, status, storage state and masks are checked."""
    api = fleet_service_pb2_grpc.FleetServiceStub(channel)
    await create(api, "ok")
    creates: list[tuple[str, dict[str, object], bytes]] = [
        ("account.name", {"name": "bad name!"}, b""),
        ("account.name", {"name": ""}, b""),
        ("account.labels", {"labels": {"bad key!": "v"}}, b""),
        ("account.proxy", {"proxy": "ftp://proxy:21"}, b""),
        ("account.proxy", {"proxy": "http://user:pw@proxy:3128/path"}, b""),
        ("account.sessions_per_hour", {"sessions_per_hour": -1}, b""),
        ("account.cooldown", {"cooldown": Duration(seconds=-5)}, b""),
        ("account.status", {"status": accounts_pb2.ACCOUNT_STATUS_COOLING}, b""),
        ("storage_state", {}, b"not json"),
        ("storage_state", {}, b"[1, 2]"),
        ("storage_state.cookies[0].value", {}, b'{"cookies": [{"name": "a", "value": 1}]}'),
        ("storage_state.extra", {}, b'{"cookies": [], "extra": 1}'),
        ("storage_state", {}, b'{"cookies": [], "origins": []}' + b" " * (1024 * 1024)),
    ]
    for field, fields, state in creates:
        given = {"name": "fresh", **fields}
        request = accounts_pb2.CreateAccountRequest(
            account=accounts_pb2.Account(**given),  # type: ignore[arg-type]
            storage_state=state,
        )
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await api.CreateAccount(request, timeout=5)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, field
        assert (caught.value.details() or "").startswith(field), (field, caught.value.details())
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await api.UpdateAccount(
            accounts_pb2.UpdateAccountRequest(
                account=account("ok"), update_mask=FieldMask(paths=["name"])
            ),
            timeout=5,
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (caught.value.details() or "").startswith("update_mask")
    listed = await api.ListAccounts(accounts_pb2.ListAccountsRequest(), timeout=5)
    assert [a.name for a in listed.accounts] == ["ok"]
