"""Key scopes: which scope opens which routes, the 403 a wrong one gets (RFC 6750 §3.1), and
one vocabulary for the scopes (the ``Scope`` type, the migration's check constraint, the CLI)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from services.cli.keys import ScopeName
from services.gateway.auth import OPS_ADMIN, OPS_READ, check_scope
from services.gateway.errors import ApiError
from services.gateway.keys import SCOPES, Principal, is_ops_scope

MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"


def test_each_scope_opens_what_it_should_and_nothing_else() -> None:
    opens = {
        scope: [
            name
            for name, wanted in (("upload", "upload"), ("read", OPS_READ), ("admin", OPS_ADMIN))
            if _allowed(Principal("someone", scope), wanted)
        ]
        for scope in SCOPES
    }
    assert opens == {"upload": ["upload"], "ops:read": ["read"], "ops:admin": ["read", "admin"]}


def _allowed(principal: Principal, wanted: object) -> bool:
    try:
        check_scope(principal, wanted)  # type: ignore[arg-type]
    except ApiError:
        return False
    return True


@pytest.mark.parametrize(
    ("scope", "wanted", "needs", "challenge_scope"),
    [
        ("upload", OPS_READ, "ops:read or ops:admin", "ops:read"),
        ("ops:read", OPS_ADMIN, "ops:admin", "ops:admin"),
        ("ops:admin", "upload", "upload", "upload"),
        ("upload", ("ops:admin", "ops:read"), "ops:read or ops:admin", "ops:read"),
    ],
)
def test_a_wrong_scope_is_403_insufficient_scope_naming_the_least_scope_needed(
    scope: str, wanted: object, needs: str, challenge_scope: str
) -> None:
    with pytest.raises(ApiError) as refused:
        check_scope(Principal("someone", scope), wanted)  # type: ignore[arg-type]
    assert (refused.value.status_code, refused.value.code, refused.value.message) == (
        403,
        "forbidden",
        f"this is an {scope} key; this route needs an {needs} key",
    )
    assert refused.value.headers == {
        "WWW-Authenticate": 'Bearer realm="sluice", error="insufficient_scope", '
        f'scope="{challenge_scope}"'
    }


def test_ops_keys_are_both_ops_scopes() -> None:
    assert [scope for scope in SCOPES if is_ops_scope(scope)] == ["ops:read", "ops:admin"]
    assert Principal("a", "ops:read").is_ops and Principal("a", "ops:admin").is_ops
    assert not Principal("a", "upload").is_ops
    assert not is_ops_scope("ops")  # the scope before migration 0006


def test_the_scopes_are_those_of_the_latest_check_constraint_and_the_cli() -> None:
    constraint = re.compile(r"api_keys_scope_check CHECK \(scope IN \(([^)]*)\)\)|"
                            r"scope text .*CHECK \(scope IN \(([^)]*)\)\)")  # fmt: skip
    latest: list[str] = []
    for migration in sorted(MIGRATIONS.glob("[0-9]*.sql")):
        if migration.name.endswith(".rollback.sql"):
            continue
        for match in constraint.finditer(migration.read_text()):
            latest = re.findall(r"'([^']+)'", match.group(1) or match.group(2))
    assert tuple(latest) == SCOPES
    assert [scope.value for scope in ScopeName] == list(SCOPES)
