"""Run every shard of a recipe: on this machine, as Ray tasks, or as a Slurm job array.

Each shard is the command ``bpo-data generate ... --out DIR --shard i/N`` in a process of its own,
so a preempted or killed shard is simply a process that died: running the same command again
resumes it per record (the shard store skips keys already written, by any shard count). Ray retries
a failed shard task, Slurm requeues an array task, and the local executor retries in place.
"""

from __future__ import annotations

import os
import queue
import shlex
import signal
import socket
import subprocess
import sys
import sysconfig
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from bpo_data.smoke_model import SMOKE_MODEL_ID

# Attempt headers in a shard's log carry this word and the launch id, so attempts can be counted.
ATTEMPT = "bpo-data-attempt"
LOG_TAIL_LINES = 15


class LaunchError(RuntimeError):
    """A launch that cannot start; the message says what to change."""


class ShardFailed(RuntimeError):
    """One attempt of one shard exited non-zero (raised inside Ray tasks too, so Ray retries it)."""


@dataclass(frozen=True)
class LaunchJob:
    """What every shard runs: ``bpo-data generate`` with ``flags`` into ``out_dir``, as shard i of N."""

    out_dir: Path
    num_shards: int
    flags: tuple[str, ...] = ()

    def fixed_args(self) -> list[str]:
        """The generate arguments every shard shares (all but ``--shard``)."""
        return ["generate", *self.flags, "--out", str(self.out_dir), "--no-progress"]

    def generate_args(self, index: int) -> list[str]:
        return [*self.fixed_args(), "--shard", f"{index}/{self.num_shards}"]

    def log_path(self, index: int) -> Path:
        return self.out_dir / "logs" / f"shard-{index:05d}-of-{self.num_shards:05d}.log"


@dataclass
class ShardOutcome:
    index: int
    ok: bool
    attempts: int
    error: str = ""


# Generate options whose values may name a file or folder on this machine.
PATH_OPTIONS = frozenset({"recipe", "data", "image_root", "model"})


def _absolute_if_path(name: str, value: str) -> str:
    """Workers may start in another folder, or on another node: pass paths that exist here absolute."""
    if name not in PATH_OPTIONS or (name == "model" and value == SMOKE_MODEL_ID) or not Path(value).exists():
        return value
    return str(Path(value).resolve())


def make_job(
    out_dir: Path, num_shards: int, options: dict[str, str | None], strict: bool = False
) -> LaunchJob:
    """A job from generate's options (``recipe``, ``source``, ``data``, ``image_root``, ``model``, …).

    ``recipe``, ``data``, ``image_root`` and ``model`` values that exist here are made absolute;
    names (a source of the recipe, a Hub model id, ``smoke``) are passed as given.
    """
    if num_shards < 1:
        raise LaunchError(f"--num-shards must be at least 1, got {num_shards}")
    flags: list[str] = []
    for name, value in options.items():
        if value is not None:
            flags += [f"--{name.replace('_', '-')}", _absolute_if_path(name, value)]
    if strict:
        flags.append("--strict")
    return LaunchJob(out_dir=Path(out_dir).resolve(), num_shards=num_shards, flags=tuple(flags))


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


def run_attempt(job: LaunchJob, index: int, launch_id: str, cuda_devices: str | None = None) -> str:
    """Run shard ``index`` once as ``python -m bpo_data generate``, output appended to its log.

    Returns the host it ran on; raises ``ShardFailed`` with the log's last lines when it fails.
    """
    log = job.log_path(index)
    log.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    if cuda_devices is not None:
        env["CUDA_VISIBLE_DEVICES"] = cuda_devices
    host = socket.gethostname()
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    with open(log, "a", encoding="utf-8") as handle:
        handle.write(
            f"=== {ATTEMPT} {launch_id} shard {index}/{job.num_shards} on {host} at {started} "
            f"CUDA_VISIBLE_DEVICES={env.get('CUDA_VISIBLE_DEVICES', '(unset)')} ===\n"
        )
        handle.flush()
        result = subprocess.run(
            [sys.executable, "-m", "bpo_data", *job.generate_args(index)],
            stdout=handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
        )
    if result.returncode != 0:
        raise ShardFailed(
            f"shard {index}/{job.num_shards} on {host} ended with {_describe_exit(result.returncode)}; "
            f"last lines of {log}:\n{_tail(log)}"
        )
    return host


def count_attempts(job: LaunchJob, index: int, launch_id: str) -> int:
    """Attempts this launch made at a shard, read from the attempt headers in its log."""
    marker = f"{ATTEMPT} {launch_id} "
    try:
        with open(job.log_path(index), encoding="utf-8", errors="replace") as handle:
            return sum(1 for line in handle if marker in line)
    except FileNotFoundError:
        return 0


def new_launch_id() -> str:
    return uuid.uuid4().hex[:12]


# --- local -------------------------------------------------------------------------------------


def visible_gpus() -> list[str]:
    """The GPUs this process may use: ``CUDA_VISIBLE_DEVICES`` when set, else what torch sees."""
    declared = os.environ.get("CUDA_VISIBLE_DEVICES")
    if declared is not None:
        return [d.strip() for d in declared.split(",") if d.strip() and d.strip() != "-1"]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


def gpu_slots(gpus: list[str], gpus_per_shard: int) -> list[str | None]:
    """Groups of ``gpus_per_shard`` GPUs, one concurrent shard each; ``[None]`` = one shard at a time."""
    if gpus_per_shard == 0 or not gpus:
        return [None]
    if len(gpus) < gpus_per_shard:
        raise LaunchError(
            f"--gpus-per-shard {gpus_per_shard} but only {len(gpus)} GPU(s) are visible ({','.join(gpus)}); "
            "lower --gpus-per-shard or set CUDA_VISIBLE_DEVICES"
        )
    return [
        ",".join(gpus[start : start + gpus_per_shard])
        for start in range(0, len(gpus) - gpus_per_shard + 1, gpus_per_shard)
    ]


def run_local(
    job: LaunchJob,
    slots: list[str | None],
    max_retries: int,
    launch_id: str,
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
                    run_attempt(job, index, launch_id, slot)
                except ShardFailed as err:
                    error = str(err)
                    report(f"shard {index}/{job.num_shards} failed (attempt {attempt}/{attempts})")
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
    launch_id: str,
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
            ).remote(job, index, launch_id): index
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
                outcomes[index] = ShardOutcome(
                    index, False, count_attempts(job, index, launch_id), str(cause)
                )
                report(f"shard {index}/{job.num_shards} failed on every attempt")
                continue
            outcomes[index] = ShardOutcome(index, True, count_attempts(job, index, launch_id))
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
    scripts = sysconfig.get_path("scripts")
    n = job.num_shards
    command = " ".join(shlex.quote(a) for a in ["bpo-data", *job.fixed_args()])
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
        "# bpo-data must be on PATH here: sbatch passes on the submitting shell's environment by default;",
        f"# otherwise activate its environment, e.g. export PATH={shlex.quote(scripts)}:$PATH",
        f'echo "shard ${{SLURM_ARRAY_TASK_ID}}/{n} on $(hostname), job ${{SLURM_ARRAY_JOB_ID}}"',
        f'exec {command} --shard "${{SLURM_ARRAY_TASK_ID}}/{n}"',
        "",
    ]
    return "\n".join(lines)


def write_slurm_script(job: LaunchJob, options: SlurmOptions, path: Path | None = None) -> Path:
    """Write the script (default ``OUT/launch-slurm.sbatch``) and the log folder Slurm needs to exist."""
    script = path or job.out_dir / "launch-slurm.sbatch"
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
