"""Request and response models: camelCase on the wire, unknown fields rejected."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    StringConstraints,
)
from pydantic.alias_generators import to_camel

from shared.vocabulary import (
    AgentStatus,
    CatchUpPolicy,
    ConcurrencyPolicy,
    IssueStatus,
    Priority,
    RoutineStatus,
    RunSource,
    RunStatus,
    SigningMode,
    TokenKind,
    TriggerKind,
)


def _not_blank(value: str) -> str:
    if not value:
        raise ValueError("must not be blank")
    return value


Title = Annotated[str, StringConstraints(strip_whitespace=True, max_length=200), AfterValidator(_not_blank)]
Name = Title
Label = Annotated[str, StringConstraints(max_length=120)]


# --- documentation ---------------------------------------------------------------------------
# Every field of every model is described, with an example, in the OpenAPI document. A property
# name means the same thing wherever it appears, so the text lives in one glossary keyed by the
# wire name; "Model.name" keys hold the meanings that differ per model. `_document_schema` puts
# them into each model's JSON schema (tests/integration/test_openapi_docs.py checks none is missing).

_ID = "3f1c9a52-8d0e-4b7a-9c61-2a5e4d7b8f10"
_TS = "2026-11-30T09:00:00Z"
_NO_EXAMPLE: Any = object()  # a $ref property: its schema has the examples

FIELD_DOCS: dict[str, tuple[str, Any]] = {
    "id": ("Unique id (UUID) of this object.", _ID),
    "companyId": ("Id of the company the object belongs to.", "0b6e2f3a-1c4d-4e5f-8a9b-7c6d5e4f3a2b"),
    "name": ("Human-readable name, 1-200 characters.", "Acme"),
    "title": ("Short title, 1-200 characters (leading and trailing spaces are removed).", "Daily report"),
    "description": ("Free text, up to 20,000 characters.", "Compile the status report and post it to Slack"),
    "createdAt": ("When the object was created (UTC, ISO 8601).", _TS),
    "updatedAt": ("When the object was last changed (UTC, ISO 8601).", _TS),
    "assigneeAgentId": ("Id of the agent the work is assigned to.", "5a0c1e2d-3f4b-4c5d-9e6f-7a8b9c0d1e2f"),
    "projectId": ("Id of the project (same company).", "7d2e4f6a-8b0c-4d1e-a2f3-b4c5d6e7f809"),
    "goalId": ("Optional id of a goal of the same company.", None),
    "parentIssueId": ("Optional id of an issue (same company) that execution issues are filed under.", None),
    "priority": ("Priority of the work: critical, high, medium or low.", "medium"),
    "concurrencyPolicy": (
        "What a fire does while an execution issue of this routine is still open: coalesce_if_active "
        "(link the run to the open issue), skip_if_active (record the run as skipped) or "
        "always_enqueue (always create a new issue).",
        "coalesce_if_active",
    ),
    "catchUpPolicy": (
        "What happens to schedule slots missed while the system was down: skip_missed or "
        "enqueue_missed_with_cap (enqueue them, up to a cap).",
        "skip_missed",
    ),
    "lastTriggeredAt": ("When any trigger of the routine last fired (null: never).", _TS),
    "lastEnqueuedAt": ("When a fire of the routine last created an execution issue (null: never).", _TS),
    "triggers": ("The routine's triggers (webhook secrets are never included).", []),
    "kind": ("Trigger kind: schedule (cron), webhook (signed public URL) or api (manual runs).", "schedule"),
    "label": ("Optional free label for the trigger, up to 120 characters.", "weekday mornings"),
    "enabled": ("Whether the trigger fires; a disabled trigger keeps its settings.", True),
    "cronExpression": (
        "Five-field cron expression (minute hour day-of-month month day-of-week), evaluated in `timezone`.",
        "0 9 * * 1-5",
    ),
    "timezone": ("IANA time zone the cron expression is evaluated in.", "Europe/Amsterdam"),
    "nextRunAt": ("Next time the schedule fires (UTC; null when disabled or not a schedule).", _TS),
    "lastFiredAt": ("When the trigger last fired (null: never).", _TS),
    "publicId": ("Public identifier in the webhook URL (webhook triggers only).", "wh_8fK2mQ9xLp3Rt7Vb"),
    "signingMode": (
        "How webhook requests prove they come from the secret's holder: bearer, hmac_sha256, "
        "github_hmac or standard_webhooks.",
        "hmac_sha256",
    ),
    "replayWindowSec": (
        "Signed timestamps older than this many seconds are refused as replays (30-86400).",
        300,
    ),
    "webhookUrl": (
        "Full URL to POST fires to (on the webhook gateway).",
        "https://hooks.example.com/api/routine-triggers/public/wh_8fK2mQ9xLp3Rt7Vb/fire",
    ),
    "secret": (
        "The webhook signing secret. Shown only in this answer: store it now.",
        "whsec_EXAMPLE",
    ),
    "graceSec": ("Seconds the previous secret stays valid after rotation (0-86400; 0 = revoke now).", 3600),
    "previousSecretValidUntil": ("Until when the previous secret is still accepted (null: not at all).", _TS),
    "triggerId": ("Id of the trigger involved (null for manual runs without one).", _ID),
    "routineId": ("Id of the routine.", _ID),
    "runId": ("Id of the run recorded for this fire.", _ID),
    "source": ("What fired the run: schedule, webhook, api or manual.", "manual"),
    "payload": ("JSON object passed along with the fire; copied to the execution issue.", {"why": "try it"}),
    "idempotencyKey": (
        "Client-chosen key that makes retries safe: a repeated key returns the first run (200).",
        "deploy-2026-11-30-1",
    ),
    "triggeredAt": ("When the fire was recorded (UTC).", _TS),
    "scheduledFor": ("The schedule slot this run is for (schedule runs only).", _TS),
    "linkedIssueId": ("The execution issue this run created or was coalesced into.", _ID),
    "coalescedIntoRunId": ("The run whose open issue this run was coalesced into.", None),
    "failureReason": ("Why the run failed (status failed only).", None),
    "decidedAt": ("When the dispatcher decided the run (null while received).", _TS),
    "completedAt": ("When the run's execution issue was finished (status completed only).", None),
    "originKind": (
        "Where the issue comes from: manual, or routine_execution (created by a run).",
        "routine_execution",
    ),
    "originId": ("For routine executions: the routine's id.", _ID),
    "originRunId": ("For routine executions: the run that created the issue.", _ID),
    "coalescedFireCount": ("How many further fires were coalesced into this issue.", 0),
    "coalescedFires": ("The coalesced fires (run id, source, time), oldest first.", []),
    "agent": ("The created agent.", _NO_EXAMPLE),
    "apiKey": (
        "The agent's API key. Shown only in this answer: store it now.",
        "rtk_EXAMPLE",
    ),
    "token": ("The board token. Shown only in this answer: store it now.", "rtb_EXAMPLE"),
    "after": ("Compute fires after this instant (default: now).", _TS),
    "count": ("How many fire times to return (1-100).", 5),
    "fires": (
        "The next fire times, in order.",
        [{"utc": _TS, "local": "2026-11-30T10:00:00+01:00", "dst": None}],
    ),
    "utc": ("The fire time in UTC (ISO 8601).", _TS),
    "local": (
        "The same instant in the expression's time zone, with its offset.",
        "2026-11-30T10:00:00+01:00",
    ),
    "duplicate": ("True when an earlier fire with the same delivery id or idempotency key answered.", False),
    "deleted": ("True: the object was deleted.", True),
    "error": ("What went wrong, in one sentence.", "invalid request body"),
    "details": (
        "Specifics, when there are any: for invalid bodies a list of {field, message}.",
        [{"field": "assignee", "message": "unknown field; did you mean assigneeAgentId?"}],
    ),
    "TokenOut.kind": ("Token kind: instance_admin, board or agent.", "board"),
    "TokenOut.name": ("Label given to the token when it was made.", "ops laptop"),
    "revokedAt": ("When the token was revoked (null: still valid).", None),
    "variables": ("The routine's declared variables (name, type, default, required, options).", []),
    "ManualRun.variables": ("Values of the routine's variables for this run.", {"region": "eu"}),
    "ReplayRequest.variables": ("Variable values for the replay (default: the original run's).", {}),
    "failureAlertAfter": ("Alert after this many consecutive failed runs (null: off).", 3),
    "autoPauseAfter": ("Pause the routine after this many consecutive failed runs (null: never).", 5),
    "staleAfterSec": ("An execution issue open longer than this many seconds is stale (null: never).", 86400),
    "staleAction": ("What happens to a stale execution issue: report (health only) or cancel.", "report"),
    "pausedReason": ("Why the routine was paused automatically (null: not auto-paused).", None),
    "revisionId": ("Id of the routine's current revision.", _ID),
    "baseRevisionId": ("The revision this update was based on; a newer one answers 409.", _ID),
    "activeIssue": ("The open execution issue of the routine, if any.", None),
    "recentRuns": ("The latest runs, newest first.", []),
    "replayOf": ("The run this run replays (null: not a replay).", None),
    "inputVariables": ("Variable values given with the fire.", {"region": "eu"}),
    "resolvedVariables": ("Variable values after defaults were applied (null: not resolved yet).", None),
    "assigneeOverride": ("Agent this run was assigned to instead of the routine's (replays).", None),
    "projectOverride": ("Project this run was filed under instead of the routine's (replays).", None),
    "payloadBytes": ("Size of the payload as JSON text, in bytes.", 18),
    "lastResult": ("Outcome of the trigger's last fire.", None),
    "lastRotatedAt": ("When the webhook secret was last rotated (null: never).", None),
    "dst": ("Set on daylight-saving transition days: how the shift moved this fire.", None),
    "wallTime": ("The local time the expression names.", "2027-03-28T02:30"),
    "note": (
        "What daylight saving did to this fire, in words.",
        "02:30 does not exist that day; fired at 03:00",
    ),
    "type": ("Variable type: text, number, boolean, select or date.", "select"),
    "default": ("Value used when a run gives none.", "eu"),
    "required": ("A run without a value (and no default) fails, naming the variable.", False),
    "options": ("The allowed values of a select variable.", ["eu", "us"]),
    "VariableSpec.name": ("Variable name, used as {{name}} in the title and description.", "region"),
    "VariableOut.name": ("Variable name, used as {{name}} in the title and description.", "region"),
    "actorKind": ("Who acted: instance_admin, board, agent or system.", "board"),
    "actorId": ("Id of the acting token's agent or board member (null: the system).", None),
    "action": ("What happened (created, updated, paused, manual_run, run_recorded, ...).", "updated"),
    "at": ("When it happened (UTC).", _TS),
    "number": ("Revision number, 1 for the routine as created, counting up.", 2),
    "snapshot": ("The routine's settings in this revision.", {"title": "Daily report", "priority": "high"}),
    "changes": (
        "What changed from the previous revision: field → {from, to}.",
        {"priority": {"from": "medium", "to": "high"}},
    ),
    "restoredFrom": ("The revision number this one restored (null: a regular change).", None),
    "days": ("Length of the window in days.", 7),
    "from": ("Start of the window (UTC).", _TS),
    "to": ("End of the window (UTC).", _TS),
    "onTimeWithinSec": ("A schedule run counts as on time when recorded within this many seconds.", 60),
    "runsByStatus": ("Number of runs in the window per status.", {"issue_created": 3, "failed": 1}),
    "failureStreak": ("Consecutive failed runs up to now.", 0),
    "alerting": ("True while the failure streak is at or above failureAlertAfter.", False),
    "openIssue": ("The open execution issue, with its age and whether it is stale.", None),
    "lagSeconds": ("Fire lag percentiles of the window's schedule runs.", None),
    "p50": ("Median, in seconds.", 0.4),
    "p90": ("90th percentile, in seconds.", 0.9),
    "p99": ("99th percentile, in seconds.", 1.8),
    "max": ("Largest, in seconds.", 2.5),
    "issueId": ("Id of the issue.", _ID),
    "openedAt": ("When the issue was opened (UTC).", _TS),
    "ageSec": ("How long the issue has been open, in seconds.", 3600.0),
    "stale": ("Open longer than staleAfterSec.", False),
    "HealthOut.triggers": ("Each schedule trigger's slots in the window and what became of them.", []),
    "expectedSlots": ("Slots of the schedule in the window since the trigger existed.", 5),
    "expectedSlotsAtLeast": ("Too many to count: expectedSlots is a lower bound.", False),
    "onTime": ("Schedule runs recorded within the grace of their slot.", 5),
    "late": ("Schedule runs recorded later than the grace (catch-up).", 0),
    "backfilled": ("Slots recorded by a backfill.", 0),
    "missedSkipped": ("Missed slots the catch-up policy dropped.", 0),
    "unaccounted": ("Slots with no run and no explanation (the scheduler was down or behind).", 0),
    "dryRun": ("Only report what would be recorded.", True),
    "maxRuns": ("Record at most this many missing slots.", 100),
    "slots": ("Each slot of the window and its run, if any.", []),
    "missing": ("Slots without a run before this call.", 2),
    "recorded": ("Runs recorded by this call (0 in a dry run).", 0),
    "capped": ("Missing slots left unrecorded because of maxRuns.", 0),
    "existingRunId": ("The run already recorded for this slot (null: none).", None),
    "recordedRunId": ("The run this call recorded for the slot (null: none).", None),
    "predictedOutcome": ("What the fire would do now, by the concurrency policy.", "issue_created"),
    "truncated": ("More fires exist than were returned.", False),
    "UpcomingFire.label": ("The trigger's label.", "weekday mornings"),
    "UpcomingFire.timezone": ("The trigger's time zone.", "Europe/Amsterdam"),
    "UpcomingFire.cronExpression": ("The trigger's cron expression.", "0 9 * * 1-5"),
    "UpcomingFire.local": (
        "The fire time in the trigger's time zone, with offset.",
        "2026-11-30T10:00:00+01:00",
    ),
    "ActivityOut.details": ("Facts of the action (changed fields, run id and outcome, ...).", {"runId": _ID}),
    "UpcomingFire.dst": ("True when a daylight-saving shift moves this fire.", False),
    "UpcomingOut.fires": ("The predicted fires, in time order.", []),
    "status": ("Status of the object.", "active"),
    "AgentUpdate.status": ("New status of the agent: active, paused or terminated.", "paused"),
    "AgentOut.status": ("Agent status: active, paused or terminated.", "active"),
    "IssueCreate.status": ("Initial status of the issue.", "todo"),
    "IssueUpdate.status": ("New status of the issue; done or cancelled finishes its runs.", "done"),
    "IssueOut.status": ("Issue status.", "todo"),
    "RoutineCreate.status": ("Initial status: active (fires) or paused.", "active"),
    "RoutineUpdate.status": ("active <-> paused; archived is terminal.", "paused"),
    "RoutineOut.status": ("Routine status: active, paused or archived.", "active"),
    "RoutineDetail.status": ("Routine status: active, paused or archived.", "active"),
    "RunOut.status": (
        "Run status: received (not decided yet), issue_created, coalesced, skipped, failed or completed.",
        "issue_created",
    ),
    "WebhookAccepted.status": (
        "Status of the recorded run (received until the dispatcher decides).",
        "received",
    ),
    "ManualRun.source": ("Recorded source of the run: manual (default) or api.", "manual"),
    "ManualRun.triggerId": ("Optional api trigger of this routine to record the run under.", None),
    "CronPreviewRequest.timezone": (
        "IANA time zone to evaluate the expression in (default UTC).",
        "Europe/Amsterdam",
    ),
    "TriggerUpdate.kind": ("Must equal the trigger's kind if given (the kind cannot change).", "schedule"),
    "IssueOut.payload": ("The fire's payload, for routine executions.", {"why": "try it"}),
}

MODEL_DOCS = {
    "CompanyCreate": "A new company.",
    "AgentCreate": "A new agent; its API key is returned once.",
    "AgentUpdate": "A change of an agent's status.",
    "ProjectCreate": "A new project.",
    "GoalCreate": "A new goal.",
    "BoardTokenCreate": "A new board operator token.",
    "IssueCreate": "A new plain issue.",
    "IssueUpdate": "A change of an issue's status.",
    "RoutineCreate": "A new routine: one agent, one project, policies.",
    "RoutineUpdate": "Fields to change; absent fields stay as they are.",
    "TriggerCreate": "A new trigger. schedule needs cronExpression and timezone; webhook needs signingMode.",
    "TriggerUpdate": "Trigger fields to change; absent fields stay as they are.",
    "RotateSecret": "Rotation of a webhook secret, with an optional grace period for the old one.",
    "ManualRun": "A manual run of a routine.",
    "CronPreviewRequest": "A cron expression and time zone to preview.",
    "ErrorOut": "Every error answer (4xx, 5xx) has this shape.",
    "CompanyOut": "A company.",
    "AgentOut": "An agent.",
    "AgentCreated": "A created agent with its API key (shown once).",
    "ProjectOut": "A project.",
    "GoalOut": "A goal.",
    "BoardTokenOut": "A created board token (shown once).",
    "IssueOut": "An issue; routine executions carry their origin and payload.",
    "TriggerOut": "A trigger (never its secret).",
    "TriggerWithSecret": "A created webhook trigger with its secret (shown once).",
    "RotatedSecret": "The new webhook secret (shown once).",
    "RoutineOut": "A routine.",
    "RoutineDetail": "A routine with its triggers.",
    "RunOut": "A run: one fire of a routine and what was decided for it.",
    "CronFire": "One fire time.",
    "CronPreviewOut": "The next fire times of a cron expression.",
    "WebhookAccepted": "A fire accepted by the webhook gateway (recorded in Postgres before this answer).",
    "OpenIssueHealth": "The routine's open execution issue: its age and whether it is stale.",
    "VariableOut": "A declared variable of a routine.",
}


def document_schema(schema: dict[str, Any], model_name: str) -> None:
    """Fill in description and example of a model's JSON schema and of every property from the
    glossary (descriptions given in `Field(...)` win); drop auto titles like "Cronexpression"."""
    if not schema.get("description"):
        schema["description"] = MODEL_DOCS.get(model_name, "")
    for name, prop in schema.get("properties", {}).items():
        prop.pop("title", None)
        doc = FIELD_DOCS.get(f"{model_name}.{name}") or FIELD_DOCS.get(name)
        if doc is not None:
            text, example = doc
            prop.setdefault("description", text)
            if example is not _NO_EXAMPLE and "$ref" not in prop:
                prop.setdefault("examples", [example])
        if "$ref" not in prop and "examples" not in prop:
            prop["examples"] = [_example_of_type(prop)]


def _example_of_type(prop: dict[str, Any]) -> Any:
    """A valid example for a property the glossary has none for, from its type."""
    for branch in prop.get("anyOf", []):
        if branch.get("type") != "null" and "$ref" not in branch:
            return _example_of_type(branch)
    if "anyOf" in prop:
        return None
    if "enum" in prop:
        return prop["enum"][0]
    kind, fmt = prop.get("type"), prop.get("format")
    if fmt == "uuid":
        return _ID
    if fmt == "date-time":
        return _TS
    examples = {"boolean": False, "integer": prop.get("minimum", 1), "number": prop.get("minimum", 1.0)}
    if kind in examples:
        return examples[kind]
    if kind == "array":
        return []
    if kind == "object":
        return {}
    return "text" if kind == "string" else None


class Input(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=False, extra="forbid")


class Output(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, serialize_by_alias=True)


# --- requests ------------------------------------------------------------------------------


class CompanyCreate(Input):
    name: Name


class AgentCreate(Input):
    name: Name


class AgentUpdate(Input):
    status: AgentStatus


class ProjectCreate(Input):
    name: Name


class GoalCreate(Input):
    title: Title


class BoardTokenCreate(Input):
    name: Name


class TokenOut(Output):
    """A bearer token's record; the token itself is shown only when it is made."""

    id: uuid.UUID
    kind: TokenKind
    name: str
    company_id: uuid.UUID | None
    created_at: datetime
    revoked_at: datetime | None


