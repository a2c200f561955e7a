"""Classification rules: event_type, actor type, source, target type."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.enricher.rules.classify import (
    EVENT_TYPES,
    OTHER,
    actor_type_for,
    event_type_for,
    is_webhook,
    source_for,
    target_type_for,
)


@pytest.mark.parametrize(
    ("action", "expected"),
    [
        ("deployment:create", "create"),
        ("deployment:cancel", "cancel"),
        ("deployment:rollback", "rollback"),
        ("deployment:delete", "delete"),
        ("service:update", "update"),
        ("service:custom_domain_add", "create"),
        ("service:ai_scan_run", "trigger"),
        ("workflow:enable", "update"),
        ("workflow:disable", "update"),
        ("organization:audit_config_update", "update"),
        ("organization:ai_config_update", "update"),
        ("github_installation:link", "create"),
        ("github_installation:unlink", "delete"),
        ("slack:connect", "create"),
        ("slack:disconnect", "delete"),
        ("subscription:activate", "create"),
        ("subscription:scale_up", "update"),
        ("subscription:scale-down", "update"),
        ("subscription:cancel", "cancel"),
        ("user:login", "login"),
        ("user:logout", "logout"),
        ("certificate:export", "access"),
        ("release:deploy", "trigger"),
        ("thing:frobnicate", OTHER),
        ("Deployment:CREATE", "create"),
    ],
)
def test_event_type_from_verb(action: str, expected: str) -> None:
    assert event_type_for(action) == expected


@given(st.sampled_from(sorted(EVENT_TYPES)), st.from_regex(r"[a-z]{1,8}", fullmatch=True))
def test_every_table_verb_maps_to_its_type(verb: str, entity: str) -> None:
    assert event_type_for(f"{entity}:{verb}") == EVENT_TYPES[verb]


def test_target_type_from_entity() -> None:
    assert target_type_for("deployment:create") == "deployment"
    assert target_type_for("org/team:update") == "team"
    assert target_type_for("github_installation:link") == "github_installation"


@pytest.mark.parametrize(
    ("ua", "headers", "path", "expected"),
    [
        ("Mozilla/5.0 (X11; Linux x86_64) Chrome/130.0", None, "/api/x", "console"),
        (None, {"x-requested-with": "XMLHttpRequest"}, "/api/x", "console"),
        ("acme-cli/3.1.0 (linux)", None, "/api/x", "cli"),
        ("octo cli 2.0", None, "/api/x", "cli"),
        ("kubectl/v1.30.0", None, "/api/x", "cli"),
        ("Terraform/1.9.5 terraform-provider-acme/2.3.0", None, "/api/x", "terraform"),
        ("OpenTofu/1.8.0", None, "/api/x", "terraform"),
        ("git/2.43.0", None, "/repo.git/info/refs", "git"),
        (None, None, "/org/repo.git/git-receive-pack", "git"),
        ("GitHub-Hookshot/abc", {"x-github-event": "push"}, "/hooks/github", "webhook"),
        (None, {"X-Gitlab-Event": "Push Hook"}, "/api/x", "webhook"),
        (None, {"stripe-signature": "t=1"}, "/api/billing", "webhook"),
        (None, None, "/api/webhooks/slack", "webhook"),
        ("curl/8.5.0", None, "/api/x", "api"),
        ("python-requests/2.32", None, "/api/x", "api"),
        ("PostmanRuntime/7.39", None, "/api/x", "api"),
        ("something-unknown/1", None, "/api/x", "api"),
    ],
)
def test_source_from_user_agent_and_headers(
    ua: str | None, headers: dict | None, path: str, expected: str
) -> None:
    assert source_for(ua, headers, path, has_request=True, has_actor=True) == expected


def test_source_is_system_without_request_or_actor() -> None:
    assert source_for(None, None, None, has_request=False, has_actor=False) == "system"
    assert source_for(None, None, None, has_request=False, has_actor=True) == "api"


def test_actor_type() -> None:
    assert actor_type_for(None, None, None, webhook=False) == "system"
    assert actor_type_for("u-1", "Ada", None, webhook=True) == "system"
    assert actor_type_for("u-1", "Ada", "ada@x", webhook=False) == "user"
    assert actor_type_for("tok-ci", "ci", None, webhook=False) == "api_token"
    assert actor_type_for("svc-build", None, None, webhook=False) == "service"
    assert actor_type_for("u-1", None, None, webhook=False) == "user"


def test_is_webhook_header_names_case_insensitive() -> None:
    assert is_webhook({"X-Hub-Signature-256": "sha256=1"}, None)
    assert not is_webhook({"accept": "x"}, "/api/hookshot-settings")
