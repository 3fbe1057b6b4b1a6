"""Stories: a project file of shots -> retrieve, depth, generate (cached, resumable) -> one stitched video."""

from aas_core.story.assembly import Take, assemble, assemble_takes
from aas_core.story.draft import draft_story
from aas_core.story.outcome import SHOT_STATUSES, ShotOutcome, StoryRun, read_run
from aas_core.story.planner import PLANNERS, PlanResult, plan_from_text, save_plan
from aas_core.story.runner import ShotPlan, StoryPlan, default_out_dir, execute_plan, plan_story, run_story
from aas_core.story.schema import (
    MAX_SHOTS,
    SCHEMA_VERSION,
    Character,
    ClipRef,
    Defaults,
    DepthSettings,
    GenerateSettings,
    Output,
    Shot,
    Story,
    dump_story,
    load_story,
    parse_story,
    save_story,
)
from aas_core.story.shot import ShotRequest, ShotRun, run_shot

__all__ = [
    "MAX_SHOTS",
    "PLANNERS",
    "PlanResult",
    "SCHEMA_VERSION",
    "SHOT_STATUSES",
    "Character",
    "ClipRef",
    "Defaults",
    "DepthSettings",
    "GenerateSettings",
    "Output",
    "Shot",
    "ShotOutcome",
    "ShotPlan",
    "ShotRequest",
    "ShotRun",
    "Story",
    "StoryPlan",
    "StoryRun",
    "Take",
    "assemble",
    "assemble_takes",
    "default_out_dir",
    "draft_story",
    "dump_story",
    "execute_plan",
    "load_story",
    "parse_story",
    "plan_from_text",
    "plan_story",
    "read_run",
    "run_shot",
    "run_story",
    "save_plan",
    "save_story",
]
