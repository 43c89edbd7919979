#!/usr/bin/env python3
"""Black-box compatibility check: drive Haken with the OFFICIAL Okta Python SDK.

Reads HAKEN_URL (e.g. http://127.0.0.1:41234) and HAKEN_TOKEN (an API token)
from the environment, runs named checks against /api/v1/users, /api/v1/groups
and /api/v1/logs through `okta` (pinned in requirements.txt), prints one line
per check (`ok   <name>` / `FAIL <name>: <reason>`) and ends with the line
`N passed, N failed`. Exit status 0 only if nothing failed.

Optional environment:
  HAKEN_SDK_TIMEOUT        overall wall-clock limit in seconds (default 300)
  HAKEN_SDK_CALL_TIMEOUT   limit for one SDK call in seconds (default 20)
  HAKEN_SDK_MAX_RETRIES    SDK retries on 429/503/504 (default 1)
  HAKEN_SDK_LOG_WAIT       seconds to wait for System Log events (default 15)
  HAKEN_SDK_VERBOSE=1      print tracebacks of unexpected exceptions to stderr

See README.md next to this file for what the SDK requires of the server.
"""

import asyncio
import datetime as dt
import json
import os
import signal
import socket
import sys
import time
import traceback
import uuid
from enum import Enum
from urllib.parse import urlparse

OVERALL_TIMEOUT = float(os.environ.get("HAKEN_SDK_TIMEOUT", "300"))
CALL_TIMEOUT = float(os.environ.get("HAKEN_SDK_CALL_TIMEOUT", "20"))
MAX_RETRIES = int(os.environ.get("HAKEN_SDK_MAX_RETRIES", "1"))
LOG_WAIT = float(os.environ.get("HAKEN_SDK_LOG_WAIT", "15"))
VERBOSE = os.environ.get("HAKEN_SDK_VERBOSE") == "1"

# Error codes accepted for an illegal lifecycle transition.  Okta documents
# E0000001 (400, "Api validation failed") for suspend/unsuspend and uses
# E0000038 (403, "not allowed in the user's current status") and E0000016
# (403, "already active") for others.
ILLEGAL_TRANSITION_CODES = {"E0000001", "E0000038", "E0000016"}

RESULTS = []  # (name, ok, reason)
_SUMMARY_PRINTED = False


# --------------------------------------------------------------------------
# output
# --------------------------------------------------------------------------

def _one_line(text, limit=400):
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def record(name, ok, reason=""):
    RESULTS.append((name, ok, reason))
    if ok:
        print(f"ok   {name}", flush=True)
    else:
        print(f"FAIL {name}: {_one_line(reason)}", flush=True)


def print_summary():
    global _SUMMARY_PRINTED
    if _SUMMARY_PRINTED:
        return
    _SUMMARY_PRINTED = True
    passed = sum(1 for _, ok, _ in RESULTS if ok)
    failed = sum(1 for _, ok, _ in RESULTS if not ok)
    print(f"{passed} passed, {failed} failed", flush=True)


def exit_code():
    failed = sum(1 for _, ok, _ in RESULTS if not ok)
    return 0 if failed == 0 and RESULTS else 1


class CheckFailed(Exception):
    pass


def fail(msg):
    raise CheckFailed(msg)


def require(cond, msg):
    if not cond:
        raise CheckFailed(msg)


# --------------------------------------------------------------------------
# environment / SDK set-up
# --------------------------------------------------------------------------

HAKEN_URL = os.environ.get("HAKEN_URL", "").strip().rstrip("/")
HAKEN_TOKEN = os.environ.get("HAKEN_TOKEN", "").strip()


def prepare_environment():
    """Make the SDK's own configuration sources harmless for a loopback run."""
    # The SDK merges OKTA_CLIENT_* variables and ~/.okta/okta.yaml / ./okta.yaml
    # into its configuration; our explicit dict wins for the keys we set, but a
    # stray proxy or cache setting would not be overridden.  Drop them.
    for key in list(os.environ):
        if key.startswith("OKTA_CLIENT_"):
            del os.environ[key]
    # HTTPClient._setup_proxy() sends every request through $HTTP_PROXY /
    # $HTTPS_PROXY when no proxy is configured, ignoring NO_PROXY.  Loopback
    # traffic must not go through a proxy.
    for key in ("HTTP_PROXY", "HTTPS_PROXY"):
        os.environ.pop(key, None)
    # okta 3.x: ConfigValidator rejects a non-https orgUrl unless the TOP-LEVEL
    # config key testing.testingDisableHttpsCheck is truthy.  Client(user_config)
    # nests everything it is given under "client", so passing
    # {"testing": {...}} in the dict has no effect; the only ways in are this
    # environment variable or an okta.yaml.  (Any non-empty string is truthy.)
    if HAKEN_URL.lower().startswith("http://"):
        os.environ["OKTA_TESTING_TESTINGDISABLEHTTPSCHECK"] = "true"


