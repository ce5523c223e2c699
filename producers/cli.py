"""``kling-jobs``: enqueue init-selection jobs and read their results.

Other installed packages may add commands through the ``kling_jobs.commands`` entry-point group:
the development stack adds ``kling-jobs demo`` that way (``devstack/demo.py``), so this client
library needs none of the stack's dependencies.
"""

from __future__ import annotations

import json
import sys
from importlib.metadata import entry_points
from typing import IO, Any, NoReturn

import click

from contract import bounded_json
from contract.errors import InvalidJobError
from contract.jobs import Job, KlingVideo, S3Object, VideoUrl
from contract.names import JOB_QUEUE, RESULT_QUEUE
from contract.settings import Settings
from producers.consume import iter_results
from producers.dead_letters import list_dead_letters, replay_dead_letters
from producers.errors import BrokerUnavailable, SharedStoreUnavailable
from producers.producer import Producer
from producers.status import job_statuses

#: Exit status for input that breaks the contract (nothing was enqueued).
EXIT_INVALID = 2
#: Exit status when the shared store or the broker cannot be reached.
EXIT_UNREACHABLE = 1
#: Entry-point group of the commands other packages add to ``kling-jobs``.
COMMANDS_GROUP = "kling_jobs.commands"


class _Commands(click.Group):
    """The built-in commands, and those other packages add through :data:`COMMANDS_GROUP`."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        added = (entry.name for entry in entry_points(group=COMMANDS_GROUP))
        return sorted({*super().list_commands(ctx), *added})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            return command
        for entry in entry_points(group=COMMANDS_GROUP, name=cmd_name):
            loaded: click.Command = entry.load()
            return loaded
        return None


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Enqueue Kling init-selection jobs and read their results.

    Settings come from the environment or a .env file: CELERY_BROKER_URL picks the broker
    (unset: an embedded broker in ./.kling-broker, this machine only).
    """


@main.command()
@click.option("--video-id", help="Id of a clip Kling generated (needs --task-id).")
@click.option("--task-id", help="Id of the Kling task that generated --video-id.")
@click.option("--s3", "s3_uri", metavar="s3://BUCKET/KEY", help="An S3 object the worker presigns.")
@click.option("--url", "video_url", metavar="URL", help="A hosted MP4/MOV clip (https).")
@click.option(
    "--file",
    "jobs_file",
    type=click.File("r", encoding="utf-8"),
    help="JSON lines, one job object each ('-' for stdin); all are checked before any is sent.",
)
@click.option("--job-id", help="Your idempotency key (default: a new UUID4).")
@click.option("--metadata", metavar="JSON", help="A JSON object returned untouched in the result.")
@click.option(
    "--account",
    metavar="NAME",
    help="The fleet's Kling account that must open the session (default: the fleet chooses).",
)
def submit(
    video_id: str | None,
    task_id: str | None,
    s3_uri: str | None,
    video_url: str | None,
    jobs_file: IO[str] | None,
    job_id: str | None,
    metadata: str | None,
    account: str | None,
) -> None:
    """Enqueue one job (or a file of jobs) and print each job_id.

    \b
    One job, from exactly one source:
      kling-jobs submit --video-id VID --task-id TID
      kling-jobs submit --s3 s3://uploads/clips/a.mp4 --metadata '{"upload_id": 42}'
      kling-jobs submit --url https://cdn.example.com/a.mp4 --job-id upl-42
      kling-jobs submit --video-id VID --task-id TID --account main
    Many jobs, one JSON object a line:
      kling-jobs submit --file jobs.jsonl
    """
    settings = Settings()
    given = [value for value in (video_id or task_id, s3_uri, video_url, jobs_file) if value]
    if len(given) != 1:
        _fail("give exactly one of --video-id/--task-id, --s3, --url or --file")
    if jobs_file is not None:
        if job_id or metadata or account:
            _fail(
                "--job-id, --metadata and --account go with a single job; "
                "put them in the file's lines"
            )
        _submit_file(settings, jobs_file)
        return
    try:
        source = _single_source(video_id, task_id, s3_uri, video_url)
        parsed_metadata = _metadata(metadata)
        with Producer(settings) as producer:
            click.echo(
                producer.submit(source, job_id=job_id, metadata=parsed_metadata, account=account)
            )
    except (InvalidJobError, ValueError) as exc:
        _fail(str(exc))