class IssueCreate(Input):
    title: Title
    description: str | None = Field(None, max_length=20_000)
    status: IssueStatus = "todo"
    priority: Priority = "medium"
    project_id: uuid.UUID | None = None
    goal_id: uuid.UUID | None = None
    parent_issue_id: uuid.UUID | None = None
    assignee_agent_id: uuid.UUID | None = None


class IssueUpdate(Input):
    status: IssueStatus


# --- routine features (issue 16) -----------------------------------------------------------

VariableType = Literal["text", "number", "boolean", "select", "date"]
VariableValue = StrictStr | StrictInt | StrictFloat | StrictBool
StaleAction = Literal["report", "cancel"]


class VariableSpec(Input):
    """A routine variable; `{{name}}` in the title or description is replaced by its value."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"name": "region", "type": "select", "options": ["eu", "us"], "default": "eu"},
                {"name": "ticket", "type": "text", "required": True},
            ]
        }
    )

    name: Annotated[str, StringConstraints(min_length=1, max_length=64)] = Field(
        description="Letters, digits and `_`, not starting with a digit."
    )
    type: VariableType
    default: VariableValue | None = Field(None, description="Used when the run gives no value.")
    required: bool = Field(False, description="A run without a value (and no default) fails, naming it.")
    options: list[Annotated[str, StringConstraints(max_length=200)]] | None = Field(
        None, max_length=100, description="The allowed values of a `select` variable."
    )


class VariableOut(Output):
    name: str
    type: VariableType
    default: Any = None
    required: bool = False
    options: list[str] | None = None


class RoutineFeatureFields(Input):
    """Settings of the routine features, accepted on create and update."""

    variables: list[VariableSpec] | None = Field(None, max_length=50, description="Declared variables.")
    failure_alert_after: int | None = Field(
        None, ge=1, le=1000, description="Alert after this many consecutive failed runs (off when null)."
    )
    auto_pause_after: int | None = Field(
        None, ge=1, le=1000, description="Pause the routine after this many consecutive failed runs."
    )
    stale_after_sec: int | None = Field(
        None, ge=60, le=31_536_000, description="An execution issue open longer than this is stale."
    )
    stale_action: StaleAction | None = Field(
        None, description="`report` (health only) or `cancel` (close it; its run fails with a reason)."
    )


class RoutineCreate(RoutineFeatureFields):
    title: Title
    description: str | None = Field(None, max_length=20_000)
    assignee_agent_id: uuid.UUID
    project_id: uuid.UUID
    goal_id: uuid.UUID | None = None
    parent_issue_id: uuid.UUID | None = None
    priority: Priority = "medium"
    status: RoutineStatus = "active"
    concurrency_policy: ConcurrencyPolicy = "coalesce_if_active"
    catch_up_policy: CatchUpPolicy = "skip_missed"


class RoutineUpdate(RoutineFeatureFields):
    title: Title | None = None
    description: str | None = Field(None, max_length=20_000)
    assignee_agent_id: uuid.UUID | None = None
    project_id: uuid.UUID | None = None
    goal_id: uuid.UUID | None = None
    parent_issue_id: uuid.UUID | None = None
    priority: Priority | None = None
    status: RoutineStatus | None = None
    concurrency_policy: ConcurrencyPolicy | None = None
    catch_up_policy: CatchUpPolicy | None = None
    base_revision_id: uuid.UUID | None = Field(
        None, description="The revision this edit is based on; 409 if the routine changed since."
    )


class TriggerCreate(Input):
    kind: TriggerKind
    label: Label | None = None
    enabled: bool = True
    cron_expression: Annotated[str, StringConstraints(max_length=200)] | None = None
    timezone: Annotated[str, StringConstraints(max_length=64)] | None = None
    signing_mode: SigningMode | None = None
    replay_window_sec: int | None = Field(None, ge=30, le=86400)


class TriggerUpdate(Input):
    kind: TriggerKind | None = None
    label: Label | None = None
    enabled: bool | None = None
    cron_expression: Annotated[str, StringConstraints(max_length=200)] | None = None
    timezone: Annotated[str, StringConstraints(max_length=64)] | None = None
    signing_mode: SigningMode | None = None
    replay_window_sec: int | None = Field(None, ge=30, le=86400)


class RotateSecret(Input):
    grace_sec: int = Field(0, ge=0, le=86400)


class ManualRun(Input):
    source: Literal["manual", "api"] = "manual"
    trigger_id: uuid.UUID | None = None
    payload: dict[str, Any] = Field(default_factory=dict)
    variables: dict[str, VariableValue | None] = Field(
        default_factory=dict, max_length=50, description="Values of the routine's variables for this run."
    )
    assignee_agent_id: uuid.UUID | None = Field(
        None, description="Board operators only: assign this run's execution issue to another agent."
    )
    project_id: uuid.UUID | None = Field(
        None, description="Board operators only: file this run's execution issue in another project."
    )
    idempotency_key: Annotated[str, StringConstraints(min_length=1, max_length=255)] | None = None


class CronPreviewRequest(Input):
    cron_expression: Annotated[str, StringConstraints(max_length=200)]
    timezone: Annotated[str, StringConstraints(max_length=64)] = "UTC"
    after: datetime | None = None
    count: int = Field(5, ge=1, le=100)


# --- responses -----------------------------------------------------------------------------


class ErrorOut(Output):
    error: str
    details: Any = None


class CompanyOut(Output):
    id: uuid.UUID
    name: str
    created_at: datetime


class AgentOut(Output):
    id: uuid.UUID
    company_id: uuid.UUID
    name: str
    status: AgentStatus
    created_at: datetime


class AgentCreated(Output):
    agent: AgentOut
    api_key: str


class ProjectOut(Output):
    id: uuid.UUID
    company_id: uuid.UUID
    name: str
    created_at: datetime


class GoalOut(Output):
    id: uuid.UUID
    company_id: uuid.UUID
    title: str
    created_at: datetime


class BoardTokenOut(Output):
    id: uuid.UUID
    company_id: uuid.UUID
    name: str
    token: str


class CoalescedFireOut(Output):
    """A reference to a fire coalesced into an issue; its payload is read from the run."""

    run_id: uuid.UUID
    source: RunSource
    triggered_at: str
    payload_bytes: int | None = None


class IssueOut(Output):
    id: uuid.UUID
    company_id: uuid.UUID
    title: str
    description: str | None
    status: IssueStatus
    priority: Priority
    project_id: uuid.UUID | None
    goal_id: uuid.UUID | None
    parent_issue_id: uuid.UUID | None
    assignee_agent_id: uuid.UUID | None
    origin_kind: Literal["manual", "routine_execution"]
    origin_id: uuid.UUID | None
    origin_run_id: uuid.UUID | None
    payload: dict[str, Any] | None = Field(
        description="The run payload; null in a list when larger than the list limit (see payloadBytes)"
    )
    payload_bytes: int | None = Field(None, description="Size of the payload as JSON text")
    coalesced_fire_count: int
    coalesced_fires: list[CoalescedFireOut]
    created_at: datetime
    updated_at: datetime


class TriggerOut(Output):
    id: uuid.UUID
    routine_id: uuid.UUID
    kind: TriggerKind
    label: str | None
    enabled: bool
    cron_expression: str | None = None
    timezone: str | None = None
    description: str | None = Field(
        None, description="A schedule in words with its zone, e.g. 'At 09:00, Monday through Friday (UTC)'"
    )
    next_run_at: datetime | None = None
    last_fired_at: datetime | None = None
    public_id: str | None = None
    signing_mode: SigningMode | None = None
    replay_window_sec: int | None = None
    webhook_url: str | None = None
    created_at: datetime
    updated_at: datetime
    last_result: RunStatus | None = Field(None, description="Status of this trigger's latest run.")
    last_rotated_at: datetime | None = Field(None, description="When the webhook secret was last rotated.")


class TriggerWithSecret(TriggerOut):
    secret: str | None = None


class RotatedSecret(Output):
    trigger_id: uuid.UUID
    secret: str
    previous_secret_valid_until: datetime | None


class RoutineOut(Output):
    id: uuid.UUID
    company_id: uuid.UUID
    title: str
    description: str | None
    assignee_agent_id: uuid.UUID
    project_id: uuid.UUID
    goal_id: uuid.UUID | None
    parent_issue_id: uuid.UUID | None
    priority: Priority
    status: RoutineStatus
    concurrency_policy: ConcurrencyPolicy
    catch_up_policy: CatchUpPolicy
    last_triggered_at: datetime | None
    last_enqueued_at: datetime | None
    created_at: datetime
    updated_at: datetime
    variables: list[VariableOut] = Field(default_factory=list)
    failure_alert_after: int | None = None
    auto_pause_after: int | None = None
    stale_after_sec: int | None = None
    stale_action: StaleAction = "report"
    paused_reason: str | None = None
    revision_id: uuid.UUID | None = Field(None, description="The current revision (for baseRevisionId).")


class ActiveIssueOut(Output):
    """The routine's open execution issue."""

    id: uuid.UUID
    title: str
    status: IssueStatus
    created_at: datetime
    origin_run_id: uuid.UUID | None
    coalesced_fire_count: int