def sdk_config(token):
    return {
        "orgUrl": HAKEN_URL,
        "token": token,
        "authorizationMode": "SSWS",
        # aiohttp total timeout per request, in seconds (0 = none).
        "requestTimeout": int(max(1, CALL_TIMEOUT - 2)),
        # Retries on 429/503/504; each retry sleeps X-Rate-Limit-Reset - Date + 1 s.
        "rateLimit": {"maxRetries": MAX_RETRIES},
        # The SDK cache (off by default) would serve stale GETs after DELETE.
        "cache": {"enabled": False},
        "logging": {"enabled": False},
    }


# --------------------------------------------------------------------------
# SDK call helpers
# --------------------------------------------------------------------------

def sv(value):
    """Enum -> its value (UserStatus.ACTIVE -> 'ACTIVE')."""
    return value.value if isinstance(value, Enum) else value


class Outcome:
    def __init__(self, data, resp, err):
        self.data, self.resp, self.err = data, resp, err

    @property
    def status(self):
        if self.err is not None and getattr(self.err, "status", None) is not None:
            return self.err.status
        return getattr(self.resp, "status_code", None) or getattr(self.resp, "status", None)

    @property
    def headers(self):
        return getattr(self.resp, "headers", None) or {}


def describe_err(err):
    code = getattr(err, "error_code", None)
    if code is not None:
        return (f"HTTP {getattr(err, 'status', '?')} {code} "
                f"{getattr(err, 'error_summary', '')}").strip()
    return f"{type(err).__name__}: {err}"


async def call(what, coro):
    """Await one SDK call and normalise its return value.

    okta 3.x returns (data, ApiResponse, None) on success and
    (None, aiohttp response, error) on error -- except operations whose return
    type is `Success` or None (lifecycle ops, delete_user, assign/unassign,
    delete_group), which return a 2-tuple (aiohttp response, error) on error.
    Response bodies that do not fit the SDK's pydantic models make the call
    RAISE (pydantic.ValidationError); so does an empty body labelled
    application/json (json.JSONDecodeError).
    """
    try:
        res = await asyncio.wait_for(coro, CALL_TIMEOUT)
    except asyncio.TimeoutError:
        fail(f"{what}: no answer within {CALL_TIMEOUT:g}s")
    except json.JSONDecodeError as e:
        fail(f"{what}: SDK raised JSONDecodeError ({e}); an empty or non-JSON body "
             "was sent with Content-Type: application/json")
    except Exception as e:  # noqa: BLE001
        if VERBOSE:
            traceback.print_exc()
        name = type(e).__name__
        hint = ""
        if name == "ValidationError":
            hint = " (response JSON does not fit the SDK's pydantic model)"
        elif name == "AttributeError" and "status" in str(e):
            hint = (" (the SDK hides transport failures this way: connection refused/"
                    "reset, or the request timed out)")
        fail(f"{what}: SDK raised {name}{hint}: {_one_line(e, 300)}")
    if isinstance(res, tuple) and len(res) == 3:
        return Outcome(*res)
    if isinstance(res, tuple) and len(res) == 2:
        return Outcome(None, res[0], res[1])
    fail(f"{what}: unexpected SDK return value {res!r:.200}")


async def ok_call(what, coro):
    out = await call(what, coro)
    if out.err is not None:
        fail(f"{what}: {describe_err(out.err)}")
    return out


async def err_call(what, coro, codes, statuses=None):
    out = await call(what, coro)
    if out.err is None:
        fail(f"{what}: expected an error {sorted(codes)} but the call succeeded "
             f"(HTTP {out.status})")
    code = getattr(out.err, "error_code", None)
    if code is None:
        fail(f"{what}: expected an Okta error object with errorCode {sorted(codes)}, "
             f"SDK got {describe_err(out.err)} (body must be JSON with "
             "Content-Type application/json and an 'errorCode' field; errorCauses "
             "must be a list of objects)")
    if code not in codes:
        fail(f"{what}: expected errorCode in {sorted(codes)}, got {describe_err(out.err)}")
    if statuses and out.err.status not in statuses:
        fail(f"{what}: errorCode {code} came with HTTP {out.err.status}, "
             f"expected {sorted(statuses)}")
    if not getattr(out.err, "error_summary", ""):
        fail(f"{what}: error object has no errorSummary")
    return out


async def sdk_pages(what, method, limit, max_pages=200, **kwargs):
    """Page through a list call with the SDK's own okta.pagination helper.

    okta 3.x follows pages by extracting the `after` query parameter from the
    rel="next" Link header (okta.pagination.PaginationHelper) and calling the
    list method again with after=<cursor> plus the original parameters.
    paginate_pages() stops silently on errors, so errors are captured here.
    """
    from okta.pagination import paginate_pages

    errors = []

    async def wrapped(**kw):
        out = await call(f"{what} (after={kw.get('after')})", method(**kw))
        if out.err is not None:
            errors.append(out.err)
        return out.data, out.resp, out.err

    pages = []
    async for data, _n, _more in paginate_pages(wrapped, limit=limit,
                                                max_pages=max_pages, **kwargs):
        pages.append(list(data))
    if errors:
        fail(f"{what}: page {len(pages) + 1}: {describe_err(errors[0])}")
    return pages


