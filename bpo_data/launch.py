"""Run every shard of a recipe: on this machine, as Ray tasks, or as a Slurm job array.

``launch`` writes the job once — the recipe with every setting applied, the sources' paths made
absolute, the shard count — to ``OUT/launch/job-<id>.json``, and every shard runs
``python -m bpo_data.launch JOB --shard i/N`` in a process of its own, which calls the Python API
(``bpo_data.generate.generate``) with it. A preempted or killed shard is simply a process that
died: running it again resumes it per record (the shard store skips keys already written, by any
shard count). Ray retries a failed shard task, Slurm requeues an array task, and the local
executor retries in place.
"""

from __future__ import annotations

import json
import os
import queue
import shlex
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from bpo_data.generate import SourcePaths
from bpo_data.recipe import Recipe
from bpo_data.store import ShardFiles

# Attempt headers in a shard's log carry this word and the launch id, so attempts can be counted.
ATTEMPT = "bpo-data-attempt"
LOG_TAIL_LINES = 15


class LaunchError(RuntimeError):
    """A launch that cannot start; the message says what to change."""


class ShardFailed(RuntimeError):
    """One attempt of one shard exited non-zero (raised inside Ray tasks too, so Ray retries it).

    ``reason`` is how it ended ("signal SIGKILL": preempted or out of memory; "exit code 1"), which
    the launch prints for every failed attempt, retried or not.
    """

    def __init__(self, message: str, reason: str = "a failure"):
        super().__init__(message, reason)  # both in args, so Ray's pickled copy keeps the reason
        self.reason = reason

    def __str__(self) -> str:
        return self.args[0]


@dataclass(frozen=True)
class LaunchJob:
    """What every shard runs: ``generate(recipe, out_dir, shard=(i, num_shards), ...)``."""

    out_dir: Path
    num_shards: int
    recipe: dict
    recipe_path: str = ""
    sources: list[str] | None = None
    paths: dict[str, dict[str, str | None]] = field(default_factory=dict)
    strict: bool = False
    launch_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])

    @property
    def path(self) -> Path:
        return self.out_dir / "launch" / f"job-{self.launch_id}.json"

    def files(self, index: int) -> ShardFiles:
        return ShardFiles(self.out_dir, index, self.num_shards)

    def save(self) -> Path:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = asdict(self) | {"out_dir": str(self.out_dir)}
        self.path.write_text(json.dumps(data, indent=2), encoding="utf-8")
        return self.path

    @classmethod
    def load(cls, path: str | os.PathLike) -> LaunchJob:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        return cls(**{**data, "out_dir": Path(data["out_dir"])})

    def worker_command(self, shard: str) -> list[str]:
        return [sys.executable, "-m", "bpo_data.launch", str(self.path), "--shard", shard]


@dataclass
class ShardOutcome:
    index: int
    ok: bool
    attempts: int
    error: str = ""


def make_job(
    recipe: Recipe,
    out_dir: str | os.PathLike,
    num_shards: int,
    *,
    recipe_path: str = "",
    sources: list[str] | None = None,
    paths: dict[str, SourcePaths] | None = None,
    strict: bool = False,
) -> LaunchJob:
    """A job for ``num_shards`` shards; paths that exist here are made absolute (workers start
    elsewhere, on other nodes), names (a Hub model id, ``smoke``) are kept as given."""
    if num_shards < 1:
        raise LaunchError(f"--num-shards must be at least 1, got {num_shards}")
    data = recipe.model_dump(mode="json")
    if Path(recipe.model).exists():
        data["model"] = str(Path(recipe.model).resolve())
    for source in data["sources"]:
        for name in ("data", "image_root"):
            if source[name] and Path(source[name]).exists():
                source[name] = str(Path(source[name]).resolve())
    absolute = {
        name: {k: str(Path(v).resolve()) if v else None for k, v in asdict(given).items()}
        for name, given in (paths or {}).items()
    }
    return LaunchJob(
        out_dir=Path(out_dir).resolve(),
        num_shards=num_shards,
        recipe=data,
        recipe_path=str(Path(recipe_path).resolve())
        if recipe_path and Path(recipe_path).exists()
        else recipe_path,
        sources=sources,
        paths=absolute,
        strict=strict,
    )


