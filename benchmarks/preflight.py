"""What the pre-flight costs per job: ``python -m benchmarks.preflight [--jobs N]``.

The sample clips and a large clip (34 MB, its ``moov`` at the end) are served over HTTP with
Range support and keep-alive on loopback, by a process of their own; each runs as ``url`` jobs
through the real pipeline (in this process) against ``kling-api-sim`` in another process (no
added latency), with the pre-flight and without it, the two interleaved job by job so that the
shared machine's load falls on both alike. Per job it reports the pipeline thread's CPU time,
the bytes and requests the pre-flight read (its own metrics), and the job's wall time, and
prints a table (docs/preflight.md quotes one).

The simulator probes each clip URL once and caches it, so the calls measured are the API's
answer alone: the difference between the two sides is the pre-flight's.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import av
from prometheus_client import REGISTRY
from pydantic import SecretStr

from benchmarks.harness import BENCH_API_KEY, running_simulator
from contract.jobs import VideoUrl, make_job
from contract.settings import Settings
from simulator.samples import SAMPLE_CLIPS, sample_clip_path
from tests.simulator.clip_host import serving_clips
from tests.worker.preflight.corpus import Shape, encode
from worker.accounts import load_accounts
from worker.backoff import Backoff
from worker.coordination.store import Coordination
from worker.pipeline import Pipeline
from worker.preflight import Preflight
from worker.runtime import account_pool
from worker.sources import SourceResolver

LARGE_CLIP = "large_moov_at_end.mp4"
BYTES_READ = "kling_preflight_bytes_read_total"
REQUESTS = "kling_preflight_requests_total"


@dataclass
class Side:
    """The jobs of one clip run with (or without) the pre-flight."""

    pipeline: Pipeline
    cpu_ms: list[float] = field(default_factory=list)
    wall_ms: list[float] = field(default_factory=list)
    calls: int = 0
    outcome: str = ""

    def run(self, url: str, calls: Iterator[int]) -> None:
        """One job; ``calls`` yields the simulator's call count (before, after)."""
        before = next(calls)
        job = make_job(VideoUrl(video_url=url), allow_http=True)
        cpu, wall = time.thread_time(), time.perf_counter()
        result = self.pipeline.run(job).result
        self.cpu_ms.append((time.thread_time() - cpu) * 1000)
        self.wall_ms.append((time.perf_counter() - wall) * 1000)
        self.calls += next(calls) - before
        message = result.error.message if result.error else None
        self.outcome = (
            "passed"
            if message is None
            else "rejected"
            if message.startswith("pre-flight")
            else "API rejects"
        )


@dataclass(frozen=True)
class Row:
    clip: str
    size: int
    with_: Side
    without: Side
    bytes_read: float
    requests: float

    def cpu_ms(self, side: Side) -> float:
        return statistics.median(side.cpu_ms)

    def wall_ms(self, side: Side) -> float:
        return statistics.median(side.wall_ms)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    parser.add_argument("--jobs", type=int, default=20, help="jobs per clip and per side")
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)  # the clip host's process
    args = parser.parse_args(argv)
    if args.serve is not None:
        return serve(args.serve)
    rows = measure(args.jobs)
    print_table(rows, args.jobs)
    print(f"\nValid clips, mean per job: {summary(rows)}")
    return 0


def measure(jobs: int) -> list[Row]:
    """Run ``jobs`` url jobs per clip with the pre-flight and as many without, interleaved."""
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="preflight-bench-") as workdir:
        sizes = clips(Path(workdir))
        with clip_host(Path(workdir)) as base_url, running_simulator(latency_ms=0) as sim:

            def call_counts() -> Iterator[int]:
                while True:
                    yield int(sim.stats()["calls"])

            with_pipeline, without_pipeline = pipelines(sim.base_url)
            counts = call_counts()
            for name, clip_size in sizes.items():
                url = f"{base_url}/clips/{name}"
                with_, without = Side(with_pipeline), Side(without_pipeline)
                without.run(url, counts)  # warm-up: the simulator probes and caches the URL
                without = Side(without_pipeline)
                read_before = sample(BYTES_READ), sample(REQUESTS)
                for _ in range(jobs):
                    without.run(url, counts)
                    with_.run(url, counts)
                rows.append(
                    Row(
                        clip=name,
                        size=clip_size,
                        with_=with_,
                        without=without,
                        bytes_read=(sample(BYTES_READ) - read_before[0]) / jobs,
                        requests=(sample(REQUESTS) - read_before[1]) / jobs,
                    )
                )
    return rows


