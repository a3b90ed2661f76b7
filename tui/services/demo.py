"""Demo content for the local registry: models, versions, aliases, lineage and results.

`seed_demo(root)` fills a local registry at `root` with three model collections of small
Hugging-Face-style checkpoints (generated deterministically, a few KiB a file), the
`my-model-local` twin whose entries are `file://` references to checkpoint folders kept
under `root/checkpoints/`, and the real eval-framework results shipped in
`tui/demo_data/eval-framework/` as `eval` artifacts named the way eval-framework's own
uploader names them.

Lineage joins them the way W&B does: a training run produced each model version; an
eval run used `my-model:v3` (or `v4`) and produced the results artifact, so the runs
in a version's `used_by` are the `produced_by` runs of its results.

Seeding is idempotent: a second call finds the completion marker and returns at once;
a seed cut short resumes where it stopped.
"""

from __future__ import annotations

import json
import os
import random
import struct
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

# default_demo_root is this module's API too (commands, tests and the benchmark use it).
from tui.services.demo_marker import DEMO_VERSION, MARKER_NAME, is_seeded
from tui.services.demo_marker import default_demo_root as default_demo_root
from tui.services.registry.local import LocalRegistry
from tui.services.registry.protocol import RegistryError, RunInfo

LOCK_NAME = ".demo-seed.lock"
DEMO_TAG = "demo"
DATA_DIR = Path(__file__).resolve().parent.parent / "demo_data"
RESULTS_DIR = DATA_DIR / "eval-framework"
EXPECTED_ARTIFACTS = RESULTS_DIR / "expected-artifacts.json"
# eval-framework names a checkpoint org/proj/my-model:vN as HFLLM_checkpoint_org_proj_my-model_vN.
RESULTS_MODEL = "my-model"
RESULTS_ENTITY = "org"
RESULTS_PROJECT = "proj"
EPOCH = datetime(2026, 9, 1, 9, 0, tzinfo=UTC)
TRANSFORMERS_VERSION = "4.44.2"


@dataclass(frozen=True)
class ModelPlan:
    """One demo model collection and how its checkpoints look."""

    name: str
    description: str
    tags: tuple[str, ...]
    base_model: str
    architecture: str
    model_type: str
    parameter_count: int
    config: Mapping[str, Any]
    method: str
    learning_rate: float
    steps_per_version: int
    data_mix: Mapping[str, float]
    versions: int
    aliases: Mapping[str, int]
    start_day: int
    tokens: Mapping[str, Any] = field(default_factory=dict)


_LLAMA3_TOKENS = {
    "bos_token": "<|begin_of_text|>",
    "eos_token": "<|end_of_text|>",
    "bos_token_id": 128000,
    "eos_token_id": 128001,
    "model_max_length": 8192,
}
_MISTRAL_TOKENS = {
    "bos_token": "<s>",
    "eos_token": "</s>",
    "bos_token_id": 1,
    "eos_token_id": 2,
    "model_max_length": 32768,
}

