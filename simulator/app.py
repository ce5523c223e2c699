"""The aiohttp application: the init-selection endpoint (both paths) and the `/_sim` admin API.

A call goes through the same stages as at CometAPI/Kling: the gateway (where scripted or random
gateway faults, HTML pages and dropped connections happen), authentication (which names the
account), the account's resource pack and parallel-task limit, then the request rules and the
clip itself.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from contract.clip_rules import ClipFacts, not_a_video
from simulator import answers
from simulator.accounts import AccountBook, AccountConfigError, AccountState, SimAccount
from simulator.clip_probe import DownloadError
from simulator.clip_rules import Rejection, check_clip, reject
from simulator.config import SimulatorConfig
from simulator.faults import Action, FaultConfig, FaultConfigError, FaultPlan
from simulator.prober import Prober
from simulator.samples import sample_clip_path
from simulator.stats import Stats
from simulator.validation import InitSelection, RequestRejected, decode_json, parse_body
from simulator.videos import KnownVideo, VideoError, VideoRegistry

#: The endpoint, on Kling directly and behind CometAPI's `/kling` prefix.
API_PATHS = (
    "/v1/videos/multi-elements/init-selection",
    "/kling/v1/videos/multi-elements/init-selection",
)
#: How many sessions `/_sim/normalized/...` remembers.
MAX_SESSIONS = 10_000


class SimState:
    """Everything the handlers share; lives on the app, touched only from its event loop."""

    def __init__(self, config: SimulatorConfig) -> None:
        self.config = config
        self.plan = FaultPlan(config.faults)
        self.stats = Stats()
        self.videos = VideoRegistry.from_file(config.videos_path)
        self.prober = Prober()
        self.book = AccountBook(config.accounts, config.credentials)
        self.admitted = 0
        #: session_id -> the video_url it was opened on (None: a Kling-generated video).
        self.sessions: OrderedDict[str, str | None] = OrderedDict()

    def open_session(self, video_url: str | None) -> str:
        session_id = uuid.uuid4().hex
        self.sessions[session_id] = video_url
        if len(self.sessions) > MAX_SESSIONS:
            self.sessions.popitem(last=False)
        return session_id


STATE = web.AppKey("state", SimState)


@dataclass(frozen=True, slots=True)
class Handled:
    """A call's answer (None: drop the connection), its outcome name and its `by_code` key."""

    response: web.StreamResponse | None
    outcome: str
    code: str


def _kling(code: int, outcome: str, message: str | None = None) -> Handled:
    return Handled(answers.kling(code, message), outcome, str(code))


