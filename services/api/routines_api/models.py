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

Priority = Literal["critical", "high", "medium", "low"]
RoutineStatus = Literal["active", "paused", "archived"]
ConcurrencyPolicy = Literal["coalesce_if_active", "skip_if_active", "always_enqueue"]
CatchUpPolicy = Literal["skip_missed", "enqueue_missed_with_cap"]
SigningMode = Literal["bearer", "hmac_sha256", "github_hmac", "standard_webhooks"]
IssueStatus = Literal["backlog", "todo", "in_progress", "in_review", "blocked", "done", "cancelled"]
AgentStatus = Literal["active", "paused", "terminated"]
RunSource = Literal["schedule", "webhook", "api", "manual", "replay", "backfill"]
RunStatus = Literal["received", "issue_created", "coalesced", "skipped", "failed", "completed"]


def _not_blank(value: str) -> str:
    if not value:
        raise ValueError("must not be blank")
    return value


Title = Annotated[str, StringConstraints(strip_whitespace=True, max_length=200), AfterValidator(_not_blank)]
Name = Title
Label = Annotated[str, StringConstraints(max_length=120)]


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
    kind: Literal["instance_admin", "board", "agent"]
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
    kind: Literal["schedule", "webhook", "api"]
    label: Label | None = None
    enabled: bool = True
    cron_expression: Annotated[str, StringConstraints(max_length=200)] | None = None
    timezone: Annotated[str, StringConstraints(max_length=64)] | None = None
    signing_mode: SigningMode | None = None
    replay_window_sec: int | None = Field(None, ge=30, le=86400)


class TriggerUpdate(Input):
    kind: Literal["schedule", "webhook", "api"] | None = None
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
    kind: Literal["schedule", "webhook", "api"]
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


class DeletedOut(Output):
    deleted: bool