def run_worker(job: LaunchJob, shard: str) -> int:
    """One shard of a saved job, in this process: what ``python -m bpo_data.launch`` runs.

    Exit 0 when the shard is finished, 1 when it failed (so launch retries it: a busy shard, an
    engine that made nothing, a model that did not load), 2 when it can never succeed as configured.
    """
    import warnings

    from bpo_data.generate import ModelLoadError, generate
    from bpo_data.store import ShardBusy, parse_shard_spec

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        recipe = Recipe.model_validate(job.recipe)
    try:
        index, total = parse_shard_spec(shard)
        if total != job.num_shards:
            raise ValueError(f"--shard {shard}: the job {job.path} has {job.num_shards} shards")
        summary = generate(
            recipe,
            job.out_dir,
            shard=(index, total),
            sources=job.sources,
            paths={name: SourcePaths(**given) for name, given in job.paths.items()},
            strict=job.strict,
            recipe_path=job.recipe_path,
        )
    except (ShardBusy, ModelLoadError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(summary.to_dict()))
    if summary.engine_failed:
        reasons = ", ".join(f"{reason} {n}" for reason, n in sorted(summary.rejects.items()))
        example = summary.reject_examples.get("engine_error", "")[:300]
        print(
            f"error: shard {shard} made no pair, its engine failed ({reasons}; e.g. {example})",
            file=sys.stderr,
        )
        return 1
    for name in summary.empty_sources:
        print(f"warning: source {name!r} holds no units", file=sys.stderr)
    return 0


def _describe_exit(returncode: int) -> str:
    if returncode < 0:
        return f"signal {signal.Signals(-returncode).name}"
    return f"exit code {returncode}"


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(text.rstrip("\n").splitlines()[-lines:])


def run_attempt(job: LaunchJob, index: int, cuda_devices: str | None = None) -> str:
    """Run shard ``index`` once as ``python -m bpo_data.launch JOB``, output appended to its log.

    Returns the host it ran on; raises ``ShardFailed`` with the log's last lines when it fails.
    """
    log = job.files(index).log
    log.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    if cuda_devices is not None:
        env["CUDA_VISIBLE_DEVICES"] = cuda_devices
    host = socket.gethostname()
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    with open(log, "a", encoding="utf-8") as handle:
        handle.write(
            f"=== {ATTEMPT} {job.launch_id} shard {index}/{job.num_shards} on {host} at {started} "
            f"CUDA_VISIBLE_DEVICES={env.get('CUDA_VISIBLE_DEVICES', '(unset)')} ===\n"
        )
        handle.flush()
        result = subprocess.run(
            job.worker_command(f"{index}/{job.num_shards}"),
            stdout=handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
        )
        if result.returncode != 0:  # a killed worker says nothing itself: the log says how it ended
            reason = _describe_exit(result.returncode)
            ended = datetime.now(timezone.utc).isoformat(timespec="seconds")
            handle.write(f"=== this attempt ended with {reason} at {ended} ===\n")
    if result.returncode != 0:
        raise ShardFailed(
            f"shard {index}/{job.num_shards} on {host} ended with {reason}; "
            f"last lines of {log}:\n{_tail(log)}",
            reason,
        )
    return host


def count_attempts(job: LaunchJob, index: int) -> int:
    """Attempts this launch made at a shard, read from the attempt headers in its log."""
    marker = f"{ATTEMPT} {job.launch_id} "
    try:
        with open(job.files(index).log, encoding="utf-8", errors="replace") as handle:
            return sum(1 for line in handle if marker in line)
    except FileNotFoundError:
        return 0


# --- local -------------------------------------------------------------------------------------


def visible_gpus() -> list[str]:
    """The GPUs this process may use: ``CUDA_VISIBLE_DEVICES`` when set, else what torch sees."""
    declared = os.environ.get("CUDA_VISIBLE_DEVICES")
    if declared is not None:
        return [d.strip() for d in declared.split(",") if d.strip() and d.strip() != "-1"]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


def gpu_slots(gpus: list[str], gpus_per_shard: int, cpu_workers: int = 1) -> list[str | None]:
    """Groups of ``gpus_per_shard`` GPUs, one concurrent shard each; without GPUs, ``cpu_workers``
    slots of ``None`` (shards on the CPU, that many at a time)."""
    if gpus_per_shard == 0 or not gpus:
        return [None] * cpu_workers
    if len(gpus) < gpus_per_shard:
        raise LaunchError(
            f"--gpus-per-shard {gpus_per_shard} but only {len(gpus)} GPU(s) are visible ({','.join(gpus)}); "
            "lower --gpus-per-shard or set CUDA_VISIBLE_DEVICES"
        )
    return [
        ",".join(gpus[start : start + gpus_per_shard])
        for start in range(0, len(gpus) - gpus_per_shard + 1, gpus_per_shard)
    ]