def _decode_for_log(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return raw.decode("utf-8", errors="replace")


async def init_selection(request: web.Request) -> web.StreamResponse:
    """`POST .../multi-elements/init-selection`."""
    state = request.app[STATE]
    raw = await request.read()
    authorization = request.headers.get("Authorization")
    state.stats.started(request.path, authorization, _decode_for_log(raw))
    # The account a call carries the keys of counts it in flight from its arrival, like the
    # overall stats; the keys are checked at the auth stage, after the gateway.
    account, refused = state.book.identify(authorization)
    if account is not None:
        account.started()
    handled = Handled(None, "fault", "dropped")
    try:
        handled = await _handle(state, request, raw, account, refused)
    finally:
        state.stats.finished(handled.outcome, handled.code)
        if account is not None:
            account.finished(handled.code)
    if handled.response is None:
        if request.transport is not None:
            request.transport.abort()
        raise asyncio.CancelledError  # aiohttp ends the handler without writing an answer
    return handled.response


async def _handle(
    state: SimState,
    request: web.Request,
    raw: bytes,
    account: AccountState | None,
    refused: int | None,
) -> Handled:
    if request.method != "POST":
        return _kling(1202, "request_rejected", f"The requested method {request.method} is invalid")
    action, latency_s = state.plan.next_call()
    if latency_s:
        await asyncio.sleep(latency_s)
    gateway = _gateway_fault(action, request)
    if gateway is not None:
        return gateway
    if account is None:
        assert refused is not None
        return _kling(refused, "auth_failed")
    if account.depleted:
        return _kling(1102, "account_blocked")
    limit = state.plan.config.max_concurrency
    if account.full or (limit is not None and state.admitted >= limit):
        return _kling(1303, "concurrency_limited")
    state.admitted += 1
    account.admitted += 1
    try:
        if action.kind == "slow":
            await asyncio.sleep(state.plan.config.slow_seconds)
        if action.kind == "kling":
            assert action.code is not None
            return _kling(action.code, "fault")
        try:
            selection = parse_body(decode_json(raw))
            facts_or_rejection = await _resolve(state, selection)
        except RequestRejected as exc:
            return _kling(exc.code, "request_rejected", exc.message)
        return _answer(state, request, selection, facts_or_rejection, account)
    finally:
        state.admitted -= 1
        account.admitted -= 1


def _gateway_fault(action: Action, request: web.Request) -> Handled | None:
    kind = action.kind
    if kind == "comet":
        assert action.status is not None
        return Handled(
            answers.comet(action.status, action.comet_code), "fault", f"http:{action.status}"
        )
    if kind == "html":
        return Handled(answers.html(), "fault", "http:200")
    if kind == "redirect":
        return Handled(answers.redirect(f"{_base_url(request)}/_sim/login"), "fault", "http:302")
    if kind == "empty":
        return Handled(answers.empty(), "fault", "http:200")
    if kind == "drop":
        return Handled(None, "fault", "dropped")
    return None


async def _resolve(
    state: SimState, selection: InitSelection
) -> tuple[ClipFacts | None, Rejection | None]:
    """The clip's facts and the rule it breaks, or RequestRejected for an unusable input."""
    if selection.video_url is not None:
        try:
            probe = await state.prober.probe(selection.video_url)
        except DownloadError as exc:
            raise RequestRejected(
                1201, f"Invalid parameters: video_url could not be downloaded: {exc.reason}"
            ) from exc
        if probe.facts is None:
            return None, reject(not_a_video(probe.not_a_video or "not a video"))
        return probe.facts, check_clip(probe.facts)
    assert selection.video_id is not None
    video = state.videos.get(selection.video_id)
    if video is None:
        raise RequestRejected(1203, f"video_id {selection.video_id!r} does not exist")
    if video.task_id != selection.task_id:
        raise RequestRejected(
            1201, f"Invalid parameters: task_id does not match video_id {selection.video_id!r}"
        )
    if state.videos.is_expired(video):
        raise RequestRejected(
            1201, f"Invalid parameters: video_id {selection.video_id!r} is older than 30 days"
        )
    facts = video.facts()
    return facts, check_clip(facts)


def _clip_data(facts: ClipFacts) -> dict[str, Any]:
    return {
        "fps": facts.fps,
        "original_duration": facts.duration_ms,
        "width": facts.width,
        "height": facts.height,
        "total_frame": facts.total_frames,
    }


def _answer(
    state: SimState,
    request: web.Request,
    selection: InitSelection,
    resolved: tuple[ClipFacts | None, Rejection | None],
    account: AccountState,
) -> Handled:
    facts, rejection = resolved
    if rejection is not None:
        data: dict[str, Any] = {"status": rejection.status}
        if facts is not None:
            data.update(_clip_data(facts))
        return Handled(answers.kling(0, rejection.message, data), "clip_rejected", "0")
    assert facts is not None
    session_id = state.open_session(selection.video_url)
    units = 1 if facts.duration_ms <= 5500 else 2
    data = {
        "status": 0,
        "session_id": session_id,
        **account.bill(units),
        **_clip_data(facts),
        "normalized_video": f"{_base_url(request)}/_sim/normalized/{session_id}.mp4",
    }
    return Handled(answers.kling(0, "SUCCEED", data), "succeeded", "0")


def _base_url(request: web.Request) -> str:
    return f"{request.scheme}://{request.host}"


async def unknown_path(request: web.Request) -> web.StreamResponse:
    """Any other path: Kling's "resource does not exist"."""
    return answers.kling(1203, f"The requested resource {request.path} does not exist")


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status)


async def _json_body(request: web.Request) -> Any:
    try:
        return json.loads(await request.read())
    except (ValueError, UnicodeDecodeError) as exc:
        raise web.HTTPBadRequest(
            text=json.dumps({"error": "body is not JSON"}), content_type="application/json"
        ) from exc


async def get_stats(request: web.Request) -> web.Response:
    """`GET /_sim/stats`: the calls seen, overall and per account."""
    state = request.app[STATE]
    return _json({**state.stats.to_json(), "accounts": state.book.stats_json()})


async def get_accounts(request: web.Request) -> web.Response:
    """`GET /_sim/accounts`: each account's settings and live balance (never a key)."""
    return _json([state.to_json() for state in request.app[STATE].book.accounts.values()])


