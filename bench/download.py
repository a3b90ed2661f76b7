"""Download benchmark: an s3:// checkpoint on moto's server, ours against its peers.

    uv run python bench/download.py [--size-mib 1024] [--files 8] [--runs 3]

A checkpoint of `--size-mib` MiB in `--files` shards (plus a small config.json) is put
into moto's S3 server on 127.0.0.1 and registered as s3:// references in a throwaway
local registry. Each tool then runs as a whole process, rounds interleaved, and the
median wall time of `--runs` rounds is reported:

- ours, cold: `evalwb-tui download REF --json --root <empty dir>`
- s5cmd cp at the same part size as ours (tui.services.s3.PART_SIZE)
- boto3 `download_file` with default settings, file after file
- the wandb SDK's S3 reference path: `Artifact.add_reference("s3://…")`, then
  `storage_policy.load_reference(entry, local=True)` per entry
- ours, warm: the same command again on the filled root (a cache hit)

moto reads the whole object for every ranged GET, so its CPU, not the client, bounds
ranged transfers on this box; all ranged tools pay that alike at one part size.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tui.services import s3

REPO = Path(__file__).resolve().parents[1]

MiB = 1024 * 1024
BUCKET = "bench-ckpt"
PREFIX = "ckpt"
COLLECTION = "bench-ckpt"
KEY_ID = "bench-key"
SECRET = "bench-secret"

BOTO3_SCRIPT = """
import os, sys, boto3
bucket, prefix, out = sys.argv[1:4]
client = boto3.client("s3")
for obj in client.list_objects_v2(Bucket=bucket, Prefix=prefix + "/")["Contents"]:
    client.download_file(bucket, obj["Key"], os.path.join(out, obj["Key"][len(prefix) + 1:]))
"""

WANDB_SCRIPT = """
import sys, wandb
artifact = wandb.Artifact("bench-ckpt", type="model")
artifact.add_reference(sys.argv[1])
policy = artifact.manifest.storage_policy
for entry in artifact.manifest.entries.values():
    policy.load_reference(entry, local=True)
