"""A company set up through the typed client against running services, as the toolkit and
console tests need it: an instance admin, one agent (with its API key) and one project."""

from __future__ import annotations

from dataclasses import dataclass

from routines_client import AsyncRoutinesClient
from shared.bootstrap import create_instance_admin_token
from tests.support import ServiceProcess


@dataclass
class Tenant:
    api: ServiceProcess
    gateway: ServiceProcess
    admin: str
    company_id: str
    project_id: str
    agent_id: str
    agent_key: str


async def create_tenant(
    database_url: str,
    api: ServiceProcess,
    gateway: ServiceProcess,
    *,
    company: str,
    agent: str,
    project: str,
) -> Tenant:
    """Mint an instance-admin token, and with it make the company, its agent and its project
    (named as given) through the API."""
    admin = await create_instance_admin_token(database_url, f"{company} admin")
    async with AsyncRoutinesClient(api.url, admin) as client:
        made_company = await client.create_company({"name": company})
        made_agent = await client.create_agent(made_company.id, {"name": agent})
        made_project = await client.create_project(made_company.id, {"name": project})
    return Tenant(
        api,
        gateway,
        admin,
        str(made_company.id),
        str(made_project.id),
        str(made_agent.agent.id),
        made_agent.api_key,
    )