async def put_account(request: web.Request) -> web.Response:
    """`PUT /_sim/accounts/{name}`: add or replace an account (201 when new)."""
    name = request.match_info["name"]
    try:
        account = SimAccount.from_json(name, await _json_body(request))
    except AccountConfigError as exc:
        return _json({"error": str(exc)}, status=400)
    new = request.app[STATE].book.put(account)
    return _json(account.to_json(), status=201 if new else 200)


async def patch_account(request: web.Request) -> web.Response:
    """`PATCH /_sim/accounts/{name}`: change a live account's limit, balance or billing."""
    name = request.match_info["name"]
    try:
        state = request.app[STATE].book.update(name, await _json_body(request))
    except KeyError:
        return _json({"error": f"no account {name!r}"}, status=404)
    except (AccountConfigError, TypeError) as exc:
        return _json({"error": str(exc)}, status=400)
    return _json(state.to_json())


async def get_requests(request: web.Request) -> web.Response:
    """`GET /_sim/requests`: the recent requests, oldest first."""
    return _json(list(request.app[STATE].stats.recent))


async def get_faults(request: web.Request) -> web.Response:
    """`GET /_sim/faults`: the fault settings and the script still to play."""
    plan = request.app[STATE].plan
    return _json({**plan.config.to_json(), "script": plan.script_left})


async def post_faults(request: web.Request) -> web.Response:
    """`POST /_sim/faults`: replace the fault settings (and the script) whole."""
    state = request.app[STATE]
    try:
        config = FaultConfig.from_json(await _json_body(request))
    except FaultConfigError as exc:
        return _json({"error": str(exc)}, status=400)
    state.plan = FaultPlan(config)
    return _json(config.to_json())


async def post_reset(request: web.Request) -> web.Response:
    """`POST /_sim/reset`: stats, recent requests, script and faults back to start-up."""
    state = request.app[STATE]
    state.stats.reset()
    state.book = AccountBook(state.config.accounts, state.config.credentials)
    state.plan = FaultPlan(state.config.faults)
    state.prober.clear()
    return _json({"reset": True})


async def post_video(request: web.Request) -> web.Response:
    """`POST /_sim/videos`: register a Kling-generated video."""
    try:
        video = KnownVideo.from_json(await _json_body(request))
    except VideoError as exc:
        return _json({"error": str(exc)}, status=400)
    request.app[STATE].videos.add(video)
    return _json(video.to_json(), status=201)


async def get_normalized(request: web.Request) -> web.StreamResponse:
    """`GET /_sim/normalized/<session_id>.mp4`: the clip a session was opened on."""
    sessions = request.app[STATE].sessions
    session_id = request.match_info["session_id"]
    if session_id not in sessions:
        return answers.kling(1203, f"session {session_id} does not exist")
    video_url = sessions[session_id]
    if video_url is not None:
        raise web.HTTPFound(video_url)
    return web.FileResponse(sample_clip_path("valid_mp4"))


async def get_login(_request: web.Request) -> web.Response:
    """The HTML page the `redirect` fault points at."""
    return answers.html()


async def get_health(_request: web.Request) -> web.Response:
    """`GET /_sim/health`: the simulator is up."""
    return _json({"ok": True})


async def _close_prober(app: web.Application) -> None:
    app[STATE].prober.close()


def build_app(config: SimulatorConfig) -> web.Application:
    """The simulator's aiohttp application for `config`."""
    app = web.Application()
    app[STATE] = SimState(config)
    for path in API_PATHS:
        app.router.add_route("*", path, init_selection)
    app.router.add_get("/_sim/stats", get_stats)
    app.router.add_get("/_sim/requests", get_requests)
    app.router.add_get("/_sim/accounts", get_accounts)
    app.router.add_put("/_sim/accounts/{name}", put_account)
    app.router.add_patch("/_sim/accounts/{name}", patch_account)
    app.router.add_get("/_sim/faults", get_faults)
    app.router.add_post("/_sim/faults", post_faults)
    app.router.add_post("/_sim/reset", post_reset)
    app.router.add_post("/_sim/videos", post_video)
    app.router.add_get("/_sim/normalized/{session_id}.mp4", get_normalized)
    app.router.add_get("/_sim/login", get_login)
    app.router.add_get("/_sim/health", get_health)
    app.router.add_route("*", "/{tail:.*}", unknown_path)
    app.on_cleanup.append(_close_prober)
    return app