"""


@dataclass
class Tool:
    """One contender: how to build its command for a fresh output folder."""

    name: str
    command: Callable[[Path], list[str]]
    env: dict[str, str] = field(default_factory=dict)
    seconds: list[float] = field(default_factory=list)
    inner: list[float] = field(default_factory=list)


def main() -> int:
    args = parse_args()
    work = Path(tempfile.mkdtemp(prefix="evalwb-bench-", dir=args.workdir))
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        env = base_env(work, endpoint)
        total = seed(endpoint, env, args.size_mib, args.files)
        run_all(work, endpoint, env, total, args.runs)
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024, help="checkpoint size (MiB)")
    parser.add_argument("--files", type=int, default=8, help="number of shards")
    parser.add_argument("--runs", type=int, default=3, help="rounds; medians are reported")
    parser.add_argument("--workdir", default=None, help="where outputs go (default: tmp)")
    return parser.parse_args()


def base_env(work: Path, endpoint: str) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "TERM")}
    return {
        **keep,
        "HOME": str(work / "home"),
        "XDG_CONFIG_HOME": str(work / "xdg-config"),
        "XDG_CACHE_HOME": str(work / "xdg-cache"),
        "XDG_DATA_HOME": str(work / "xdg-data"),
        "PYTHONPATH": str(REPO),
        "AWS_ACCESS_KEY_ID": KEY_ID,
        "AWS_SECRET_ACCESS_KEY": SECRET,
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_S3_ENDPOINT_URL": endpoint,
        "EVALWB_REGISTRY_DIR": str(work / "registry"),
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
        "WANDB_DIR": str(work / "wandb"),
    }


def seed(endpoint: str, env: dict[str, str], size_mib: int, files: int) -> int:
    """Put the shards into moto and register them; the total bytes to fetch."""
    from tui.services.registry.local import LocalRegistry
    from tui.services.settings import Paths, load_settings

    work = Path(env["HOME"]).parent
    settings = load_settings(env, paths=Paths(*(work / "dirs" / n for n in "abcd")))
    client = s3.make_client(settings)
    client.create_bucket(Bucket=BUCKET)
    shard = size_mib * MiB // files
    print(f"seeding {files} x {shard / MiB:.0f} MiB into moto at {endpoint} ...", flush=True)
    client.put_object(Bucket=BUCKET, Key=f"{PREFIX}/config.json", Body=b'{"model_type": "x"}')
    for i in range(files):
        key = f"{PREFIX}/model-{i + 1:05d}-of-{files:05d}.safetensors"
        client.put_object(Bucket=BUCKET, Key=key, Body=os.urandom(shard))
    LocalRegistry(settings.registry_dir).add_version(
        COLLECTION, f"s3://{BUCKET}/{PREFIX}", settings=settings
    )
    return sum(size for _, size, _ in s3.list_prefix(f"s3://{BUCKET}/{PREFIX}", client))


def tools(env: dict[str, str], endpoint: str) -> list[Tool]:
    python = sys.executable
    s5cmd = shutil.which("s5cmd") or str(Path(python).with_name("s5cmd"))
    part_mib = str(s3.PART_SIZE // MiB)

    def ours(out: Path) -> list[str]:
        return [python, "-m", "tui.cli", "download", COLLECTION, "--json", "--root", str(out)]

    return [
        Tool("ours, cold", ours),
        Tool(
            f"s5cmd cp, {part_mib} MiB parts",
            lambda out: [
                s5cmd,
                "--endpoint-url",
                endpoint,
                "cp",
                "--part-size",
                part_mib,
                f"s3://{BUCKET}/{PREFIX}/*",
                f"{out}/",
            ],
        ),
        Tool(
            "boto3 download_file",
            lambda out: [python, "-c", BOTO3_SCRIPT, BUCKET, PREFIX, str(out)],
        ),
        Tool(
            "wandb SDK reference",
            lambda out: [python, "-c", WANDB_SCRIPT, f"s3://{BUCKET}/{PREFIX}"],
        ),
        Tool("ours, warm hit", ours),
    ]


def run_all(work: Path, endpoint: str, env: dict[str, str], total: int, runs: int) -> None:
    contenders = tools(env, endpoint)
    cold, warm = contenders[0], contenders[-1]
    for round_no in range(1, runs + 1):
        for tool in contenders[:-1]:
            out = work / "out"
            out.mkdir()
            run_env = {**env, "WANDB_CACHE_DIR": str(out)}
            seconds, stdout = timed(tool.command(out), run_env)
            fetched = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
            if fetched < total:
                raise SystemExit(f"{tool.name} fetched {fetched} of {total} bytes")
            tool.seconds.append(seconds)
            if tool is cold:
                tool.inner.append(json.loads(stdout)["seconds"])
                seconds, stdout = timed(warm.command(out), run_env)
                result = json.loads(stdout)
                if not result["cache_hit"]:
                    raise SystemExit("the warm run was no cache hit")
                warm.seconds.append(seconds)
                warm.inner.append(result["seconds"])
            shutil.rmtree(out)
        print(f"round {round_no}/{runs} done", flush=True)
    report(contenders, total)


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(argv, env=env, capture_output=True, text=True, cwd=REPO)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{argv[0]} failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    return seconds, done.stdout


def report(contenders: list[Tool], total: int) -> None:
    base = next(t for t in contenders if t.name.startswith("s5cmd"))
    ref = statistics.median(base.seconds)
    cold = statistics.median(contenders[0].seconds)
    print(f"\n{total / MiB:.0f} MiB in {len(contenders)} tools, medians of {len(base.seconds)}")
    print("| tool | median s | MiB/s | × s5cmd | in-process s |")
    print("|---|---:|---:|---:|---:|")
    for tool in contenders:
        med = statistics.median(tool.seconds)
        inner = f"{statistics.median(tool.inner):.3f}" if tool.inner else ""
        print(f"| {tool.name} | {med:.2f} | {total / MiB / med:.0f} | {med / ref:.2f} | {inner} |")
    wandb = statistics.median(contenders[3].seconds)
    warm = statistics.median(contenders[-1].seconds)
    warm_inner = statistics.median(contenders[-1].inner)
    print(f"\nours cold vs s5cmd: {cold / ref:.2f}× (target ≤ 1.3×)")
    print(f"wandb SDK path vs ours cold: {wandb / cold:.2f}× slower (target ≥ 3×)")
    print(
        f"warm hit: {warm / cold:.1%} of cold as a whole process, "
        f"{warm_inner / cold:.2%} inside it (target ≤ 2%)"
    )


if __name__ == "__main__":
    sys.exit(main())