@main.command()
@click.option("--follow", is_flag=True, help="Keep waiting for new results (Ctrl-C to stop).")
@click.option("--max", "max_results", type=click.IntRange(min=1), help="Stop after N results.")
@click.option(
    "--queue",
    default=RESULT_QUEUE,
    show_default=True,
    help="Result queue to consume (declared and bound to kling.results if new).",
)
def results(follow: bool, max_results: int | None, queue: str) -> None:
    """Consume results and print each as one JSON line.

    Without --follow, stops once the queue stays empty for two seconds. A result is
    acknowledged (removed from the queue) once printed.
    """
    try:
        for result in iter_results(Settings(), queue=queue, max_results=max_results, follow=follow):
            click.echo(result.to_json())
    except KeyboardInterrupt:
        pass


@main.command()
@click.argument("job_ids", nargs=-1, required=True, metavar="JOB_ID...")
def status(job_ids: tuple[str, ...]) -> None:
    """Print where each job is, one JSON line each, from the fleet's shared store (REDIS_URL).

    state is "recorded" (its outcome is stored; result is the published result), "running" (a
    worker holds it now) or "unknown" (queued, never seen, or an outcome the fleet does not keep).
    """
    try:
        for found in job_statuses(Settings(), job_ids):
            click.echo(found.to_json())
    except SharedStoreUnavailable as exc:
        _unreachable(str(exc))


@main.group("dead-letters")
def dead_letters() -> None:
    """Look at the dead-letter queue (messages that are not a job) and move them back."""


@dead_letters.command("list")
@click.option("--max", "max_count", type=click.IntRange(min=1), help="Show at most N.")
def list_letters(max_count: int | None) -> None:
    """Print dead letters as JSON lines (reason, headers, content_type, body); they stay queued."""
    try:
        for letter in list_dead_letters(Settings(), max_count=max_count):
            click.echo(json.dumps(letter.to_wire(), ensure_ascii=False))
    except BrokerUnavailable as exc:
        _unreachable(str(exc))


@dead_letters.command("replay")
@click.option("--reason", metavar="TEXT", help="Only letters whose reason contains TEXT.")
@click.option("--max", "max_count", type=click.IntRange(min=1), help="Move at most N.")
@click.option("--dry-run", is_flag=True, help="Count the letters that would move; move none.")
def replay_letters(reason: str | None, max_count: int | None, dry_run: bool) -> None:
    """Move matching dead letters back to the job queue, byte for byte, and print how many."""
    try:
        moved = replay_dead_letters(Settings(), reason=reason, max_count=max_count, dry_run=dry_run)
    except BrokerUnavailable as exc:
        _unreachable(str(exc))
    verb = "would move" if dry_run else "moved"
    click.echo(f"{verb} {moved} dead letter(s) to {JOB_QUEUE}")


def _single_source(
    video_id: str | None, task_id: str | None, s3_uri: str | None, video_url: str | None
) -> KlingVideo | S3Object | VideoUrl:
    if video_id:
        if not task_id:
            raise InvalidJobError("--video-id needs --task-id (the Kling generation task)")
        return KlingVideo(video_id=video_id, task_id=task_id)
    if task_id:
        raise InvalidJobError("--task-id goes with --video-id")
    if s3_uri:
        return S3Object.from_uri(s3_uri)
    assert video_url is not None
    return VideoUrl(video_url=video_url)


def _metadata(text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        value = bounded_json.loads(text)
    except bounded_json.UnreadableJson as exc:
        raise InvalidJobError(f"--metadata is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise InvalidJobError("--metadata must be a JSON object")
    return value


def _submit_file(settings: Settings, lines: IO[str]) -> None:
    """Validate every line, report each bad one with its number, and enqueue only if all pass."""
    with Producer(settings) as producer:
        jobs: list[Job] = []
        problems: list[str] = []
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                jobs.append(producer.prepare(bounded_json.loads(line), number))
            except bounded_json.UnreadableJson as exc:
                problems.append(f"line {number}: {exc}")
            except InvalidJobError as exc:
                problems.append(f"line {number}: {str(exc).removeprefix(f'job {number}: ')}")
        if problems:
            for problem in problems:
                click.echo(problem, err=True)
            _fail(f"{len(problems)} invalid line(s); nothing was enqueued")
        for job_id in producer.submit_many(jobs):
            click.echo(job_id)


def _fail(message: str) -> None:
    click.echo(f"kling-jobs: {message}", err=True)
    sys.exit(EXIT_INVALID)


def _unreachable(message: str) -> NoReturn:
    click.echo(f"kling-jobs: {message}", err=True)
    sys.exit(EXIT_UNREACHABLE)