def usable_cores() -> int:
    """The cores this process may run on: a Slurm or container allocation, not the whole node."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def default_cpu_workers(cpu_threads: int | None, cores: int | None = None) -> int:
    """How many CPU shards fit at once: the usable cores over the threads each shard's torch uses
    (``run.cpu_threads``); one when that is unset, as torch then takes every core itself."""
    if not cpu_threads:
        return 1
    return max(1, (cores or usable_cores()) // cpu_threads)


def run_local(
    job: LaunchJob,
    slots: list[str | None],
    max_retries: int,
    report: Callable[[str], None] = print,
) -> list[ShardOutcome]:
    """Run the shards on this machine, one per slot at a time, each retried up to ``max_retries`` times."""
    free: queue.Queue[str | None] = queue.Queue()
    for slot in slots:
        free.put(slot)

    attempts = max_retries + 1

    def one(index: int) -> ShardOutcome:
        slot = free.get()
        error = ""
        try:
            for attempt in range(1, attempts + 1):
                try:
                    run_attempt(job, index, slot)
                except ShardFailed as err:
                    error = str(err)
                    report(
                        f"shard {index}/{job.num_shards} failed (attempt {attempt}/{attempts}: {err.reason})"
                    )
                else:
                    report(f"shard {index}/{job.num_shards} done")
                    return ShardOutcome(index, True, attempt)
            return ShardOutcome(index, False, attempts, error)
        finally:
            free.put(slot)

    with ThreadPoolExecutor(max_workers=len(slots)) as pool:
        return list(pool.map(one, range(job.num_shards)))


# --- Ray ---------------------------------------------------------------------------------------


def run_ray(
    job: LaunchJob,
    gpus_per_shard: int,
    max_retries: int,
    address: str | None = None,
    report: Callable[[str], None] = print,
) -> list[ShardOutcome]:
    """One Ray task per shard, retried by Ray; a retry resumes the shard per record.

    Connects to ``address`` (or ``RAY_ADDRESS``, or a cluster started with ``ray start`` here),
    else starts a local Ray instance for the run and stops it afterwards. The output folder must be
    on storage every node sees.
    """
    try:
        import ray
        from ray.exceptions import RayError, RayTaskError
    except ImportError:
        raise LaunchError('--executor ray needs Ray: pip install "bpo-data[ray]"') from None

    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=address)
    try:
        gpus = ray.cluster_resources().get("GPU", 0)
        if gpus < gpus_per_shard:
            report(
                f"warning: the Ray cluster has {gpus:g} GPU(s) now; shard tasks wait until nodes with "
                f"{gpus_per_shard} GPU(s) each join (--gpus-per-shard 0 runs shards on CPUs)"
            )
        # A shard's task is one attempt; Ray has already set CUDA_VISIBLE_DEVICES to the task's GPUs.
        task = ray.remote(run_attempt)
        refs = {
            task.options(
                num_gpus=gpus_per_shard,
                max_retries=max_retries,
                retry_exceptions=True,
                name=f"bpo-data shard {index}/{job.num_shards}",
            ).remote(job, index): index
            for index in range(job.num_shards)
        }
        outcomes: dict[int, ShardOutcome] = {}
        pending = list(refs)
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            index = refs[ready[0]]
            try:
                host = ray.get(ready[0])
            except RayError as err:
                cause = err.cause if isinstance(err, RayTaskError) else err
                outcomes[index] = ShardOutcome(index, False, count_attempts(job, index), str(cause))
                report(f"shard {index}/{job.num_shards} failed on every attempt")
                continue
            outcomes[index] = ShardOutcome(index, True, count_attempts(job, index))
            report(f"shard {index}/{job.num_shards} done on {host}")
        return [outcomes[i] for i in range(job.num_shards)]
    finally:
        if started_here:
            ray.shutdown()


# --- Slurm -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SlurmOptions:
    """The ``#SBATCH`` settings; None leaves a commented default for the user to edit."""

    job_name: str
    gpus_per_shard: int = 1
    partition: str | None = None
    time: str | None = None
    cpus_per_task: int | None = None
    extra: tuple[str, ...] = ()


def _sbatch(option: str, value: object | None, default: str) -> str:
    """An active ``#SBATCH`` line, or a disabled one (``##SBATCH``) showing what to set."""
    if value is None:
        return f"##SBATCH --{option}={default}"
    return f"#SBATCH --{option}={value}"