MODELS: tuple[ModelPlan, ...] = (
    ModelPlan(
        name="llama-3-8b-sft",
        description="Llama 3 8B, supervised fine-tuning on the instruction mix.",
        tags=("llama", "sft", "8b"),
        base_model="meta-llama/Meta-Llama-3-8B",
        architecture="LlamaForCausalLM",
        model_type="llama",
        parameter_count=8_030_261_248,
        config={
            "hidden_size": 4096,
            "intermediate_size": 14336,
            "num_attention_heads": 32,
            "num_hidden_layers": 32,
            "num_key_value_heads": 8,
            "vocab_size": 128256,
            "max_position_embeddings": 8192,
            "rope_theta": 500000.0,
            "rms_norm_eps": 1e-05,
        },
        method="sft",
        learning_rate=2e-5,
        steps_per_version=1500,
        data_mix={"ultrachat": 0.45, "openhermes": 0.3, "code_alpaca": 0.15, "gsm8k_train": 0.1},
        versions=5,
        aliases={"stable": 1, "production": 2, "best": 3, "candidate": 4},
        start_day=0,
        tokens=_LLAMA3_TOKENS,
    ),
    ModelPlan(
        name="mistral-7b-dpo",
        description="Mistral 7B, DPO on preference pairs after an SFT warm start.",
        tags=("mistral", "dpo", "7b"),
        base_model="mistralai/Mistral-7B-v0.1",
        architecture="MistralForCausalLM",
        model_type="mistral",
        parameter_count=7_241_732_096,
        config={
            "hidden_size": 4096,
            "intermediate_size": 14336,
            "num_attention_heads": 32,
            "num_hidden_layers": 32,
            "num_key_value_heads": 8,
            "vocab_size": 32000,
            "max_position_embeddings": 32768,
            "rope_theta": 10000.0,
            "rms_norm_eps": 1e-05,
            "sliding_window": 4096,
        },
        method="dpo",
        learning_rate=5e-7,
        steps_per_version=400,
        data_mix={"ultrafeedback": 0.6, "hh_rlhf": 0.25, "orca_dpo_pairs": 0.15},
        versions=4,
        aliases={"production": 1, "best": 2, "candidate": 3},
        start_day=10,
        tokens=_MISTRAL_TOKENS,
    ),
    ModelPlan(
        name=RESULTS_MODEL,
        description="Our 1B model, continued pretraining; v3 and v4 have eval-framework results.",
        tags=("llama", "pretrain", "1b"),
        base_model="meta-llama/Llama-3.2-1B",
        architecture="LlamaForCausalLM",
        model_type="llama",
        parameter_count=1_235_814_400,
        config={
            "hidden_size": 2048,
            "intermediate_size": 8192,
            "num_attention_heads": 32,
            "num_hidden_layers": 16,
            "num_key_value_heads": 8,
            "vocab_size": 128256,
            "max_position_embeddings": 131072,
            "rope_theta": 500000.0,
            "rms_norm_eps": 1e-05,
            "tie_word_embeddings": True,
        },
        method="pretrain",
        learning_rate=3e-4,
        steps_per_version=10000,
        data_mix={"fineweb_edu": 0.55, "the_stack_v2": 0.2, "open_web_math": 0.15, "wiki": 0.1},
        versions=5,
        aliases={"production": 3, "best": 4, "candidate": 4},
        start_day=20,
        tokens=_LLAMA3_TOKENS,
    ),
)

# The twin of my-model: the same checkpoints, as file:// references to shared disk.
TWIN = f"{RESULTS_MODEL}-local"


@dataclass(frozen=True)
class DemoInfo:
    """Where the demo lives and what it holds."""

    root: Path
    collections: tuple[str, ...]
    eval_collections: tuple[str, ...]
    seeded: bool

    @property
    def registry_dir(self) -> Path:
        """The local registry's root (the demo root itself)."""
        return self.root

    @property
    def checkpoints_dir(self) -> Path:
        """The checkpoint folders the `-local` twin refers to."""
        return self.root / "checkpoints"

    @property
    def results_dir(self) -> Path:
        """The packaged eval-framework output folders."""
        return RESULTS_DIR


def seed_demo(root: Path) -> DemoInfo:
    """Seed the demo registry at `root` (idempotent; fast once seeded)."""
    root = Path(root)
    results = _results_plan()
    models = (*(m.name for m in MODELS), TWIN)
    evals = tuple(r.artifact for r in results)
    if is_seeded(root):
        return DemoInfo(root, models, evals, seeded=False)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RegistryError(f"cannot create demo folder {root}: {exc.strerror or exc}") from None
    with _seed_lock(root):
        if is_seeded(root):
            return DemoInfo(root, models, evals, seeded=False)
        registry = LocalRegistry(root)
        for plan in MODELS:
            _seed_model(registry, root, plan)
        _seed_results(registry, results)
        _write_marker(root, models + evals)
    return DemoInfo(root, models, evals, seeded=True)


# -- models --------------------------------------------------------------------------


