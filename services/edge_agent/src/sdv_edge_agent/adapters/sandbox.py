"""The native runtime's sandbox: who an app runs as and what it may reach (`security.sandbox`,
`security.network` of its manifest).

  none      the agent's own user; nothing dropped (for apps that must manage the device)
  standard  a user of its own (uid = gid from the agent's range, allocated once per app name and
            kept in SQLite), no supplementary groups, no way to regain privileges
            (PR_SET_NO_NEW_PRIVS: setuid binaries and file capabilities stop working), umask 077;
            it can read its installed version and write only its HOME (and /tmp)
  strict    standard, plus tight limits: 256 open files, 64 processes/threads of its user
            (no file-size limit: console files only ever grow, see console.py)

`network = "none"` gives the app an empty network namespace of its own (not even loopback).
"kuksa-only" and "full" keep the host's network: limiting an app to the databroker's address needs
a packet filter the agent does not manage yet — `describe()` says so rather than pretending.

Switching users and namespaces needs root. An agent that is not root runs every app as itself
with NO_NEW_PRIVS only, and says so in its limits (logs, heartbeats).

Everything here that runs in the child happens between fork and exec: system calls only.
"""

from __future__ import annotations

import ctypes
import os
import resource

from sdv_edge_agent.ports import Sandbox

APP_UID_BASE = 61184  # systemd's DynamicUser range, 61184-65519: no login user lives there
APP_UID_COUNT = 4336
PR_SET_NO_NEW_PRIVS = 38
CLONE_NEWNET = 0x40000000
STRICT_NOFILE = 256
STRICT_NPROC = 64  # per uid: only meaningful (and only set) when the app has a uid of its own
_libc = ctypes.CDLL(None, use_errno=True)


class SandboxError(OSError):
    """The child could not be confined as asked; it never runs unconfined instead."""


def can_switch_users() -> bool:
    return os.geteuid() == 0


def describe() -> str:
    if not can_switch_users():
        return ("sandbox: apps run as the agent's user (agent not root), no-new-privileges; "
                "network=none not enforced")
    return ("sandbox: a user per app, no-new-privileges, own network namespace for network=none; "
            "network=kuksa-only is not filtered (host network)")


def app_uid(allocated: int) -> int:
    """The uid of the n-th app name this device has seen (1, 2, …)."""
    return APP_UID_BASE + (allocated - 1) % APP_UID_COUNT


def confine(sandbox: Sandbox) -> None:
    """In the forked child, after it joined its cgroup: drop to the sandbox. Raises (and the
    child never execs) when a step fails."""
    if sandbox.no_network and _libc.unshare(CLONE_NEWNET) != 0:  # at every level, "none" included
        raise SandboxError(ctypes.get_errno(), "unshare(CLONE_NEWNET)")
    if not sandbox.confined:
        return
    if sandbox.level == "strict":
        resource.setrlimit(resource.RLIMIT_NOFILE, (STRICT_NOFILE, STRICT_NOFILE))
        if sandbox.uid is not None:
            resource.setrlimit(resource.RLIMIT_NPROC, (STRICT_NPROC, STRICT_NPROC))
    if _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise SandboxError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
    if sandbox.uid is not None and sandbox.gid is not None:
        os.setgroups([])
        os.setresgid(sandbox.gid, sandbox.gid, sandbox.gid)
        os.setresuid(sandbox.uid, sandbox.uid, sandbox.uid)
    os.umask(0o077)
