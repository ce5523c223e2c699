"""The fleet's outcomes and job leases in Redis: each step of the protocol
(:mod:`worker.coordination.outcomes`) is one Lua script, so two workers never see a job half
claimed or half finished.

Keys per job (:mod:`contract.keys`): ``outcome`` (the result's JSON), ``answered`` (``lasting``
or ``passing`` once the result is published) and ``lease`` (the holder's id, short expiry).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import redis
from redis.commands.core import Script

from contract import keys
from contract.results import Result
from worker.coordination.outcomes import OUTCOME_TTL_S, Claim
from worker.coordination.pipelining import PipelinedCommands, script_call
from worker.coordination.renewal import HeldLease, LeaseRenewer
from worker.coordination.translation import translated

# KEYS: outcome, lease, answered. ARGV: holder, lease_ms, copy (0/1).
# Returns {0, pttl}: held by another; {1}: the lease is ARGV[1]'s, run the job; {2}: a copy of a
# job answered already; {3, outcome}: a lasting outcome to publish again (no lease taken);
# {4, outcome}: an outcome never published, to publish under the lease now ARGV[1]'s.
_CLAIM = """
local current = redis.call('GET', KEYS[2])
if current and current ~= ARGV[1] then return {0, redis.call('PTTL', KEYS[2])} end
local outcome = redis.call('GET', KEYS[1])
local answered = redis.call('GET', KEYS[3])
if outcome and answered then
  if ARGV[3] == '1' then return {2} end
  if answered == 'lasting' then return {3, outcome} end
  redis.call('DEL', KEYS[1], KEYS[3])
  outcome = false
end
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
if outcome then return {4, outcome} end
return {1}
"""

# KEYS: outcome, lease, answered. ARGV: holder, lease_ms, result JSON, outcome TTL in s.
# Keeps the outcome unless another holder has the lease (0); takes a lapsed lease back.
_RECORD = """
local current = redis.call('GET', KEYS[2])
if current and current ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[3], 'EX', ARGV[4])
redis.call('DEL', KEYS[3])
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
return 1
"""

# KEYS: lease, answered. ARGV: holder, 'lasting' or 'passing', outcome TTL in s.
_FINISH = """
redis.call('SET', KEYS[2], ARGV[2], 'EX', ARGV[3])
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1
"""

# KEYS: lease. ARGV: holder. Gives the lease back unless another holder has it.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1
"""


class RedisOutcomeStore:
    """Fleet-wide records and leases in Redis; leases renewed by ``renewer`` while held."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        renewer: LeaseRenewer | None = None,
        commands: PipelinedCommands | None = None,
    ) -> None:
        self._redis = client
        self._renewer = renewer
        #: Pipelines the scripts with other jobs' commands (None: each its own round trip).
        self._commands = commands
        self._claim = client.register_script(_CLAIM)
        self._record = client.register_script(_RECORD)
        self._finish = client.register_script(_FINISH)
        self._release = client.register_script(_RELEASE)

    def recorded(self, job_id: str) -> Result | None:
        with translated():
            raw = self._redis.get(keys.outcome(job_id))
        return None if raw is None else Result.model_validate_json(raw)

    def claim(self, job_id: str, holder: str, lease_s: float, *, copy: bool = False) -> Claim:
        asked_at = time.monotonic()  # the lease runs from no later than this
        answer = self._run(self._claim, _job_keys(job_id), [holder, _ms(lease_s), int(copy)])
        kind = int(answer[0])
        if kind == 0:
            pttl_ms = int(answer[1])
            return Claim(held_for_s=pttl_ms / 1000 if pttl_ms > 0 else lease_s)
        if kind == 2:
            return Claim(answered=True)
        if kind == 3:
            return Claim(recorded=Result.model_validate_json(answer[1]))
        if self._renewer is not None:
            self._renewer.hold(HeldLease(keys.lease(job_id), holder, lease_s, taken_at=asked_at))
        recorded = Result.model_validate_json(answer[1]) if kind == 4 else None
        return Claim(granted=True, recorded=recorded)

    def record(self, result: Result, holder: str, lease_s: float) -> bool:
        args: list[str | int | float] = [holder, _ms(lease_s), result.to_json(), OUTCOME_TTL_S]
        return bool(self._run(self._record, _job_keys(result.job_id), args))

    def finish(self, job_id: str, holder: str, *, lasting: bool) -> None:
        self._forget(job_id, holder)
        kind = "lasting" if lasting else "passing"
        self._run(
            self._finish, [keys.lease(job_id), keys.answered(job_id)], [holder, kind, OUTCOME_TTL_S]
        )

    def release(self, job_id: str, holder: str) -> None:
        self._forget(job_id, holder)
        command = script_call(self._release, [keys.lease(job_id)], [holder])
        if self._commands is not None:
            # Off the job's path: a lease not given back lapses by itself within its lease time.
            self._commands.send(command)
            return
        with translated():
            self._release(keys=[keys.lease(job_id)], args=[holder])

    def lease_left_s(self, job_id: str, holder: str) -> float | None:
        if self._renewer is None:
            return math.inf
        return self._renewer.left_s(HeldLease(keys.lease(job_id), holder, 0.0))

    def _forget(self, job_id: str, holder: str) -> None:
        # Before Redis: a renewal under way must not bring the lease back.
        if self._renewer is not None:
            self._renewer.drop(HeldLease(keys.lease(job_id), holder, 0.0))

    def _run(
        self, script: Script, script_keys: list[str], args: Sequence[str | int | float]
    ) -> Any:
        with translated():
            if self._commands is None:
                return script(keys=script_keys, args=args)
            return self._commands.call(script_call(script, script_keys, args))


def _job_keys(job_id: str) -> list[str]:
    return [keys.outcome(job_id), keys.lease(job_id), keys.answered(job_id)]


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))
