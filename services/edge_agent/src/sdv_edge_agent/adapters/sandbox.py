"""The native runtime's sandbox: who an app runs as and what it may reach (`security.sandbox`,
`security.network` of its manifest).

  none      the agent's own user; nothing dropped (for apps that must manage the device)
  standard  a user of its own (uid = gid from the agent's range, allocated once per app name and
            kept in SQLite, never reused or wrapped: past the range's end apps are refused), no
            supplementary groups, no way to regain privileges (PR_SET_NO_NEW_PRIVS: setuid
            binaries and file capabilities stop working), umask 077, at most 256
            processes/threads of its user (RLIMIT_NPROC); a mount namespace of its own in which
            /tmp, /var/tmp and /dev/shm are directories of its own (`private_tmp_binds`); it can
            read its installed version and write only its HOME and those
  strict    standard, plus tight limits: 256 open files, 64 processes/threads of its user
            (no file-size limit: console files only ever grow, see console.py)

Private /tmp: a mount namespace, not just TMPDIR, because TMPDIR is advice (Python's tempfile
follows it, a hard-coded "/tmp/x" or a shm_open does not) while a bind mount is what the app's
own system calls see. An agent that is not root cannot make mounts (nor switch users): its apps
get TMPDIR pointing at a directory of their own, which keeps well-behaved apps apart only.

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
import shutil
import stat
from pathlib import Path

from sdv_edge_agent.ports import Sandbox

APP_UID_BASE = 61184  # systemd's DynamicUser range, 61184-65519: no login user lives there
APP_UID_COUNT = 4336
PR_SET_NO_NEW_PRIVS = 38
CLONE_NEWNET = 0x40000000
CLONE_NEWNS = 0x00020000
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
STRICT_NOFILE = 256
STRICT_NPROC = 64  # per uid: only meaningful (and only set) when the app has a uid of its own
STANDARD_NPROC = 256  # as many as a docker app gets (pids_limit)
# Shared scratch places of a Linux system, each replaced by a directory of the app's own.
PRIVATE_TARGETS = (("/tmp", "tmp"), ("/var/tmp", "var-tmp"), ("/dev/shm", "shm"))
_libc = ctypes.CDLL(None, use_errno=True)


class SandboxError(OSError):
    """The child could not be confined as asked; it never runs unconfined instead."""


def can_switch_users() -> bool:
    return os.geteuid() == 0


def describe() -> str:
    if not can_switch_users():
        return ("sandbox: apps run as the agent's user (agent not root), no-new-privileges; "
                "network=none not enforced")
    return ("sandbox: a user per app, no-new-privileges, private /tmp /var/tmp /dev/shm, "
            f"{STANDARD_NPROC} processes per app, own network namespace for network=none; "
            "network=kuksa-only is not filtered (host network)")


class UidsExhausted(SandboxError):
    """Every uid of the agent's range went to an app name already: a new name is refused rather
    than given a uid another app has (its HOME, its files)."""


def app_uid(allocated: int) -> int:
    """The uid of the n-th app name this device has seen (1, 2, …): never wraps."""
    if not 1 <= allocated <= APP_UID_COUNT:
        raise UidsExhausted(f"no app uid left: all {APP_UID_COUNT} uids from {APP_UID_BASE} went to "
                            "earlier app names (uids are never reused)")
    return APP_UID_BASE + allocated - 1


def _root_owned_dir(path: Path, mode: int) -> None:
    """`path` as a real directory owned by root with `mode`; anything else there is replaced."""
    try:
        st = os.lstat(path)
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != 0:
            if stat.S_ISDIR(st.st_mode):
                shutil.rmtree(path)
            else:
                path.unlink()
            raise FileNotFoundError(path)
    except FileNotFoundError:
        path.mkdir(mode=mode)
    os.chown(path, 0, 0, follow_symlinks=False)
    path.chmod(mode)


def private_tmp_binds(app_tmp: Path, visible: list[Path]) -> tuple[tuple[bytes, bytes], ...]:
    """Make `<app_tmp>/{tmp,var-tmp,shm}` (root-owned, mode 1777 like /tmp, in a 0700 parent no
    other app can get through) and the bind mounts that put them over /tmp, /var/tmp, /dev/shm.
    Paths the app needs that live below one of those (the agent's data directory in a test under
    /tmp) are bound into the private directory at the same place first, so they stay visible."""
    _root_owned_dir(app_tmp.parent, 0o700)
    _root_owned_dir(app_tmp, 0o700)
    binds: list[tuple[bytes, bytes]] = []
    seen: set[str] = set()
    for target, sub in PRIVATE_TARGETS:
        if os.path.islink(target) or not os.path.isdir(target):
            continue
        real = os.path.realpath(target)
        if real in seen:
            continue
        seen.add(real)
        private = app_tmp / sub
        _root_owned_dir(private, 0o1777)
        for path in visible:
            resolved = Path(os.path.realpath(path))
            if not resolved.is_relative_to(real) or resolved == Path(real):
                continue
            stash, mirrored = private, Path(real)
            for part in resolved.relative_to(real).parts:
                stash, mirrored = stash / part, mirrored / part
                # Root-owned in a sticky directory: the app can neither move nor replace these;
                # the real directory's mode: the app gets through only where it could anyway.
                _root_owned_dir(stash, stat.S_IMODE(os.stat(mirrored).st_mode))
            binds.append((bytes(resolved), bytes(stash)))
        binds.append((bytes(private), target.encode()))
    return tuple(binds)


def _mount_private(binds: tuple[tuple[bytes, bytes], ...]) -> None:
    if _libc.unshare(CLONE_NEWNS) != 0:
        raise SandboxError(ctypes.get_errno(), "unshare(CLONE_NEWNS)")
    if _libc.mount(None, b"/", None, ctypes.c_ulong(MS_REC | MS_PRIVATE), None) != 0:
        raise SandboxError(ctypes.get_errno(), "mount(/, MS_REC|MS_PRIVATE)")
    for source, target in binds:
        if _libc.mount(source, target, None, ctypes.c_ulong(MS_BIND | MS_REC), None) != 0:
            raise SandboxError(ctypes.get_errno(), f"bind mount over {target.decode()}")


def confine(sandbox: Sandbox) -> None:
    """In the forked child, after it joined its cgroup: drop to the sandbox. Raises (and the
    child never execs) when a step fails."""
    if sandbox.no_network and _libc.unshare(CLONE_NEWNET) != 0:  # at every level, "none" included
        raise SandboxError(ctypes.get_errno(), "unshare(CLONE_NEWNET)")
    if not sandbox.confined:
        return
    if sandbox.binds:
        _mount_private(sandbox.binds)
    if sandbox.level == "strict":
        resource.setrlimit(resource.RLIMIT_NOFILE, (STRICT_NOFILE, STRICT_NOFILE))
    if sandbox.uid is not None:  # counts the processes of the app's own uid only
        nproc = STRICT_NPROC if sandbox.level == "strict" else STANDARD_NPROC
        resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))
    if _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise SandboxError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
    if sandbox.uid is not None and sandbox.gid is not None:
        os.setgroups([])
        os.setresgid(sandbox.gid, sandbox.gid, sandbox.gid)
        os.setresuid(sandbox.uid, sandbox.uid, sandbox.uid)
    os.umask(0o077)