def summary(rows: list[Row]) -> str:
    """What the pre-flight adds to a job whose clip passes it, on average over the clips."""
    passed = [row for row in rows if row.with_.outcome == "passed"]
    if not passed:
        return "no clip passed the pre-flight"
    read = statistics.mean(r.bytes_read for r in passed)
    gets = statistics.mean(r.requests for r in passed)
    cpu = statistics.mean(r.cpu_ms(r.with_) - r.cpu_ms(r.without) for r in passed)
    wall = statistics.mean(r.wall_ms(r.with_) - r.wall_ms(r.without) for r in passed)
    return f"{size(read)} read in {gets:.1f} GETs, +{cpu:.1f} ms CPU, +{wall:.1f} ms wall."


def clips(directory: Path) -> dict[str, int]:
    """Write the sample clips and a large one (the test corpus's encoder) into ``directory``;
    returns their sizes by file name."""
    for name, clip in SAMPLE_CLIPS.items():
        (directory / clip.filename).write_bytes(sample_clip_path(name).read_bytes())
    encode(directory / LARGE_CLIP, Shape(fps=24, noise=True))
    names = [clip.filename for clip in SAMPLE_CLIPS.values()] + [LARGE_CLIP]
    return {name: (directory / name).stat().st_size for name in names}


@contextmanager
def clip_host(directory: Path) -> Iterator[str]:
    """The files of ``directory`` served by another process (its CPU is not the pipeline's)."""
    command = [sys.executable, "-m", "benchmarks.preflight", "--serve", str(directory)]
    process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        yield str(json.loads(process.stdout.readline())["base_url"])
    finally:
        assert process.stdin is not None
        process.stdin.close()  # the host stops when its stdin closes
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def serve(directory: Path) -> int:
    """The clip host's process: serve ``directory`` until stdin closes."""
    files = {path.name: path.read_bytes() for path in directory.iterdir() if path.is_file()}
    with serving_clips(files) as host:
        print(json.dumps({"base_url": host.base_url}), flush=True)
        sys.stdin.read()
    return 0


def pipelines(sim_url: str) -> tuple[Pipeline, Pipeline]:
    """The same pipeline with the pre-flight and without it."""
    settings = Settings(
        _env_file=None,
        kling_api_base_url=f"{sim_url}/kling",
        kling_api_key=SecretStr(BENCH_API_KEY),
        allow_http_video_urls=True,
        allow_private_video_hosts=True,
        worker_concurrency=4,
    )

    def pipeline(preflight: Preflight | None) -> Pipeline:
        return Pipeline(
            resolver=SourceResolver.from_settings(settings),
            accounts=account_pool(
                load_accounts(settings), Coordination.from_settings(settings), settings
            ),
            backoff=Backoff(base_s=0.01, max_s=0.01),
            max_attempts=1,
            preflight=preflight,
        )

    return pipeline(Preflight.from_settings(settings)), pipeline(None)


def sample(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


def print_table(rows: list[Row], jobs: int) -> None:
    print(f"Pre-flight cost per job: median of {jobs} url jobs per clip and side, loopback HTTP,")
    print(f"simulator latency 0 (PyAV {av.__version__}, Python {sys.version.split()[0]})\n")
    header = (
        f"{'clip':<22} {'size':>8} {'pre-flight':<11} {'calls':>7} {'read':>8} {'GETs':>4}"
        f" {'CPU ms':>12} {'wall ms':>12} {'added':>7}"
    )
    print(header)
    print(
        f"{'':<22} {'':>8} {'':<11} {'on/off':>7} {'per job':>8} {'':>4} {'on / off':>12}"
        f" {'on / off':>12} {'wall ms':>7}"
    )
    print("-" * len(header))
    for row in rows:
        on, off = row.with_, row.without
        print(
            f"{row.clip:<22} {size(row.size):>8} {on.outcome:<11} "
            f"{on.calls:>3}/{off.calls:<3} {size(row.bytes_read):>8} {row.requests:>4.1f} "
            f"{row.cpu_ms(on):>5.1f} / {row.cpu_ms(off):<4.1f} "
            f"{row.wall_ms(on):>5.1f} / {row.wall_ms(off):<4.1f} "
            f"{row.wall_ms(on) - row.wall_ms(off):>+7.1f}"
        )
    made = sum(row.with_.calls for row in rows)
    print(f"Calls made with the pre-flight: {made} of {sum(row.without.calls for row in rows)}.")


def size(count: float) -> str:
    for unit, scale in (("MB", 1e6), ("KB", 1e3)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{count:.0f} B"


if __name__ == "__main__":
    raise SystemExit(main())
