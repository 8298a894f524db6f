"""`bpo-data launch`: Ray retries a killed shard, local runs reshard safely, Slurm gets a valid array."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support.llava_source import write_llava_source, write_recipe
from typer.testing import CliRunner

from bpo_data.cli import app
from bpo_data.export import export_dataset
from bpo_data.jsonl import iter_jsonl
from bpo_data.launch import LaunchJob, default_cpu_workers, gpu_slots

RECORDS = 40  # x 2 turns x 2 negative types = 160 planned pairs


def _cli(*args: str, env: dict, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-m", "bpo_data", *args], capture_output=True, text=True, env=env, timeout=600
    )
    if check and result.returncode != 0:
        raise AssertionError(f"bpo-data {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


def _records(out: Path, kind: str) -> list[dict]:
    return [rec for path in sorted(out.glob(f"{kind}-*.jsonl")) for rec in iter_jsonl(path)]


def _keys(out: Path, kind: str = "pairs") -> list[str]:
    return [rec["key"] for rec in _records(out, kind)]


def _exported_ids(out: Path, to: Path) -> list[str]:
    from datasets import load_dataset

    export_dataset([out], to, version="0.1.0")
    return load_dataset(str(to))["train"]["id"]


class LockHolder:
    """Another live process that holds one shard's lock (as a second launch of the same shard would)."""

    def __init__(self, out: Path, index: int, num_shards: int, env: dict):
        code = (
            "import sys; from bpo_data.store import ShardStore\n"
            f"with ShardStore({str(out)!r}, {index}, {num_shards}):\n"
            "    print('locked', flush=True); sys.stdin.read()\n"
        )
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
        )
        assert self.proc.stdout.readline().strip() == "locked"

    def release(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def job(tmp_path_factory, smoke_model_dir) -> dict:
    """The source, recipe, an environment reusing the session's smoke model, and a clean one-shard run."""
    root = tmp_path_factory.mktemp("launch")
    cache = root / "cache"
    cache.mkdir()
    os.symlink(smoke_model_dir, cache / "smoke-llava-v1")
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "CUDA_VISIBLE_DEVICES")}
    env.update(BPO_DATA_CACHE=str(cache), OMP_NUM_THREADS="1", COLUMNS="200")
    data, images = write_llava_source(root / "src", RECORDS)
    recipe = write_recipe(root / "r.yaml", data, images, batch_size=2, max_new_tokens=16)
    clean = root / "clean"
    _cli("generate", "--recipe", str(recipe), "--out", str(clean), "--no-progress", env=env)
    planned = set(_keys(clean)) | set(_keys(clean, "rejects"))
    assert len(planned) == RECORDS * 2 * 2
    return {"env": env, "recipe": recipe, "clean_pairs": sorted(_keys(clean)), "planned": planned}