def _seed_model(registry: LocalRegistry, root: Path, plan: ModelPlan) -> None:
    has_twin = plan.name == RESULTS_MODEL
    names = (plan.name, TWIN) if has_twin else (plan.name,)
    done = {name: _claim_collection(registry, name, plan) for name in names}
    for index in range(plan.versions):
        if all(done[name] > index for name in names):
            continue
        if has_twin:
            folder = root / "checkpoints" / plan.name / f"v{index}"
            _write_checkpoint(folder, plan, index)
            _add_model_version(registry, plan.name, plan, index, folder, done)
            _add_model_version(registry, TWIN, plan, index, folder.as_uri(), done)
            continue
        with tempfile.TemporaryDirectory(dir=root, prefix=".demo-") as tmp:
            folder = Path(tmp) / f"v{index}"
            _write_checkpoint(folder, plan, index)
            _add_model_version(registry, plan.name, plan, index, folder, done)
    for name in names:
        for alias, index in plan.aliases.items():
            registry.set_alias(f"{name}:v{index}", alias)
        for index in range(plan.versions):
            registry.add_lineage(f"{name}:v{index}", produced_by=_training_run(plan, index))


def _claim_collection(registry: LocalRegistry, name: str, plan: ModelPlan) -> int:
    """Create the collection (or find the demo's own); the number of versions it has."""
    twin = name != plan.name
    description = (
        f"file:// twin of {plan.name}: the same checkpoints, read in place from shared disk."
        if twin
        else plan.description
    )
    tags = (*plan.tags, "local-twin", DEMO_TAG) if twin else (*plan.tags, DEMO_TAG)
    collection = registry.create_collection(
        name,
        description=description,
        tags=tags,
        exist_ok=True,
        created_at=_stamp(plan.start_day),
    )
    if DEMO_TAG not in collection.tags:
        raise RegistryError(
            f"{registry.root} already holds a collection {name!r} the demo did not make; "
            "point EVALWB_REGISTRY_DIR at an empty folder for the demo"
        )
    return collection.version_count


def _add_model_version(
    registry: LocalRegistry,
    name: str,
    plan: ModelPlan,
    index: int,
    source: Path | str,
    done: dict[str, int],
) -> None:
    if done[name] > index:
        return
    step = (index + 1) * plan.steps_per_version
    registry.add_version(
        name,
        source,
        metadata=_model_metadata(plan, index),
        description=f"{plan.name} after {step:,} {plan.method} steps.",
        tags=("bf16", "hf-checkpoint"),
        created_at=_stamp(plan.start_day + 3 * index, hours=index),
    )
    done[name] = index + 1


def _model_metadata(plan: ModelPlan, index: int) -> dict[str, Any]:
    rng = random.Random(f"{plan.name}:{index}:meta")
    # Shift the mix a little each version, as a data team would, keeping the sum at 1.
    raw = {k: v * (1 + rng.uniform(-0.15, 0.15)) for k, v in plan.data_mix.items()}
    total = sum(raw.values())
    meta: dict[str, Any] = {
        "base_model": plan.base_model,
        "architecture": plan.architecture,
        "parameter_count": plan.parameter_count,
        "training_step": (index + 1) * plan.steps_per_version,
        "training_method": plan.method,
        "learning_rate": plan.learning_rate,
        "lr_schedule": "cosine",
        "global_batch_size": 512 if plan.method == "pretrain" else 128,
        "sequence_length": 4096,
        "tokens_seen": (index + 1) * plan.steps_per_version * 512 * 4096,
        "data_mix": {k: round(v / total, 3) for k, v in raw.items()},
        "dtype": "bfloat16",
        "train_loss": round(2.4 - 0.18 * index + rng.uniform(-0.03, 0.03), 4),
    }
    if plan.method == "dpo":
        meta["dpo_beta"] = 0.1
    return meta


def _training_run(plan: ModelPlan, index: int) -> RunInfo:
    step = (index + 1) * plan.steps_per_version
    return RunInfo(
        id=_run_id(f"train:{plan.name}:{index}"),
        name=f"{plan.name}-{plan.method}-step{step}",
        project="llm-training",
        entity=RESULTS_ENTITY,
        job_type=plan.method,
        group=plan.name,
        state="finished",
    )


# -- checkpoint files ----------------------------------------------------------------