class RoutineDetail(RoutineOut):
    triggers: list[TriggerOut]
    active_issue: ActiveIssueOut | None = Field(None, description="The open execution issue, if any.")
    recent_runs: list[RunOut] = Field(default_factory=list, description="The latest runs, newest first.")


class RunOut(Output):
    id: uuid.UUID
    routine_id: uuid.UUID
    company_id: uuid.UUID
    trigger_id: uuid.UUID | None
    source: RunSource
    status: RunStatus
    triggered_at: datetime
    scheduled_for: datetime | None
    payload: dict[str, Any] | None = Field(
        description="The run payload; null in a list when larger than the list limit (see payloadBytes)"
    )
    payload_bytes: int | None = Field(None, description="Size of the payload as JSON text")
    idempotency_key: str | None
    linked_issue_id: uuid.UUID | None
    coalesced_into_run_id: uuid.UUID | None
    failure_reason: str | None
    decided_at: datetime | None
    completed_at: datetime | None
    # Routine features (issue 16); see feature_models.py.
    replay_of: uuid.UUID | None = None
    input_variables: dict[str, Any] = Field(default_factory=dict)
    resolved_variables: dict[str, Any] | None = None
    assignee_override: uuid.UUID | None = None
    project_override: uuid.UUID | None = None


class DstShift(Output):
    """How daylight saving moved a fire: its cron wall time and what happened to it."""

    kind: Literal["shifted_out_of_gap", "first_of_repeated", "second_of_repeated"]
    wall_time: str = Field(description="The local time the expression names, e.g. 2027-03-28T02:30")
    note: str


