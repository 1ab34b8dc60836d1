"""The `.creds` text NATS clients read: a user JWT and the user's nkey seed."""

from __future__ import annotations

from nats.aio.client import RawCredentials


def format_creds(jwt: str, seed: str) -> str:
    return (
        "-----BEGIN NATS USER JWT-----\n"
        f"{jwt}\n"
        "------END NATS USER JWT------\n\n"
        "************************* IMPORTANT *************************\n"
        "NKEY Seed printed below can be used to sign and prove identity.\n"
        "NKEYs are sensitive and should be treated as secrets.\n\n"
        "-----BEGIN USER NKEY SEED-----\n"
        f"{seed}\n"
        "------END USER NKEY SEED------\n\n"
        "*************************************************************\n"
    )


def jwt_of_creds(text: str) -> str:
    """The user JWT in `.creds` text; ValueError when there is none."""
    lines = text.splitlines()
    for i, line in enumerate(lines[:-1]):
        if line.startswith("-----BEGIN NATS USER JWT-----"):
            return lines[i + 1].strip()
    raise ValueError("no user JWT in these credentials")


def raw_creds(text: str) -> RawCredentials:
    """For `nats.connect(user_credentials=raw_creds(text))`: no file needed."""
    return RawCredentials(text)