def _dead(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(") ")[1].startswith("Z")
    except FileNotFoundError:
        return True


@pytest.mark.slow
def test_ray_retries_a_killed_shard_and_the_export_has_every_pair_once(tmp_path, job):
    pytest.importorskip("ray", reason='needs Ray: pip install "bpo-data[ray]"')
    env, n = job["env"], 4
    out = tmp_path / "out"
    blocked = LockHolder(out, 3, n, env)  # shard 3 cannot start: it must fail every retry and be named
    launch = subprocess.Popen(
        [sys.executable, "-m", "bpo_data", "launch", "--executor", "ray", "--recipe", str(job["recipe"])]
        + ["--out", str(out), "--num-shards", str(n), "--gpus-per-shard", "0", "--max-retries", "1"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # Preempt one worker mid-shard: SIGKILL the generate process that holds a shard once it has written.
        killed = None
        deadline = time.time() + 300
        while killed is None and time.time() < deadline and launch.poll() is None:
            for index in range(n - 1):
                stem = f"{index:05d}-of-{n:05d}"
                pairs, pid_file = out / f"pairs-{stem}.jsonl", out / f".pid-{stem}"
                if pairs.exists() and pairs.read_bytes().count(b"\n") >= 1 and pid_file.exists():
                    pid = int(pid_file.read_text())
                    os.kill(pid, signal.SIGKILL)
                    killed = (index, stem, pid)
                    break
            time.sleep(0.01)
        assert killed is not None, "no shard could be killed mid-run; make the source larger"
        index, stem, pid = killed
        while not _dead(pid):
            time.sleep(0.01)
        written_before_kill = {r["key"] for r in iter_jsonl(out / f"pairs-{stem}.jsonl")}
        written_before_kill |= {r["key"] for r in iter_jsonl(out / f"rejects-{stem}.jsonl")}
        stdout, stderr = launch.communicate(timeout=600)
    finally:
        if launch.poll() is None:
            launch.kill()
        blocked.release()

    assert launch.returncode == 1, stderr
    assert "shard(s) 3/4 failed on all 2 attempts" in stderr
    summary = json.loads((out / f"summary-{stem}.json").read_text())
    assert summary["already_done"] == len(written_before_kill) > 0  # the retry resumed; nothing redone
    finished = summary["already_done"] + summary["pairs_written"] + sum(summary["rejects"].values())
    assert finished == summary["pairs_planned"]
    logs = {i: (out / "logs" / f"shard-{i:05d}-of-{n:05d}.log").read_text() for i in range(n)}
    assert {i: log.count("=== bpo-data-attempt ") for i, log in logs.items()} == {
        i: 2 if i in (index, 3) else 1 for i in range(n)
    }
    assert "is being written by another process" in logs[3]
    assert "=== this attempt ended with signal SIGKILL at " in logs[index]  # the preemption, in its log

    rest = ["--out", str(out), "--shard", "3/4", "--no-progress"]
    _cli("generate", "--recipe", str(job["recipe"]), *rest, env=env)
    keys = _keys(out)
    assert len(keys) == len(set(keys)), "a pair was generated twice"
    assert set(keys) | set(_keys(out, "rejects")) == job["planned"]
    ids = _exported_ids(out, tmp_path / "dataset")
    assert sorted(ids) == job["clean_pairs"]


@pytest.mark.slow
def test_local_launch_names_failed_shards_and_resharding_generates_nothing_twice(tmp_path, job):
    # Two "GPUs": two shards at a time, one device each (the recipe itself runs on the CPU).
    env = dict(job["env"], CUDA_VISIBLE_DEVICES="0,1")
    out = tmp_path / "out"
    args = ["launch", "--recipe", str(job["recipe"]), "--out", str(out), "--max-retries", "0"]
    blocked = LockHolder(out, 1, 3, env)
    try:
        first = _cli(*args, "--num-shards", "3", env=env, check=False)
    finally:
        blocked.release()
    assert first.returncode == 1
    assert "shard(s) 1/3 failed on all 1 attempts" in first.stderr
    assert "shard 1/3 failed (attempt 1/1: exit code 1)" in first.stderr  # how each attempt ended
    headers = [
        line
        for i in range(3)
        for line in (out / "logs" / f"shard-{i:05d}-of-00003.log").read_text().splitlines()
        if line.startswith("=== bpo-data-attempt")
    ]
    assert len(headers) == 3
    assert {h.split("CUDA_VISIBLE_DEVICES=")[1].split()[0] for h in headers} == {"0", "1"}
    pairs_by_three = set(_keys(out))
    done_by_three = pairs_by_three | set(_keys(out, "rejects"))
    assert pairs_by_three and not pairs_by_three >= set(job["clean_pairs"])

    second = _cli(*args, "--num-shards", "2", "--export", str(tmp_path / "dataset"), env=env)
    summaries = [json.loads((out / f"summary-{i:05d}-of-00002.json").read_text()) for i in range(2)]
    assert sum(s["already_done"] for s in summaries) == len(done_by_three)
    keys = _keys(out)
    assert len(keys) == len(set(keys)), "a key was generated again after resharding"
    assert sum(s["pairs_written"] for s in summaries) == len(keys) - len(pairs_by_three)
    assert "duplicates dropped" not in second.stderr
    from datasets import load_dataset

    assert sorted(load_dataset(str(tmp_path / "dataset"))["train"]["id"]) == job["clean_pairs"]


@pytest.mark.slow
def test_local_launch_without_gpus_runs_cpu_workers_shards_at_once(tmp_path, job):
    env = dict(job["env"], CUDA_VISIBLE_DEVICES="")
    out = tmp_path / "out"
    args = ["launch", "--recipe", str(job["recipe"]), "--out", str(out), "-n", "2", "--cpu-workers", "2"]
    _cli(*args, env=env)
    # each shard's plan records when it began work (time.time()); its summary is written when it ends
    started = [json.loads((out / f"plan-{i:05d}-of-00002.json").read_text())["started_at"] for i in range(2)]
    finished = [(out / f"summary-{i:05d}-of-00002.json").stat().st_mtime for i in range(2)]
    # one at a time, the second shard would start only after the first wrote its summary
    assert started[1] < finished[0] and started[0] < finished[1]
    assert sorted(_keys(out)) == job["clean_pairs"]


def test_cpu_workers_default_to_the_cores_over_each_shards_threads():
    assert default_cpu_workers(1, cores=16) == 16
    assert default_cpu_workers(4, cores=16) == 4
    assert default_cpu_workers(32, cores=16) == 1
    assert default_cpu_workers(None, cores=16) == 1  # torch takes every core of an unset shard itself
    # the cores this process may use (taskset, a Slurm allocation), not the node's
    code = "from bpo_data.launch import default_cpu_workers; print(default_cpu_workers(1))"
    pinned = subprocess.run(
        ["taskset", "-c", "0", sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert pinned.returncode == 0 and pinned.stdout.strip() == "1", pinned.stderr
    assert gpu_slots([], 1, cpu_workers=3) == [None, None, None]
    assert gpu_slots(["0", "1"], 0, cpu_workers=2) == [None, None]
    assert gpu_slots(["0", "1", "2"], 1, cpu_workers=5) == ["0", "1", "2"]


_DUMP_ARGV = "import json, os, sys; open(os.environ['ARGV_FILE'], 'w').write(json.dumps(sys.argv[1:]))"


def _fake(bin_dir: Path, name: str, body: str) -> None:
    bin_dir.mkdir(exist_ok=True)
    path = bin_dir / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)


def _slurm_launch(tmp_path: Path, recipe: Path, *extra: str):
    data_dir = tmp_path / "my data"  # paths with spaces and quotes must survive the script
    data_dir.mkdir(exist_ok=True)
    (data_dir / "it's.jsonl").write_text("")
    args = ["launch", "--executor", "slurm", "--recipe", str(recipe), "--out", str(tmp_path / "out")]
    args += ["--num-shards", "4", "--gpus-per-shard", "2", "--data", str(data_dir / "it's.jsonl")]
    args += ["--image-root", str(data_dir), "--partition", "gpu-long", "--sbatch-option", "--mem=64G"]
    return CliRunner().invoke(app, [*args, *extra])


def test_slurm_script_is_a_valid_array_whose_task_runs_its_shard(tmp_path):
    data, images = write_llava_source(tmp_path / "src", 1)
    recipe = write_recipe(tmp_path / "r.yaml", data, images, batch_size=2, max_new_tokens=16)
    result = _slurm_launch(tmp_path, recipe)
    assert result.exit_code == 0, result.output
    script = tmp_path / "out" / "launch-slurm.sbatch"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    lines = script.read_text().splitlines()
    for expected in (
        "#SBATCH --array=0-3",
        "#SBATCH --requeue",
        "#SBATCH --gres=gpu:2",
        "#SBATCH --partition=gpu-long",
        "#SBATCH --mem=64G",
        "#SBATCH --job-name=bpo-t",
        f"#SBATCH --output={(tmp_path / 'out' / 'logs').resolve()}/slurm-%A_%a.out",
    ):
        assert expected in lines
    assert any(line.startswith("##SBATCH --time=") for line in lines)  # a default left for the user
    assert (tmp_path / "out" / "logs").is_dir()  # Slurm does not create the log folder itself

    # Run the array task as Slurm would, with a `python` on PATH that records its arguments.
    record = tmp_path / "argv.json"
    _fake(tmp_path / "bin", "python", f'exec {shlex.quote(sys.executable)} -c "{_DUMP_ARGV}" "$@"\n')
    env = dict(os.environ, PATH=f"{tmp_path / 'bin'}:{os.environ['PATH']}", ARGV_FILE=str(record))
    env.update(SLURM_ARRAY_TASK_ID="2", SLURM_ARRAY_JOB_ID="77")
    run = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    argv = json.loads(record.read_text())
    assert argv[:2] == ["-m", "bpo_data.launch"] and argv[3:] == ["--shard", "2/4"]
    job = LaunchJob.load(argv[2])
    assert job.num_shards == 4 and job.out_dir == (tmp_path / "out").resolve()
    assert job.paths["src"]["data"] == str((tmp_path / "my data" / "it's.jsonl").resolve())
    assert job.paths["src"]["image_root"] == str((tmp_path / "my data").resolve())
    assert job.recipe_path == str(recipe.resolve())


def test_slurm_submit_calls_sbatch_with_the_script_and_reports_its_failure(tmp_path, monkeypatch):
    data, images = write_llava_source(tmp_path / "src", 1)
    recipe = write_recipe(tmp_path / "r.yaml", data, images, batch_size=2, max_new_tokens=16)
    calls = tmp_path / "sbatch-calls"
    _fake(
        tmp_path / "bin", "sbatch", f'echo "$@" >> {shlex.quote(str(calls))}\necho "Submitted batch job 42"'
    )
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    result = _slurm_launch(tmp_path, recipe, "--submit")
    assert result.exit_code == 0, result.output
    assert calls.read_text().split() == [str((tmp_path / "out" / "launch-slurm.sbatch").resolve())]
    assert "Submitted batch job 42" in result.output

    _fake(tmp_path / "bin", "sbatch", 'echo "sbatch: error: invalid partition specified" >&2; exit 1')
    failed = _slurm_launch(tmp_path, recipe, "--submit")
    assert failed.exit_code != 0
    assert "invalid partition specified" in failed.output