async def raw_link_headers(path):
    """Diagnostics only: fetch `path` without the SDK and return its Link headers."""
    import aiohttp

    try:
        async with aiohttp.ClientSession() as s:
            async with s.get(HAKEN_URL + path, timeout=aiohttp.ClientTimeout(total=5),
                             headers={"Authorization": f"SSWS {HAKEN_TOKEN}",
                                      "Accept": "application/json"}) as r:
                return r.headers.getall("link", [])
    except Exception as e:  # noqa: BLE001
        return [f"<raw fetch failed: {e}>"]


def aware(value):
    return isinstance(value, dt.datetime) and value.tzinfo is not None


def rfc3339(t):
    return t.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + \
        f"{t.microsecond // 1000:03d}Z"


# --------------------------------------------------------------------------
# the checks
# --------------------------------------------------------------------------

class Run:
    def __init__(self, client):
        self.c = client
        self.rid = uuid.uuid4().hex[:8]
        self.started = dt.datetime.now(dt.timezone.utc)
        self.s = {}            # state shared between checks
        self.to_cleanup_users = []
        self.to_cleanup_groups = []

    async def check(self, name, fn, needs=()):
        missing = [n for n in needs if not self.s.get(n)]
        if missing:
            record(name, False, f"blocked: needs {', '.join(missing)} from an earlier check")
            return False
        try:
            await fn()
        except CheckFailed as e:
            record(name, False, str(e))
            return False
        except Exception as e:  # noqa: BLE001
            if VERBOSE:
                traceback.print_exc()
            record(name, False, f"unexpected {type(e).__name__}: {e}")
            return False
        record(name, True)
        return True

    # -------------------------------------------------------------- helpers
    def login(self, tag):
        return f"hk-sdk-{self.rid}-{tag}@example.com"

    async def get_user(self, uid, what="get_user"):
        out = await ok_call(what, self.c.get_user(uid))
        require(out.data is not None, f"{what}: empty body")
        return out.data

    async def create_user(self, tag, first, password, activate):
        from okta.models import (CreateUserRequest, PasswordCredential,
                                 UserCredentialsWritable, UserProfile)
        login = self.login(tag)
        profile = UserProfile(login=login, email=login, firstName=first,
                              lastName=f"Sdk{self.rid}")
        creds = None
        if password:
            creds = UserCredentialsWritable(
                password=PasswordCredential(value=f"Pw-{self.rid}-{tag}-9xQ!"))
        body = CreateUserRequest(profile=profile, credentials=creds)
        out = await ok_call(f"create_user({tag}, activate={activate})",
                            self.c.create_user(body, activate=activate))
        u = out.data
        require(u is not None and u.id, "create_user: response has no user id")
        self.to_cleanup_users.append(u.id)
        require(u.profile is not None and u.profile.login == login,
                f"create_user: profile.login is {getattr(u.profile, 'login', None)!r}, "
                f"sent {login!r}")
        return u

    # ---------------------------------------------------------------- auth
    async def c_bad_token(self):
        from okta.client import Client
        async with Client(sdk_config(f"not-a-valid-token-{self.rid}")) as bad:
            await err_call("list_users with a bad token", bad.list_users(limit=1),
                           {"E0000011", "E0000004"}, {401})

    # --------------------------------------------------------------- users
    async def c_create_active(self):
        u = await self.create_user("a", f"Ada{self.rid}", password=True, activate=True)
        self.s["user_a"] = u.id
        self.s["login_a"] = u.profile.login
        require(sv(u.status) == "ACTIVE",
                f"status {sv(u.status)!r} after create with password and activate=true, "
                "expected 'ACTIVE'")
        require(aware(u.created), f"'created' missing or not a zoned timestamp: {u.created!r}")
        require(u.last_updated is not None, "'lastUpdated' missing")
        if u.credentials is not None and u.credentials.password is not None:
            require(u.credentials.password.value is None,
                    "credentials.password.value must never be returned")

    async def c_create_staged(self):
        u = await self.create_user("b", f"Bob{self.rid}", password=False, activate=False)
        self.s["user_b"] = u.id
        require(sv(u.status) == "STAGED",
                f"status {sv(u.status)!r} after create with activate=false, expected 'STAGED'")

    async def c_create_batch(self):
        ids = []
        for i in range(5):
            u = await self.create_user(f"p{i}", f"Pg{self.rid}n{i}", password=False,
                                       activate=False)
            ids.append(u.id)
        self.s["batch"] = ids

    async def c_get_by_id(self):
        u = await self.get_user(self.s["user_a"])
        require(u.id == self.s["user_a"], f"id {u.id!r} != {self.s['user_a']!r}")
        require(u.profile.login == self.s["login_a"], f"login {u.profile.login!r}")
        require(sv(u.status) == "ACTIVE", f"status {sv(u.status)!r}, expected ACTIVE")
        require(u.profile.first_name == f"Ada{self.rid}",
                f"firstName {u.profile.first_name!r}")

    async def c_get_by_login(self):
        # The SDK percent-encodes the path segment: '@' is sent as %40.
        u = await self.get_user(self.s["login_a"], "get_user(login)")
        require(u.id == self.s["user_a"], f"GET by login returned id {u.id!r}, "
                f"expected {self.s['user_a']!r}")

    async def c_get_unknown(self):
        await err_call("get_user(unknown id)", self.c.get_user(f"00unotthere{self.rid}"),
                       {"E0000007"}, {404})

    async def c_list_paging(self):
        limit = 2
        pages = await sdk_pages("list_users(limit=2)", self.c.list_users, limit,
                                max_pages=1000)
        seen = [u.id for page in pages for u in page]
        mine = [self.s["user_a"], self.s["user_b"]] + self.s["batch"]
        dup = sorted({i for i in seen if seen.count(i) > 1})
        missing = [i for i in mine if i not in seen]
        too_big = [len(p) for p in pages if len(p) > limit]
        if len(pages) <= 1 and len(seen) >= limit:
            links = await raw_link_headers(f"/api/v1/users?limit={limit}")
            fail(f"only one page of {len(seen)} users was followed; the SDK found no "
                 f"rel=\"next\" cursor. Raw link headers of page 1: {links}. okta 3.x "
                 "keeps only the LAST 'link' header line and needs rel=\"next\" "
                 "(quoted) with an after=<cursor> query parameter")
        require(not too_big, f"pages larger than limit={limit}: {too_big}")
        require(not dup, f"users seen more than once across pages: {dup[:5]}")
        require(not missing, f"created users not seen while paging: {missing}")

    async def c_list_filter(self):
        pages = await sdk_pages('list_users(filter=status eq "ACTIVE")', self.c.list_users,
                                2, max_pages=1000, filter='status eq "ACTIVE"')
        users = [u for p in pages for u in p]
        bad = [(u.id, sv(u.status)) for u in users if sv(u.status) != "ACTIVE"]
        require(not bad, f"non-ACTIVE users returned by the filter: {bad[:5]}")
        ids = [u.id for u in users]
        require(self.s["user_a"] in ids, "ACTIVE user A missing from the filtered list")
        require(self.s["user_b"] not in ids, "STAGED user B returned by status eq \"ACTIVE\"")
        require(len(ids) == len(set(ids)), "duplicate users across filtered pages")

    async def c_list_q(self):
        out = await ok_call("list_users(q=...)", self.c.list_users(q=f"Ada{self.rid}"))
        ids = [u.id for u in (out.data or [])]
        require(self.s["user_a"] in ids, f"q=Ada{self.rid} did not find user A (got {ids})")
        require(self.s["user_b"] not in ids, "q matched user B, whose names differ")

    async def c_update_partial(self):
        from okta.models import UpdateUserRequest, UserProfile
        before = await self.get_user(self.s["user_a"])
        body = UpdateUserRequest(profile=UserProfile(nickName=f"nick{self.rid}",
                                                     title="Engineer"))
        out = await ok_call("update_user (POST, partial)",
                            self.c.update_user(self.s["user_a"], body))
        u = out.data
        require(u is not None and u.profile is not None, "no user in the response")
        require(u.profile.nick_name == f"nick{self.rid}", f"nickName {u.profile.nick_name!r}")
        require(u.profile.title == "Engineer", f"title {u.profile.title!r}")
        require(u.profile.first_name == before.profile.first_name,
                "partial update dropped firstName")
        require(u.profile.login == before.profile.login, "partial update changed login")
        if before.last_updated and u.last_updated:
            require(u.last_updated >= before.last_updated, "lastUpdated went backwards")
        again = await self.get_user(self.s["user_a"])
        require(again.profile.nick_name == f"nick{self.rid}", "GET does not show new nickName")

    async def c_replace_full(self):
        from okta.models import UpdateUserRequest, UserProfile
        login = self.s["login_a"]
        body = UpdateUserRequest(profile=UserProfile(
            login=login, email=login, firstName=f"Ada{self.rid}",
            lastName=f"Sdk{self.rid}", title="Principal"))
        out = await ok_call("replace_user (PUT)", self.c.replace_user(self.s["user_a"], body))
        u = out.data
        require(u is not None and u.profile is not None, "no user in the response")
        require(u.profile.title == "Principal", f"title {u.profile.title!r}")
        require(u.profile.nick_name is None,
                f"full replace kept nickName {u.profile.nick_name!r}; properties not "
                "supplied must be removed")
        again = await self.get_user(self.s["user_a"])
        require(again.profile.nick_name is None and again.profile.title == "Principal",
                "GET after PUT does not show the replaced profile")

    # ----------------------------------------------------------- lifecycle
    async def c_suspend_staged_illegal(self):
        await err_call("suspend_user(STAGED user)", self.c.suspend_user(self.s["user_b"]),
                       ILLEGAL_TRANSITION_CODES, {400, 403})

    async def c_unsuspend_active_illegal(self):
        await err_call("unsuspend_user(ACTIVE user)", self.c.unsuspend_user(self.s["user_a"]),
                       ILLEGAL_TRANSITION_CODES, {400, 403})

    async def c_activate_active_illegal(self):
        await err_call("activate_user(ACTIVE user)",
                       self.c.activate_user(self.s["user_a"], send_email=False),
                       ILLEGAL_TRANSITION_CODES, {400, 403})

    async def c_unlock_staged_illegal(self):
        await err_call("unlock_user(STAGED user)", self.c.unlock_user(self.s["user_b"]),
                       ILLEGAL_TRANSITION_CODES, {400, 403})

    async def c_suspend(self):
        await ok_call("suspend_user", self.c.suspend_user(self.s["user_a"]))
        u = await self.get_user(self.s["user_a"])
        require(sv(u.status) == "SUSPENDED", f"status {sv(u.status)!r} after suspend")
        self.s["suspended"] = True

    async def c_unsuspend(self):
        await ok_call("unsuspend_user", self.c.unsuspend_user(self.s["user_a"]))
        u = await self.get_user(self.s["user_a"])
        require(sv(u.status) == "ACTIVE", f"status {sv(u.status)!r} after unsuspend")

    async def c_activate_staged(self):
        out = await ok_call("activate_user(STAGED, sendEmail=false)",
                            self.c.activate_user(self.s["user_b"], send_email=False))
        u = await self.get_user(self.s["user_b"])
        st, tr = sv(u.status), u.transitioning_to_status
        require(st in ("PROVISIONED", "ACTIVE") or tr in ("PROVISIONED", "ACTIVE"),
                f"status {st!r} (transitioningToStatus {tr!r}) after activating a "
                "STAGED user without password")
        self.s["b_status"] = st
        tok = out.data
        if tok is not None and st == "PROVISIONED":
            require(tok.activation_token or tok.activation_url,
                    "sendEmail=false activation returned neither activationToken "
                    "nor activationUrl")

    async def c_reactivate(self):
        if self.s.get("b_status") == "PROVISIONED":
            await ok_call("reactivate_user(PROVISIONED)",
                          self.c.reactivate_user(self.s["user_b"], send_email=False))
            u = await self.get_user(self.s["user_b"])
            require(sv(u.status) == "PROVISIONED",
                    f"status {sv(u.status)!r} after reactivate, expected PROVISIONED")
        else:
            await err_call("reactivate_user(ACTIVE)",
                           self.c.reactivate_user(self.s["user_b"], send_email=False),
                           ILLEGAL_TRANSITION_CODES, {400, 403})

    async def c_expire_password(self):
        out = await ok_call("expire_password", self.c.expire_password(self.s["user_a"]))
        if out.data is not None and out.data.status is not None:
            require(sv(out.data.status) == "PASSWORD_EXPIRED",
                    f"expire_password returned status {sv(out.data.status)!r}")
        u = await self.get_user(self.s["user_a"])
        require(sv(u.status) == "PASSWORD_EXPIRED",
                f"status {sv(u.status)!r} after expire_password")

    async def c_deactivate(self):
        await ok_call("deactivate_user", self.c.deactivate_user(self.s["user_b"]))
        u = await self.get_user(self.s["user_b"])
        require(sv(u.status) == "DEPROVISIONED", f"status {sv(u.status)!r} after deactivate")
        self.s["b_deprovisioned"] = True

    async def c_delete_two_step(self):
        uid = self.s["user_a"]
        await ok_call("delete_user #1 (deactivates)", self.c.delete_user(uid))
        u = await self.get_user(uid, "get_user after first delete")
        require(sv(u.status) == "DEPROVISIONED",
                f"first DELETE must only deactivate; status is {sv(u.status)!r}")
        await ok_call("delete_user #2 (deletes)", self.c.delete_user(uid))
        await err_call("get_user after second delete", self.c.get_user(uid),
                       {"E0000007"}, {404})
        self.to_cleanup_users.remove(uid)

    async def c_delete_deprovisioned(self):
        uid = self.s["user_b"]
        await ok_call("delete_user(DEPROVISIONED)", self.c.delete_user(uid))
        await err_call("get_user after delete", self.c.get_user(uid), {"E0000007"}, {404})
        self.to_cleanup_users.remove(uid)

    async def c_cleanup_batch(self):
        for uid in list(self.s["batch"]):
            await ok_call("delete_user #1", self.c.delete_user(uid))
            await ok_call("delete_user #2", self.c.delete_user(uid))
            self.to_cleanup_users.remove(uid)

    # -------------------------------------------------------------- groups
    def gname(self):
        return f"hk-sdk-{self.rid}-grp"

    async def c_group_create(self):
        from okta.models import AddGroupRequest, OktaUserGroupProfile
        body = AddGroupRequest(profile=OktaUserGroupProfile(name=self.gname(),
                                                            description="created by SDK check"))
        out = await ok_call("add_group", self.c.add_group(body))
        g = out.data
        require(g is not None and g.id, "add_group: no group id in the response")
        self.to_cleanup_groups.append(g.id)
        self.s["group"] = g.id
        prof = g.profile.actual_instance if g.profile is not None else None
        require(prof is not None and prof.name == self.gname(),
                f"profile.name {getattr(prof, 'name', None)!r}")
        require(sv(g.type) == "OKTA_GROUP", f"type {sv(g.type)!r}, expected OKTA_GROUP")

    async def c_group_get(self):
        out = await ok_call("get_group", self.c.get_group(self.s["group"]))
        g = out.data
        require(g is not None and g.id == self.s["group"], "wrong group returned")
        require(g.profile.actual_instance.description == "created by SDK check",
                "description not stored")

    async def c_group_list_q(self):
        out = await ok_call("list_groups(q=...)", self.c.list_groups(q=f"hk-sdk-{self.rid}"))
        ids = [g.id for g in (out.data or [])]
        require(self.s["group"] in ids, f"q=<name prefix> did not find the group (got {ids})")

    async def c_group_replace(self):
        from okta.models import AddGroupRequest, OktaUserGroupProfile
        body = AddGroupRequest(profile=OktaUserGroupProfile(name=self.gname() + "-renamed",
                                                            description="replaced"))
        out = await ok_call("replace_group (PUT)", self.c.replace_group(self.s["group"], body))
        g = out.data
        prof = g.profile.actual_instance if g is not None and g.profile is not None else None
        require(prof is not None and prof.name == self.gname() + "-renamed",
                f"name after replace {getattr(prof, 'name', None)!r}")
        require(prof.description == "replaced", f"description {prof.description!r}")

    async def c_group_add_member(self):
        await ok_call("assign_user_to_group (PUT)",
                      self.c.assign_user_to_group(self.s["group"], self.s["user_a"]))
        self.s["member_added"] = True

    async def c_group_list_members(self):
        pages = await sdk_pages("list_group_users", self.c.list_group_users, 50,
                                max_pages=100, group_id=self.s["group"])
        ids = [u.id for p in pages for u in p]
        require(ids.count(self.s["user_a"]) == 1, f"member list {ids} lacks user A")

    async def c_user_groups(self):
        out = await ok_call("list_user_groups", self.c.list_user_groups(self.s["user_a"]))
        ids = [g.id for g in (out.data or [])]
        require(self.s["group"] in ids, f"user's groups {ids} lack the group")

    async def c_group_remove_member(self):
        await ok_call("unassign_user_from_group (DELETE)",
                      self.c.unassign_user_from_group(self.s["group"], self.s["user_a"]))
        out = await ok_call("list_group_users", self.c.list_group_users(self.s["group"]))
        ids = [u.id for u in (out.data or [])]
        require(self.s["user_a"] not in ids, "user still listed as a member after removal")

    async def c_group_delete(self):
        gid = self.s["group"]
        await ok_call("delete_group", self.c.delete_group(gid))
        await err_call("get_group after delete", self.c.get_group(gid), {"E0000007"}, {404})
        self.to_cleanup_groups.remove(gid)

    # ---------------------------------------------------------- system log
    async def log_query(self, what, filter_expr, limit=100, max_pages=50):
        since = rfc3339(self.started - dt.timedelta(seconds=120))
        until = rfc3339(dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=60))
        pages = await sdk_pages(what, self.c.list_log_events, limit, max_pages=max_pages,
                                since=since, until=until, filter=filter_expr)
        return pages

    async def events_for(self, target_id):
        pages = await self.log_query(f'list_log_events(target.id eq "{target_id}")',
                                     f'target.id eq "{target_id}"')
        return [e for p in pages for e in p]

    async def c_logs_collect(self):
        wanted = {
            "user_a": {"user.lifecycle.create", "user.account.update_profile",
                       "user.lifecycle.suspend", "user.lifecycle.unsuspend",
                       "user.lifecycle.deactivate", "user.lifecycle.delete.initiated",
                       "user.lifecycle.delete.completed", "group.user_membership.add",
                       "group.user_membership.remove"},
            "user_b": {"user.lifecycle.create", "user.lifecycle.activate",
                       "user.lifecycle.deactivate"},
            "group": {"group.lifecycle.create", "group.lifecycle.delete",
                      "group.user_membership.add", "group.user_membership.remove"},
        }
        deadline = time.monotonic() + LOG_WAIT
        while True:
            got = {}
            for key in wanted:
                if self.s.get(key):
                    got[key] = await self.events_for(self.s[key])
            missing = {k: wanted[k] - {e.event_type for e in got.get(k, [])} for k in got}
            if not any(missing.values()) or time.monotonic() > deadline:
                break
            await asyncio.sleep(1.0)
        self.s["events"] = got
        for key, evs in got.items():
            for e in evs:
                require(any(t.id == self.s[key] for t in (e.target or [])),
                        f'filter target.id eq "{self.s[key]}" returned event '
                        f"{e.event_type} ({e.uuid}) without that target")

    def has_event(self, key, event_type, target_type=None):
        evs = [e for e in self.s["events"].get(key, []) if e.event_type == event_type]
        require(evs, f"no {event_type} event with target.id {self.s.get(key)} "
                f"(seen: {sorted({e.event_type for e in self.s['events'].get(key, [])})})")
        if target_type:
            for e in evs:
                t = [t for t in (e.target or []) if t.id == self.s[key]]
                require(t and t[0].type == target_type,
                        f"{event_type}: target {self.s[key]} has type "
                        f"{t[0].type if t else None!r}, expected {target_type!r}")
        return evs

    async def c_log_event_shape(self):
        e = self.has_event("user_a", "user.lifecycle.create", "User")[0]
        require(e.uuid, "uuid missing")
        require(aware(e.published), f"published {e.published!r} is not a zoned timestamp")
        require(e.version is not None, "version missing")
        require(sv(e.severity) in ("DEBUG", "INFO", "WARN", "ERROR"),
                f"severity {sv(e.severity)!r}")
        require(e.actor is not None and e.actor.id and e.actor.type, "actor.id/type missing")
        require(e.outcome is not None and e.outcome.result == "SUCCESS",
                f"outcome {e.outcome!r}")
        t = [t for t in e.target if t.id == self.s["user_a"]][0]
        require(t.alternate_id == self.s["login_a"],
                f"target.alternateId {t.alternate_id!r}, expected the login")
        lo, hi = self.started - dt.timedelta(seconds=120), \
            dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=60)
        require(lo <= e.published <= hi, f"published {e.published} outside this run")

    async def c_log_filter_event_type(self):
        pages = await self.log_query('list_log_events(eventType eq "user.lifecycle.create")',
                                     'eventType eq "user.lifecycle.create"')
        evs = [e for p in pages for e in p]
        other = sorted({e.event_type for e in evs} - {"user.lifecycle.create"})
        require(not other, f"filter returned other event types: {other}")
        targets = {t.id for e in evs for t in (e.target or [])}
        for key in ("user_a", "user_b"):
            require(self.s[key] in targets, f"create event of {key} not in the filtered list")

    async def c_log_paging(self):
        uid = self.s["user_a"]
        pages = await self.log_query(f'list_log_events(target.id eq "{uid}", limit=2)',
                                     f'target.id eq "{uid}"', limit=2, max_pages=100)
        evs = [e.uuid for p in pages for e in p]
        if len(pages) <= 1:
            links = await raw_link_headers(
                f"/api/v1/logs?limit=2&filter=target.id%20eq%20%22{uid}%22")
            fail(f"{len(evs)} events came in {len(pages)} page(s) with limit=2; the SDK "
                 f"found no rel=\"next\" cursor. Raw link headers: {links}")
        require(all(len(p) <= 2 for p in pages), "a page exceeded limit=2")
        require(len(evs) == len(set(evs)), "an event uuid appeared on two pages")
        require(len(evs) == len(self.s["events"]["user_a"]),
                f"paging with limit=2 saw {len(evs)} events, one page of 100 saw "
                f"{len(self.s['events']['user_a'])}")
        pub = [e.published for p in pages for e in p]
        require(pub == sorted(pub), "bounded query is not in ascending published order")

    # --------------------------------------------------------------- cleanup
    async def cleanup(self):
        for gid in list(self.to_cleanup_groups):
            try:
                await asyncio.wait_for(self.c.delete_group(gid), 5)
            except Exception:  # noqa: BLE001
                pass
        for uid in list(self.to_cleanup_users):
            for _ in range(2):
                try:
                    await asyncio.wait_for(self.c.delete_user(uid), 5)
                except Exception:  # noqa: BLE001
                    pass


