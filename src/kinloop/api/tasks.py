"""The /v1/program/tasks endpoints (admin only): what members do with the program's tasks."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel

from kinloop.api.deps import Admin, ReadConn, program_of
from kinloop.domain.errors import NotFound
from kinloop.services import growth_badges

router = APIRouter(prefix="/v1/program/tasks")


class TaskStat(BaseModel):
    task: str
    name: str
    period: str
    completions: int


@router.get("/stats", response_model=list[TaskStat], summary="Task completions per task and period")
def task_stats(
    who: Admin, conn: ReadConn, task: Annotated[str | None, Query(max_length=64, pattern=r"^[a-z][a-z0-9_]*$")] = None
) -> Any:
    """Periods are `d2026-02-10`, `w2026-07`, `m2026-02`, or `all` for one-off tasks; newest first."""
    loaded = program_of(conn, who)
    if task is not None and task not in {t.key for t in loaded.program.tasks}:
        raise NotFound(f"no task {task!r} in this program", field="task")
    return growth_badges.task_stats(conn, loaded, task=task)