def slurm_script(job: LaunchJob, options: SlurmOptions) -> str:
    """An sbatch array script whose task ``i`` runs shard ``i/N``; meant to be read and edited."""
    if any(c.isspace() for c in str(job.out_dir)):
        raise LaunchError(
            f"#SBATCH --output cannot name a folder with spaces ({job.out_dir}); choose an --out without them"
        )
    for extra in options.extra:
        if "\n" in extra or not extra.startswith("--"):
            raise LaunchError(f"--sbatch-option {extra!r}: give one sbatch option per flag, e.g. --mem=64G")
    logs = job.out_dir / "logs"
    n = job.num_shards
    bin_dir = str(Path(sys.executable).parent)
    command = " ".join(shlex.quote(a) for a in ["python", "-m", "bpo_data.launch", str(job.path)])
    lines = [
        "#!/bin/bash",
        f"# bpo-data: {n} shards as a Slurm job array; array task i runs shard i/{n}.",
        "# Written by `bpo-data launch --executor slurm`; edit it freely, then submit it with sbatch.",
        "# A requeued (preempted) or resubmitted task resumes its shard: keys already written are skipped.",
        "# Lines starting with ##SBATCH are switched off; remove one # to use them.",
        f"#SBATCH --job-name={options.job_name}",
        f"#SBATCH --array=0-{n - 1}",
        "#SBATCH --requeue",
        f"#SBATCH --output={logs}/slurm-%A_%a.out",
        "#SBATCH --open-mode=append",
    ]
    if options.gpus_per_shard:
        lines.append(f"#SBATCH --gres=gpu:{options.gpus_per_shard}")
    lines += [
        _sbatch("partition", options.partition, "gpu"),
        _sbatch("time", options.time, "24:00:00"),
        _sbatch("cpus-per-task", options.cpus_per_task, "8"),
        *(f"#SBATCH {extra}" for extra in options.extra),
        "",
        "set -euo pipefail",
        "# `python` must import bpo_data here: sbatch passes on the submitting shell's environment by",
        f"# default; otherwise activate its environment, e.g. export PATH={shlex.quote(bin_dir)}:$PATH",
        f'echo "shard ${{SLURM_ARRAY_TASK_ID}}/{n} on $(hostname), job ${{SLURM_ARRAY_JOB_ID}}"',
        f'exec {command} --shard "${{SLURM_ARRAY_TASK_ID}}/{n}"',
        "",
    ]
    return "\n".join(lines)


def write_slurm_script(job: LaunchJob, options: SlurmOptions, path: Path | None = None) -> Path:
    """Write the script (default ``OUT/launch-slurm.sbatch``), its job file and the log folder Slurm needs."""
    script = path or job.out_dir / "launch-slurm.sbatch"
    job.save()
    text = slurm_script(job, options)
    (job.out_dir / "logs").mkdir(parents=True, exist_ok=True)
    script.parent.mkdir(parents=True, exist_ok=True)
    script.write_text(text, encoding="utf-8")
    script.chmod(0o755)
    return script


def submit_slurm(script: Path) -> str:
    """``sbatch SCRIPT``; returns what sbatch printed (the job id)."""
    try:
        result = subprocess.run(["sbatch", str(script)], capture_output=True, text=True)
    except FileNotFoundError:
        raise LaunchError(
            f"sbatch is not on PATH: run this on a Slurm login node, or submit {script} there with `sbatch`"
        ) from None
    if result.returncode != 0:
        raise LaunchError(
            f"sbatch {script} failed ({_describe_exit(result.returncode)}): {result.stderr.strip()}; "
            "fix the #SBATCH lines in the script and submit it with `sbatch`"
        )
    return result.stdout.strip()


# --- the Python API ------------------------------------------------------------------------------


def launch(
    job: LaunchJob,
    executor: str = "local",
    *,
    gpus_per_shard: int = 1,
    max_retries: int = 2,
    ray_address: str | None = None,
    report: Callable[[str], None] = print,
    cpu_workers: int = 1,
) -> list[ShardOutcome]:
    """Run every shard of ``job`` (``make_job``) locally or on Ray and wait; rerun to resume.

    ``cpu_workers``: local shards run at once when no GPU is used (``default_cpu_workers``).
    """
    job.save()
    if executor == "local":
        gpus = visible_gpus() if gpus_per_shard else []
        return run_local(job, gpu_slots(gpus, gpus_per_shard, cpu_workers), max_retries, report=report)
    if executor == "ray":
        return run_ray(job, gpus_per_shard, max_retries, ray_address, report=report)
    raise LaunchError(f"executor {executor!r}: use 'local' or 'ray' (Slurm: write_slurm_script)")


def main(argv: list[str] | None = None) -> int:
    """``python -m bpo_data.launch JOB --shard i/N``: one shard of a saved job (what every executor runs)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m bpo_data.launch", description=main.__doc__)
    parser.add_argument("job", type=Path, help="a job file written by `bpo-data launch`")
    parser.add_argument("--shard", required=True, help="i/N")
    args = parser.parse_args(argv)
    try:
        job = LaunchJob.load(args.job)
    except (OSError, ValueError, TypeError) as err:
        print(f"error: cannot read the job file {args.job}: {err}; rerun `bpo-data launch`", file=sys.stderr)
        return 2
    return run_worker(job, args.shard)


if __name__ == "__main__":
    sys.exit(main())