class CronFire(Output):
    utc: str
    local: str
    dst: DstShift | None = Field(description="Set on transition days: how daylight saving moved this fire")


class CronPreviewOut(Output):
    cron_expression: str
    timezone: str
    description: str = Field(description="The schedule in words with its zone")
    fires: list[CronFire]


class WebhookAccepted(Output):
    run_id: uuid.UUID
    status: RunStatus
    routine_id: uuid.UUID
    trigger_id: uuid.UUID | None
    duplicate: bool = False


class WakeupEvent(Output):
    """The data of one `wakeup` Server-Sent Event (an `agents.{agentId}.wakeup` message)."""

    routine_id: uuid.UUID
    reason: Literal["issue_created", "run_coalesced", "routine_failing"] = Field(
        description="Why the agent is woken: an execution issue was created, fires were coalesced"
        " into its open issue, or a failure alert."
    )
    issue_id: uuid.UUID | None = Field(
        None, description="The issue to work on: the last of issueIds on issue_created (not on an alert)."
    )
    run_id: uuid.UUID | None = Field(None, description="The last of runIds (not on an alert).")
    run_ids: list[uuid.UUID] | None = Field(
        None,
        max_length=100,
        description="The runs this wake-up is about, oldest first, up to 100: the runs whose issues"
        " one decision created one after the other for this agent and routine (issue_created), or"
        " the fires one decision coalesced into the open issue (run_coalesced). Not on an alert.",
    )
    issue_ids: list[uuid.UUID] | None = Field(
        None,
        max_length=100,
        description="Only on issue_created: the issue each run of runIds created, in the same order.",
    )
    alert: Literal["routine_failing", "routine_auto_paused"] | None = Field(
        None, description="Only on reason routine_failing."
    )