async def run_all():
    if not HAKEN_URL or not HAKEN_TOKEN:
        record("environment", False, "HAKEN_URL and HAKEN_TOKEN must both be set")
        return
    parsed = urlparse(HAKEN_URL)

    def tcp():
        with socket.create_connection((parsed.hostname, parsed.port or
                                       (443 if parsed.scheme == "https" else 80)), 3):
            pass
    try:
        tcp()
        record("preflight.tcp_connect", True)
    except OSError as e:
        record("preflight.tcp_connect", False, f"cannot connect to {HAKEN_URL}: {e}")
        return

    prepare_environment()
    from okta.client import Client
    try:
        client = Client(sdk_config(HAKEN_TOKEN))
        record("sdk.client_config", True)
    except Exception as e:  # noqa: BLE001
        record("sdk.client_config", False, f"okta.client.Client rejected the config: {e}")
        return

    async with client:
        r = Run(client)
        ck = r.check
        await ck("auth.bad_token_rejected", r.c_bad_token)
        await ck("users.create_active_with_password", r.c_create_active)
        await ck("users.create_staged", r.c_create_staged)
        await ck("users.create_batch_for_paging", r.c_create_batch)
        await ck("users.get_by_id", r.c_get_by_id, needs=("user_a",))
        await ck("users.get_by_login", r.c_get_by_login, needs=("user_a",))
        await ck("users.get_unknown_is_E0000007", r.c_get_unknown)
        await ck("users.list_paging_limit_2", r.c_list_paging,
                 needs=("user_a", "user_b", "batch"))
        await ck("users.list_filter_status_active", r.c_list_filter,
                 needs=("user_a", "user_b"))
        await ck("users.list_q", r.c_list_q, needs=("user_a", "user_b"))
        await ck("users.update_profile_partial", r.c_update_partial, needs=("user_a",))
        await ck("users.replace_profile_full", r.c_replace_full, needs=("user_a",))
        await ck("lifecycle.suspend_staged_is_illegal", r.c_suspend_staged_illegal,
                 needs=("user_b",))
        await ck("lifecycle.unsuspend_active_is_illegal", r.c_unsuspend_active_illegal,
                 needs=("user_a",))
        await ck("lifecycle.activate_active_is_illegal", r.c_activate_active_illegal,
                 needs=("user_a",))
        await ck("lifecycle.unlock_staged_is_illegal", r.c_unlock_staged_illegal,
                 needs=("user_b",))
        await ck("lifecycle.suspend", r.c_suspend, needs=("user_a",))
        await ck("lifecycle.unsuspend", r.c_unsuspend, needs=("user_a", "suspended"))
        await ck("lifecycle.activate_staged", r.c_activate_staged, needs=("user_b",))
        await ck("lifecycle.reactivate", r.c_reactivate, needs=("user_b", "b_status"))
        await ck("groups.create", r.c_group_create)
        await ck("groups.get", r.c_group_get, needs=("group",))
        await ck("groups.list_q", r.c_group_list_q, needs=("group",))
        await ck("groups.replace_profile", r.c_group_replace, needs=("group",))
        await ck("groups.add_member", r.c_group_add_member, needs=("group", "user_a"))
        await ck("groups.list_members", r.c_group_list_members,
                 needs=("group", "member_added"))
        await ck("groups.list_user_groups", r.c_user_groups, needs=("group", "member_added"))
        await ck("groups.remove_member", r.c_group_remove_member,
                 needs=("group", "member_added"))
        await ck("lifecycle.expire_password", r.c_expire_password, needs=("user_a",))
        await ck("lifecycle.deactivate", r.c_deactivate, needs=("user_b",))
        await ck("users.delete_two_step", r.c_delete_two_step, needs=("user_a",))
        await ck("users.delete_deprovisioned", r.c_delete_deprovisioned,
                 needs=("user_b", "b_deprovisioned"))
        await ck("groups.delete", r.c_group_delete, needs=("group",))
        await ck("users.delete_batch", r.c_cleanup_batch, needs=("batch",))

        if await ck("logs.query_by_target_id", r.c_logs_collect):
            await ck("logs.event_shape", r.c_log_event_shape, needs=("user_a",))
            expected = [
                ("user_a", "user.lifecycle.create", "User"),
                ("user_b", "user.lifecycle.create", "User"),
                ("user_a", "user.account.update_profile", "User"),
                ("user_a", "user.lifecycle.suspend", "User"),
                ("user_a", "user.lifecycle.unsuspend", "User"),
                ("user_b", "user.lifecycle.activate", "User"),
                ("user_b", "user.lifecycle.deactivate", "User"),
                ("user_a", "user.lifecycle.deactivate", "User"),
                ("user_a", "user.lifecycle.delete.initiated", "User"),
                ("user_a", "user.lifecycle.delete.completed", "User"),
                ("group", "group.lifecycle.create", "UserGroup"),
                ("group", "group.user_membership.add", "UserGroup"),
                ("user_a", "group.user_membership.add", "User"),
                ("group", "group.user_membership.remove", "UserGroup"),
                ("user_a", "group.user_membership.remove", "User"),
                ("group", "group.lifecycle.delete", "UserGroup"),
            ]
            for key, etype, ttype in expected:
                async def one(key=key, etype=etype, ttype=ttype):
                    r.has_event(key, etype, ttype)
                await ck(f"logs.event {etype} (target {ttype} {key})", one, needs=(key,))
            await ck("logs.filter_event_type", r.c_log_filter_event_type,
                     needs=("user_a", "user_b"))
            await ck("logs.paging_limit_2", r.c_log_paging, needs=("user_a",))

        await r.cleanup()

    # A hint for the most common total failure.
    first_api = [x for x in RESULTS if x[0] == "users.create_active_with_password"]
    if first_api and not first_api[0][1] and "E0000011" in first_api[0][2]:
        print("hint: okta 3.x sends 'Authorization: SSWS<token>' WITHOUT a space "
              "(Configuration.auth_settings concatenates the mode and the token); "
              "the server must accept it as well as 'SSWS <token>'", flush=True)


def main():
    def on_alarm(_sig, _frm):
        record("overall_timeout", False, f"hard limit of {OVERALL_TIMEOUT + 30:g}s hit")
        print_summary()
        os._exit(1)

    if hasattr(signal, "SIGALRM"):
        signal.signal(signal.SIGALRM, on_alarm)
        signal.alarm(int(OVERALL_TIMEOUT + 30))
    try:
        asyncio.run(asyncio.wait_for(run_all(), OVERALL_TIMEOUT))
    except asyncio.TimeoutError:
        record("overall_timeout", False, f"checks did not finish within {OVERALL_TIMEOUT:g}s")
    except KeyboardInterrupt:
        record("interrupted", False, "interrupted")
    except Exception as e:  # noqa: BLE001
        traceback.print_exc()
        record("harness", False, f"{type(e).__name__}: {e}")
    print_summary()
    sys.stdout.flush()
    sys.exit(exit_code())


if __name__ == "__main__":
    main()
