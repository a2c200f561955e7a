"""Classification: event_type from the action's verb, actor type, source (tool), target type.

Values the producer supplied always win; these rules only fill what is missing.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

# verb -> event_type. Verbs are lower-cased; multi-word verbs (``audit_config_update``) are looked up
# whole, then word by word from the right (``update``).
EVENT_TYPES: dict[str, str] = {
    **dict.fromkeys(
        [
            "create",
            "add",
            "new",
            "register",
            "import",
            "invite",
            "install",
            "link",
            "connect",
            "activate",
            "provision",
            "clone",
            "copy",
            "upload",
            "generate",
            "issue",
        ],
        "create",
    ),
    **dict.fromkeys(
        [
            "update",
            "edit",
            "modify",
            "change",
            "set",
            "patch",
            "rename",
            "move",
            "enable",
            "disable",
            "configure",
            "scale",
            "scale_up",
            "scale_down",
            "assign",
            "unassign",
            "grant",
            "rotate",
            "reset",
            "archive",
            "restore",
            "promote",
            "approve",
            "reject",
            "lock",
            "unlock",
            "transfer",
        ],
        "update",
    ),
    **dict.fromkeys(
        [
            "delete",
            "remove",
            "destroy",
            "purge",
            "unlink",
            "disconnect",
            "uninstall",
            "revoke",
            "deactivate",
            "unregister",
            "expire",
        ],
        "delete",
    ),
    **dict.fromkeys(
        [
            "trigger",
            "deploy",
            "redeploy",
            "run",
            "execute",
            "start",
            "queue",
            "retry",
            "rerun",
            "build",
            "scan",
            "sync",
            "push",
            "publish",
            "release",
        ],
        "trigger",
    ),
    **dict.fromkeys(["cancel", "abort", "stop", "terminate", "kill"], "cancel"),
    **dict.fromkeys(["rollback", "revert", "undo"], "rollback"),
    **dict.fromkeys(["login", "signin", "sign_in", "logon", "authenticate", "sso_login"], "login"),
    **dict.fromkeys(["logout", "signout", "sign_out", "logoff"], "logout"),
    **dict.fromkeys(
        [
            "access",
            "read",
            "view",
            "get",
            "list",
            "export",
            "download",
            "reveal",
            "show",
            "search",
            "query",
            "impersonate",
        ],
        "access",
    ),
}
OTHER = "other"


def split_action(action: str) -> tuple[str, str]:
    """``entity:verb`` -> (entity, verb); the entity keeps its namespace (``org/team``)."""
    entity, _, verb = action.rpartition(":")
    return entity, verb


def event_type_for(action: str) -> str:
    _, verb = split_action(action)
    v = verb.lower().replace("-", "_")
    if v in EVENT_TYPES:
        return EVENT_TYPES[v]
    words = [w for w in re.split(r"[_.]", v) if w]
    for w in reversed(words):
        if w in EVENT_TYPES:
            return EVENT_TYPES[w]
    return OTHER


def target_type_for(action: str) -> str:
    entity, _ = split_action(action)
    return entity.rsplit("/", 1)[-1].rsplit(".", 1)[-1] or entity


# Headers that mark a call made by a webhook delivery (lower-case names).
WEBHOOK_HEADERS = (
    "x-github-event",
    "x-github-delivery",
    "x-gitlab-event",
    "x-gitea-event",
    "x-event-key",  # Bitbucket
    "x-hub-signature",
    "x-hub-signature-256",
    "x-webhook-id",
    "x-webhook-signature",
    "stripe-signature",
    "x-slack-signature",
)
_TERRAFORM = re.compile(r"(?i)\bterraform\b|terraform-provider|\bopentofu\b|\bpulumi\b")
_GIT = re.compile(r"(?i)^(?:git|jgit|libgit2|go-git)/")
_CLI = re.compile(
    r"(?i)(?:^|[\s/(;-])cli(?:[/\s);-]|$)|^[\w.-]+-cli/|^[\w.-]+cli/|\bkubectl/|\bhelm/|\baws-cli/|\bgcloud"
)
_API_CLIENT = re.compile(
    r"(?i)^(?:curl|wget|httpie|python-requests|python-httpx|python-urllib|aiohttp|go-http-client|okhttp|"
    r"axios|node-fetch|undici|postmanruntime|insomnia|java|apache-httpclient|ruby|faraday|rest-client|"
    r"powershell|dotnet|restsharp|guzzlehttp)\b"
)
_BROWSER = re.compile(r"^Mozilla/\d")


def is_webhook(headers: Mapping[str, str] | None, path: str | None) -> bool:
    h = {k.lower() for k in (headers or {})}
    if any(w in h for w in WEBHOOK_HEADERS):
        return True
    return bool(path and re.search(r"(?i)/(?:web)?hooks?/", path))


def source_for(
    user_agent: str | None,
    headers: Mapping[str, str] | None,
    path: str | None,
    has_request: bool,
    has_actor: bool,
) -> str:
    """The tool that made the call: webhook, git, terraform, cli, console, api or system."""
    if is_webhook(headers, path):
        return "webhook"
    ua = (user_agent or "").strip()
    if _GIT.search(ua) or (path and re.search(r"(?:git-receive-pack|git-upload-pack)$", path)):
        return "git"
    if _TERRAFORM.search(ua):
        return "terraform"
    if _CLI.search(ua):
        return "cli"
    if _BROWSER.search(ua) or (headers or {}).get("x-requested-with", "").lower() == "xmlhttprequest":
        return "console"
    if _API_CLIENT.search(ua):
        return "api"
    if not has_request and not has_actor:
        return "system"
    return "api"


def actor_type_for(
    actor_id: str | None, actor_name: str | None, actor_email: str | None, webhook: bool
) -> str:
    """``system`` when no person or token initiated the call (no actor at all, or webhook-triggered)."""
    if webhook or not (actor_id or actor_name or actor_email):
        return "system"
    if actor_email:
        return "user"
    ident = (actor_id or "").lower()
    if re.match(r"^(?:tok|token|pat|apikey|api[-_]key)[-_:]", ident):
        return "api_token"
    if re.match(r"^(?:svc|service|sa|bot|app)[-_:]", ident):
        return "service"
    return "user"
