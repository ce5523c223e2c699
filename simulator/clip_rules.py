"""The clip rules as the simulator answers them: the shared rules of `contract.clip_rules`
(CometAPI's figures) and the `data.status` value each broken rule answers with.

Kling does not document its `data.status` values, so ours are our own, one per rule, stable and
documented in docs/simulator.md.
"""

from __future__ import annotations

from dataclasses import dataclass

from contract.clip_rules import COMETAPI_RULES, BrokenRule, ClipFacts, RuleName
from contract.clip_rules import check_clip as broken_rule

__all__ = ["RULE_STATUS", "STATUS_OK", "ClipFacts", "Rejection", "check_clip", "reject"]

#: `data.status` of an accepted clip.
STATUS_OK = 0
#: `data.status` per broken rule (`container` also covers "not a video at all").
RULE_STATUS: dict[RuleName, int] = {"container": 1, "duration": 2, "dimensions": 3, "fps": 4}


@dataclass(frozen=True, slots=True)
class Rejection:
    """A broken clip rule: the `data.status` to answer and a message naming the rule."""

    rule: RuleName
    status: int
    message: str


def reject(broken: BrokenRule) -> Rejection:
    """The answer to a broken rule."""
    return Rejection(broken.rule, RULE_STATUS[broken.rule], broken.message)


def check_clip(facts: ClipFacts) -> Rejection | None:
    """The first rule `facts` breaks, in the order container, duration, dimensions, fps."""
    broken = broken_rule(facts, COMETAPI_RULES)
    return None if broken is None else reject(broken)