def _write_checkpoint(folder: Path, plan: ModelPlan, index: int) -> None:
    """A small Hugging-Face-style checkpoint folder, the same bytes on every call."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(f"{plan.name}:{index}:weights")
    shards = {
        "model-00001-of-00002.safetensors": _shard_tensors(1, plan),
        "model-00002-of-00002.safetensors": _shard_tensors(2, plan),
    }
    weight_map: dict[str, str] = {}
    total = 0
    for shard, tensors in shards.items():
        data = _safetensors(tensors, rng)
        total += len(data) - 8 - struct.unpack("<Q", data[:8])[0]
        weight_map.update({name: shard for name in tensors})
        _write(folder / shard, data)
    files = {
        "config.json": _hf_config(plan),
        "generation_config.json": _generation_config(plan),
        "tokenizer_config.json": _tokenizer_config(plan),
        "special_tokens_map.json": {
            "bos_token": plan.tokens["bos_token"],
            "eos_token": plan.tokens["eos_token"],
        },
        "model.safetensors.index.json": {
            "metadata": {"total_size": total},
            "weight_map": dict(sorted(weight_map.items())),
        },
        "trainer_state.json": _trainer_state(plan, index),
    }
    for name, content in files.items():
        _write(folder / name, (json.dumps(content, indent=2, sort_keys=True) + "\n").encode())


def _write(path: Path, data: bytes) -> None:
    if path.is_file() and path.read_bytes() == data:
        return
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _shard_tensors(shard: int, plan: ModelPlan) -> dict[str, tuple[int, int]]:
    """Tensor names and (scaled-down) shapes for one shard."""
    width, vocab = 16, 64
    layers = range(0, 2) if shard == 1 else range(2, 4)
    tensors: dict[str, tuple[int, int]] = {}
    if shard == 1:
        tensors["model.embed_tokens.weight"] = (vocab, width)
    for layer in layers:
        prefix = f"model.layers.{layer}"
        for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
            tensors[f"{prefix}.self_attn.{proj}.weight"] = (width, width)
        tensors[f"{prefix}.mlp.up_proj.weight"] = (2 * width, width)
        tensors[f"{prefix}.input_layernorm.weight"] = (1, width)
    if shard == 2:
        tensors["model.norm.weight"] = (1, width)
        if not plan.config.get("tie_word_embeddings"):
            tensors["lm_head.weight"] = (vocab, width)
    return tensors


def _safetensors(tensors: Mapping[str, tuple[int, int]], rng: random.Random) -> bytes:
    """Bytes in the safetensors layout: u64 header length, JSON header, BF16 data."""
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, shape in sorted(tensors.items()):
        size = shape[0] * shape[1] * 2
        header[name] = {
            "dtype": "BF16",
            "shape": list(shape),
            "data_offsets": [offset, offset + size],
        }
        offset += size
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + rng.randbytes(offset)


def _hf_config(plan: ModelPlan) -> dict[str, Any]:
    return {
        "architectures": [plan.architecture],
        "model_type": plan.model_type,
        "bos_token_id": plan.tokens["bos_token_id"],
        "eos_token_id": plan.tokens["eos_token_id"],
        "hidden_act": "silu",
        "torch_dtype": "bfloat16",
        "transformers_version": TRANSFORMERS_VERSION,
        "use_cache": True,
        **plan.config,
    }


def _generation_config(plan: ModelPlan) -> dict[str, Any]:
    return {
        "bos_token_id": plan.tokens["bos_token_id"],
        "eos_token_id": plan.tokens["eos_token_id"],
        "do_sample": True,
        "temperature": 0.6,
        "top_p": 0.9,
        "transformers_version": TRANSFORMERS_VERSION,
    }


def _tokenizer_config(plan: ModelPlan) -> dict[str, Any]:
    return {
        "bos_token": plan.tokens["bos_token"],
        "eos_token": plan.tokens["eos_token"],
        "clean_up_tokenization_spaces": True,
        "model_max_length": plan.tokens["model_max_length"],
        "tokenizer_class": "PreTrainedTokenizerFast",
    }


def _trainer_state(plan: ModelPlan, index: int) -> dict[str, Any]:
    rng = random.Random(f"{plan.name}:{index}:trainer")
    last = (index + 1) * plan.steps_per_version
    every = plan.steps_per_version // 5
    history = [
        {
            "step": step,
            "loss": round(2.9 - 0.5 * step / last - 0.05 * index + rng.uniform(-0.05, 0.05), 4),
            "learning_rate": plan.learning_rate,
        }
        for step in range(every, last + 1, every)
    ][-10:]
    return {
        "global_step": last,
        "max_steps": plan.versions * plan.steps_per_version,
        "log_history": history,
    }


# -- eval results ----------------------------------------------------------------------


@dataclass(frozen=True)
class ResultPlan:
    """One eval-framework output folder and the artifact eval-framework names it as."""

    folder: Path
    artifact: str
    alias: str
    llm_name: str
    task: str
    model_version: int


def _results_plan() -> list[ResultPlan]:
    try:
        expected = json.loads(EXPECTED_ARTIFACTS.read_text())
    except (OSError, ValueError) as exc:
        raise RegistryError(f"demo data {EXPECTED_ARTIFACTS} cannot be read: {exc}") from None
    plans = []
    for rel, info in sorted(expected.items()):
        llm_name = info["group_in_eval_framework"]
        plans.append(
            ResultPlan(
                folder=RESULTS_DIR / rel,
                artifact=info["artifact_name"],
                alias=info["alias"],
                llm_name=llm_name,
                task=info["job_type"],
                model_version=int(llm_name.rpartition("_v")[2]),
            )
        )
    return plans


def _seed_results(registry: LocalRegistry, results: list[ResultPlan]) -> None:
    for number, plan in enumerate(results):
        collection = registry.create_collection(
            plan.artifact,
            type="eval",
            description=f"eval-framework results: {plan.task} on {plan.llm_name}",
            tags=("eval-framework", plan.task, DEMO_TAG),
            exist_ok=True,
            created_at=_stamp(40 + number // 4, hours=number % 4),
        )
        if DEMO_TAG not in collection.tags:
            raise RegistryError(
                f"{registry.root} already holds a collection {plan.artifact!r} the demo did "
                "not make; point EVALWB_REGISTRY_DIR at an empty folder for the demo"
            )
        if collection.version_count == 0:
            registry.add_version(
                plan.artifact,
                plan.folder,
                aliases=(plan.alias,),
                metadata=_read_metadata(plan.folder),
                created_at=_stamp(40 + number // 4, hours=number % 4),
            )
        run = _eval_run(plan)
        registry.add_lineage(f"{plan.artifact}:v0", produced_by=run)
        registry.add_lineage(f"{RESULTS_MODEL}:v{plan.model_version}", used_by=(run,))


def _read_metadata(folder: Path) -> dict[str, Any]:
    path = folder / "metadata.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise RegistryError(f"demo data {path} cannot be read: {exc}") from None


def _eval_run(plan: ResultPlan) -> RunInfo:
    return RunInfo(
        id=_run_id(f"eval:{plan.artifact}"),
        name=f"{plan.task}-{plan.folder.name}",
        project=RESULTS_PROJECT,
        entity=RESULTS_ENTITY,
        job_type=plan.task,
        group=plan.llm_name,
        state="finished",
    )


# -- bookkeeping ----------------------------------------------------------------------


def _run_id(seed: str) -> str:
    """An 8-character run id like W&B's, stable for a given seed."""
    import hashlib  # here, not at the top: opening the seeded demo needs no hashing

    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
    number = int.from_bytes(hashlib.sha256(seed.encode()).digest()[:8], "big")
    chars = []
    for _ in range(8):
        number, rest = divmod(number, len(alphabet))
        chars.append(alphabet[rest])
    return "".join(chars)


def _stamp(days: int, hours: int = 0) -> str:
    return (EPOCH + timedelta(days=days, hours=hours)).strftime("%Y-%m-%dT%H:%M:%SZ")


def _write_marker(root: Path, names: tuple[str, ...]) -> None:
    payload = {"demo_version": DEMO_VERSION, "collections": list(names)}
    _write(root / MARKER_NAME, (json.dumps(payload, indent=2) + "\n").encode())


@contextmanager
def _seed_lock(root: Path) -> Iterator[None]:
    """Hold an exclusive lock so two seeders never number versions twice."""
    try:
        import fcntl
    except ImportError:  # no flock on this platform; seeding is still safe for one seeder
        yield
        return
    with (root / LOCK_NAME).open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
