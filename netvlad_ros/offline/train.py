"""NetVLAD training with weak supervision and a triplet ranking loss (arXiv 1511.07247, Sec. 4).

Pipeline (:func:`train`, from a YAML config with :func:`train_from_config`):

1. Model: NetVLAD centres by k-means on local descriptors of training database
   images (``clusters.create_model``), or an existing model file to fine-tune.
2. Trainable layers: ``train_from`` = ``pool`` (NetVLAD only), ``last`` (the
   paper's "conv5": the backbone's last block/stage + pooling, the default),
   ``all``, or an integer (the last N backbone blocks). Batch-norm layers keep
   their ImageNet statistics (eval mode): tuples are small and correlated, and
   frozen statistics make DDP exactly equal to one process.
3. Each step takes ``batch_size`` queries; for each, :class:`mining.HardNegativeMiner`
   picks the best potential positive (≤10 m, closest in descriptor space) and
   the 10 hardest violating definite negatives (>25 m) out of 1,000 sampled +
   the previous hardest, on a descriptor cache refreshed every
   ``cache_refresh_queries`` queries. Loss per query:
   Σ_j max(0, d²(q,p*) + m − d²(q,n_j)), m = 0.1, averaged over the batch's
   queries (a skipped query counts as 0, so DDP's gradient mean equals one
   process over the whole batch).
4. SGD (momentum, weight decay) or Adam, StepLR; AMP + cudnn.benchmark on CUDA.
5. Validation Recall@N each epoch; early stopping on Recall@5; TensorBoard logs;
   tqdm bars; checkpoints (safetensors + JSON, never pickle) with exact resume.
6. PCA whitening fitted on the trained network's training-database descriptors
   (``whitening_dim`` > 0), then the model file + card with provenance.

Multi-GPU / multi-node: run under ``torchrun`` (``torchrun --nproc_per_node=8
--no-python netvlad-ros train config.yaml`` or ``torchrun ... -m
netvlad_ros.offline.train config.yaml``): the process group is initialised from
the environment (NCCL on CUDA, gloo on CPU), the model is wrapped in
DistributedDataParallel, queries are sharded with DistributedSampler and the
descriptor cache is all-gathered.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler

from .. import __version__
from ..model import ModelCard, PlaceNet, load_model, resolve_device, save_model
from ..model.card import Preprocessing
from ..model.clusters import create_model, new_card
from ..model.preprocess import to_network_input
from ..model.whitening import Whitening, fit_pca_whitening, load_whitening
from .datasets import PlaceDataset, dataset_from_spec
from .evaluate import RECALL_NS, evaluate_network
from .mining import DescriptorCache, HardNegativeMiner, Triplet, describe_images


class TrainConfigError(ValueError):
    """The training configuration is malformed (unknown key, wrong type or value)."""


DEFAULT_CONFIG: dict[str, Any] = {
    "seed": 0,
    "output_dir": "runs/netvlad",
    "device": "auto",
    "data": {"train": None, "val": None},
    "model": {
        "init_model": None,
        "backbone": "vgg16",
        "cut": None,
        "pooling": "netvlad",
        "num_clusters": 64,
        "whitening_dim": 4096,
        "max_side": 640,
        "backbone_weights": "imagenet",
        "allow_download": False,
        "init_images": 500,
        "per_image": 100,
        "name": "",
    },
    "mining": {
        "pos_radius": None,
        "neg_radius": None,
        "num_sampled": 1000,
        "num_negatives": 10,
        "margin": 0.1,
        "cache_refresh_queries": 1000,
        "cache_batch_size": 24,
    },
    "train": {
        "train_from": "last",
        "epochs": 30,
        "batch_size": 4,
        "optimizer": "sgd",
        "lr": 0.0001,
        "momentum": 0.9,
        "weight_decay": 0.001,
        "lr_step": 5,
        "lr_gamma": 0.5,
        "amp": True,
        "deterministic": False,
        "patience": 10,
        "eval_initial": True,
        "max_steps": None,
        "checkpoint_every": 0,
        "resume": True,
        "tensorboard": True,
        "progress": True,
        "recall_ns": list(RECALL_NS),
    },
}


# --------------------------------------------------------------------------- config


def _merge(base: dict[str, Any], update: dict[str, Any], where: str = "") -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in update.items():
        path = f"{where}{key}"
        if key not in base:
            raise TrainConfigError(f"unknown config key {path!r}")
        if isinstance(base[key], dict) and base[key] and key != "data":
            if not isinstance(value, dict):
                raise TrainConfigError(f"config key {path!r} must be a mapping")
            out[key] = _merge(base[key], value, path + ".")
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_config(
    config_path: str | Path | None = None, overrides: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Defaults <- YAML file <- ``overrides`` (dotted keys, e.g. ``{"train.epochs": 2}``); validated."""
    import yaml

    cfg = copy.deepcopy(DEFAULT_CONFIG)
    if config_path is not None:
        path = Path(config_path)
        if not path.is_file():
            raise TrainConfigError(f"training config not found: {path}")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise TrainConfigError(f"{path}: not valid YAML ({exc})") from exc
        if not isinstance(data, dict):
            raise TrainConfigError(f"{path}: the top level must be a mapping")
        cfg = _merge(cfg, data)
    for dotted, value in (overrides or {}).items():
        keys = dotted.split(".")
        node: Any = cfg
        for k in keys[:-1]:
            if not isinstance(node, dict) or k not in node:
                raise TrainConfigError(f"unknown config key {dotted!r}")
            node = node[k]
        if not isinstance(node, dict) or (keys[-1] not in node and node is not cfg["data"]):
            raise TrainConfigError(f"unknown config key {dotted!r}")
        node[keys[-1]] = value
    _validate(cfg)
    return cfg


def _validate(cfg: dict[str, Any]) -> None:
    t, m, mi = cfg["train"], cfg["model"], cfg["mining"]
    if t["optimizer"] not in ("sgd", "adam"):
        raise TrainConfigError(f"train.optimizer must be 'sgd' or 'adam', got {t['optimizer']!r}")
    tf = t["train_from"]
    if not (tf in ("pool", "last", "all") or (isinstance(tf, int) and not isinstance(tf, bool) and tf >= 0)):
        raise TrainConfigError(f"train.train_from must be pool, last, all or an integer >= 0, got {tf!r}")
    for key in ("epochs", "batch_size", "lr_step", "patience"):
        if not isinstance(t[key], int) or t[key] < 1:
            raise TrainConfigError(f"train.{key} must be an integer >= 1, got {t[key]!r}")
    if not float(t["lr"]) > 0:
        raise TrainConfigError(f"train.lr must be positive, got {t['lr']!r}")
    if t["max_steps"] is not None and (not isinstance(t["max_steps"], int) or t["max_steps"] < 1):
        raise TrainConfigError(f"train.max_steps must be null or an integer >= 1, got {t['max_steps']!r}")
    if not float(mi["margin"]) >= 0 or int(mi["cache_refresh_queries"]) < 1:
        raise TrainConfigError("mining.margin must be >= 0 and mining.cache_refresh_queries >= 1")
    if m["pooling"] != "netvlad" and m["init_model"] is None and m["num_clusters"]:
        m["num_clusters"] = 0


# --------------------------------------------------------------------------- layers to train


def backbone_blocks(backbone: nn.Module, backbone_name: str) -> list[list[nn.Module]]:
    """The backbone as an ordered list of blocks ("conv1".."conv5" for VGG16, stem + stages otherwise)."""
    if backbone_name == "vgg16":
        layers = list(backbone.children())
        blocks: list[list[nn.Module]] = []
        cur: list[nn.Module] = []
        for layer in layers:
            cur.append(layer)
            if isinstance(layer, nn.MaxPool2d):
                blocks.append(cur)
                cur = []
        return [*blocks, cur] if cur else blocks
    if backbone_name.startswith("resnet"):
        layers = list(backbone.children())
        return [layers[:4], *[[m] for m in layers[4:]]]
    if backbone_name == "efficientnet_lite0":
        from ..model.efficientnet_lite import LITE0_STAGES

        stem: list[nn.Module] = [backbone._conv_stem, backbone._bn0]  # type: ignore[list-item]
        blocks = [stem]
        i = 0
        last_stage = int(backbone.last_stage)  # type: ignore[arg-type]
        for repeats, *_ in LITE0_STAGES[:last_stage]:
            blocks.append(list(backbone._blocks[i : i + repeats]))  # type: ignore[index]
            i += repeats
        return blocks
    raise TrainConfigError(f"do not know the blocks of backbone {backbone_name!r}")


def set_trainable(net: PlaceNet, card: ModelCard, train_from: str | int) -> int:
    """Freeze all but the pooling/whitening head and the chosen trailing backbone blocks.

    Returns the number of trainable parameters.
    """
    blocks = backbone_blocks(net.backbone, card.backbone)
    n = {"pool": 0, "last": 1, "all": len(blocks)}.get(train_from, train_from)  # type: ignore[arg-type]
    n = min(int(n), len(blocks))
    for p in net.backbone.parameters():
        p.requires_grad_(False)
    for block in blocks[len(blocks) - n :]:
        for module in block:
            for p in module.parameters():
                p.requires_grad_(True)
    for head in (net.pool, net.whitening):
        if head is not None:
            for p in head.parameters():
                p.requires_grad_(True)
    return sum(p.numel() for p in net.parameters() if p.requires_grad)


def train_mode(net: nn.Module) -> None:
    """Training mode with every batch-norm layer kept in eval mode (frozen statistics)."""
    net.train()
    for m in net.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


# --------------------------------------------------------------------------- loss


def triplet_loss(desc: torch.Tensor, counts: list[int], margin: float, num_queries: int) -> torch.Tensor:
    """The paper's weakly supervised ranking loss on squared Euclidean distances.

    ``desc`` stacks, per triplet, [query, positive, negative_1..negative_k]
    (k = ``counts[t]``). Returns Σ_t Σ_j max(0, d²(q,p) + margin − d²(q,n_j)) / num_queries.
    """
    total = desc.new_zeros(())
    start = 0
    for k in counts:
        q, p, negs = desc[start], desc[start + 1], desc[start + 2 : start + 2 + k]
        d_pos = (q - p).pow(2).sum()
        d_neg = (negs - q.unsqueeze(0)).pow(2).sum(dim=1)
        total = total + torch.clamp(d_pos + margin - d_neg, min=0).sum()
        start += 2 + k
    if start != len(desc):
        raise ValueError(f"triplet counts cover {start} descriptors but {len(desc)} were given")
    return total / max(num_queries, 1)


def triplet_images(ds: PlaceDataset, triplets: list[Triplet]) -> tuple[list[np.ndarray], list[int]]:
    """The images of ``triplets`` in loss order and the number of negatives of each."""
    images, counts = [], []
    for t in triplets:
        images.append(ds.query_image(t.query))
        images.append(ds.db_image(t.positive))
        images.extend(ds.db_image(int(n)) for n in t.negatives)
        counts.append(len(t.negatives))
    return images, counts


def forward_images(
    net: nn.Module, images: list[np.ndarray], pre: Preprocessing, device: torch.device, amp: bool
) -> torch.Tensor:
    """Descriptors (float32) of uint8 BGR images, with gradients; one batch when sizes agree."""
    inputs = [torch.from_numpy(to_network_input(im, pre)) for im in images]
    autocast = torch.autocast("cuda", dtype=torch.float16) if amp else contextlib.nullcontext()
    with autocast:
        if len({tuple(x.shape) for x in inputs}) == 1:
            out = net(torch.stack(inputs).to(device, non_blocking=True))
        else:
            out = torch.cat([net(x.unsqueeze(0).to(device)) for x in inputs])
    return out.float()


def batch_loss(
    net: nn.Module,
    ds: PlaceDataset,
    triplets: list[Triplet],
    pre: Preprocessing,
    margin: float,
    num_queries: int,
    device: torch.device,
    amp: bool = False,
) -> torch.Tensor:
    """Loss of one batch (with gradients). With no triplet, a zero that still touches every
    trainable parameter, so DDP's all-reduce runs on every rank."""
    if not triplets:
        probe = [ds.query_image(0)]
        return forward_images(net, probe, pre, device, amp).sum() * 0.0
    images, counts = triplet_images(ds, triplets)
    return triplet_loss(forward_images(net, images, pre, device, amp), counts, margin, num_queries)


# --------------------------------------------------------------------------- distributed


def init_distributed(device_pref: str) -> tuple[int, int, torch.device]:
    """Initialise torch.distributed from torchrun's environment (if set); (rank, world, device)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        use_cuda = torch.cuda.is_available() and device_pref != "cpu"
        dist.init_process_group("nccl" if use_cuda else "gloo")
    if dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
        if torch.cuda.is_available() and device_pref != "cpu":
            local = int(os.environ.get("LOCAL_RANK", "0"))
            torch.cuda.set_device(local)
            return rank, world, torch.device("cuda", local)
        return rank, world, torch.device("cpu")
    return 0, 1, resolve_device(device_pref)


def _barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def _broadcast_object(obj: Any) -> Any:
    if not dist.is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


# --------------------------------------------------------------------------- checkpoints


def _flatten_optimizer(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors: dict[str, torch.Tensor] = {}
    plain: dict[str, Any] = {"param_groups": state["param_groups"], "state": {}}
    for pid, entries in state["state"].items():
        plain["state"][str(pid)] = {}
        for name, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{pid}.{name}"] = value.detach().cpu().contiguous()
                plain["state"][str(pid)][name] = {"tensor": f"optim.{pid}.{name}"}
            else:
                plain["state"][str(pid)][name] = {"value": value}
    return tensors, plain


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], plain: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for pid, entries in plain["state"].items():
        state[int(pid)] = {
            name: tensors[v["tensor"]] if "tensor" in v else v["value"] for name, v in entries.items()
        }
    return {"state": state, "param_groups": plain["param_groups"]}


def save_checkpoint(
    ckpt_dir: Path,
    net: PlaceNet,
    card: ModelCard,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: Any,
    miner: HardNegativeMiner,
    cache: DescriptorCache | None,
    progress: dict[str, Any],
    rank: int,
) -> None:
    """Write the checkpoint directory atomically (tmp dir, then rename). Collective under DDP.

    Files: model.safetensors (weights), optimizer.safetensors + state.json
    (optimizer structure, scheduler, AMP scaler, epoch/step, history, RNG),
    miner_rank{r}.json (per-rank mining RNG + negative cache), cache.safetensors
    (only when the descriptor cache is mid-period).
    """
    tmp = ckpt_dir.with_name(ckpt_dir.name + ".tmp")
    if rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    _barrier()
    (tmp / f"miner_rank{rank}.json").write_text(json.dumps(miner.state_dict()))
    _barrier()
    if rank == 0:
        save_file(
            {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()},
            str(tmp / "model.safetensors"),
        )
        opt_tensors, opt_plain = _flatten_optimizer(optimizer.state_dict())
        opt_tensors["torch_rng"] = torch.get_rng_state()
        save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
        if cache is not None and cache.ready:
            save_file(cache.state_tensors(), str(tmp / "cache.safetensors"))
        state = {
            "progress": progress,
            "optimizer": opt_plain,
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict() if scaler.is_enabled() else None,
            "card": card.to_dict(),
            "world_size": dist.get_world_size() if dist.is_initialized() else 1,
        }
        (tmp / "state.json").write_text(json.dumps(state, indent=1))
        old = ckpt_dir.with_name(ckpt_dir.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        if ckpt_dir.exists():
            os.replace(ckpt_dir, old)
        os.replace(tmp, ckpt_dir)
        shutil.rmtree(old, ignore_errors=True)
    _barrier()


def load_checkpoint(ckpt_dir: Path, rank: int) -> dict[str, Any]:
    """Read a checkpoint directory (no unpickling): tensors from safetensors, the rest from JSON."""
    state_file = ckpt_dir / "state.json"
    if not state_file.is_file():
        raise TrainConfigError(f"checkpoint {ckpt_dir} has no state.json")
    state = json.loads(state_file.read_text())
    world = dist.get_world_size() if dist.is_initialized() else 1
    if state["world_size"] != world:
        raise TrainConfigError(
            f"checkpoint {ckpt_dir} was written by {state['world_size']} processes; resume with the same number "
            f"(now {world}) for an exact resume"
        )
    opt_tensors = load_file(str(ckpt_dir / "optimizer.safetensors"))
    state["torch_rng"] = opt_tensors.pop("torch_rng")
    state["optimizer"] = _unflatten_optimizer(opt_tensors, state["optimizer"])
    state["model"] = load_file(str(ckpt_dir / "model.safetensors"))
    state["miner"] = json.loads((ckpt_dir / f"miner_rank{rank}.json").read_text())
    cache_file = ckpt_dir / "cache.safetensors"
    state["cache"] = load_file(str(cache_file)) if cache_file.is_file() else None
    return state


# --------------------------------------------------------------------------- the training run


def _initial_model(cfg: dict[str, Any], ds: PlaceDataset, out: Path, rank: int) -> tuple[PlaceNet, ModelCard]:
    """Model to train: the init_model file, or k-means initialisation (rank 0, then shared by file)."""
    m = cfg["model"]
    if m["init_model"]:
        net, card = load_model(m["init_model"])
        if card.whitening_dim:
            net.whitening = None
            card = ModelCard(**{**card.__dict__, "whitening_dim": 0, "provenance": dict(card.provenance)})
        return net, card
    init_path = out / "init" / "clusters.safetensors"
    if rank == 0 and not init_path.is_file():
        card = new_card(
            m["backbone"], m["cut"], m["pooling"], m["num_clusters"] or 1, 0, m["max_side"], m["name"]
        )
        n = min(int(m["init_images"]), ds.num_db)
        pick = np.linspace(0, ds.num_db - 1, n).round().astype(int)
        images = [ds.db_image(int(i)) for i in pick]
        net, card = create_model(
            images, card, m["backbone_weights"], m["allow_download"], m["per_image"], cfg["seed"], "cpu",
            provenance={"init_data": ds.summary()},
        )  # fmt: skip
        save_model(init_path, net, card)
    _barrier()
    return load_model(init_path)


def _make_optimizer(cfg: dict[str, Any], params: list[nn.Parameter]) -> tuple[torch.optim.Optimizer, Any]:
    t = cfg["train"]
    if t["optimizer"] == "sgd":
        opt: torch.optim.Optimizer = torch.optim.SGD(
            params, lr=float(t["lr"]), momentum=float(t["momentum"]), weight_decay=float(t["weight_decay"])
        )
    else:
        opt = torch.optim.Adam(params, lr=float(t["lr"]), weight_decay=float(t["weight_decay"]))
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=int(t["lr_step"]), gamma=float(t["lr_gamma"]))
    return opt, sched


def _fit_whitening(
    net: PlaceNet, card: ModelCard, ds: PlaceDataset, dim: int, device: torch.device, batch: int
) -> tuple[PlaceNet, ModelCard]:
    """PCA whitening (faiss) on the trained network's training-database descriptors."""
    pooled = describe_images(net, card, ds.db_image, ds.num_db, device, batch)
    dim = min(dim, len(pooled) - 1, card.pooled_dim)
    w, b = fit_pca_whitening(pooled, dim)
    net.whitening = Whitening(card.pooled_dim, dim)
    load_whitening(net.whitening, w, b)
    return net, ModelCard(**{**card.__dict__, "whitening_dim": dim})


def train(
    cfg: dict[str, Any], train_ds: PlaceDataset | None = None, val_ds: PlaceDataset | None = None
) -> dict[str, Any]:
    """Run a training as configured (see :data:`DEFAULT_CONFIG`, ``config/train.yaml``); returns a summary.

    ``train_ds``/``val_ds`` replace ``data.train``/``data.val`` (in-memory data sets).
    The summary: model path, initial/best validation recalls, per-epoch history,
    per-step losses of this process, steps, epochs, whether it resumed, seconds.
    """
    previous = torch.are_deterministic_algorithms_enabled()
    try:
        if cfg["train"]["deterministic"]:
            torch.use_deterministic_algorithms(True)
        return _train(cfg, train_ds, val_ds)
    finally:
        torch.use_deterministic_algorithms(previous)  # a process-wide switch: leave it as found


def _train(cfg: dict[str, Any], train_ds: PlaceDataset | None, val_ds: PlaceDataset | None) -> dict[str, Any]:
    t0 = time.time()
    t, mi = cfg["train"], cfg["mining"]
    rank, world, device = init_distributed(cfg["device"])
    torch.manual_seed(int(cfg["seed"]))
    amp = bool(t["amp"]) and device.type == "cuda"
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not t["deterministic"]
    out = Path(cfg["output_dir"])
    out.mkdir(parents=True, exist_ok=True)
    if train_ds is None:
        if cfg["data"].get("train") is None:
            raise TrainConfigError("config needs data.train (a dataset spec, e.g. format: pittsburgh)")
        train_ds = dataset_from_spec(cfg["data"]["train"])
    if val_ds is None and cfg["data"].get("val") is not None:
        val_ds = dataset_from_spec(cfg["data"]["val"])
    ns = [int(n) for n in t["recall_ns"]]

    net, card = _initial_model(cfg, train_ds, out, rank)
    ckpt_dir = out / "checkpoint"
    resumed = bool(t["resume"]) and (ckpt_dir / "state.json").is_file()
    ckpt = load_checkpoint(ckpt_dir, rank) if resumed else None
    if ckpt is not None:
        net.load_state_dict(ckpt["model"])
    n_trainable = set_trainable(net, card, t["train_from"])
    net.to(device)
    train_mode(net)
    params = [p for p in net.parameters() if p.requires_grad]
    model: nn.Module = net
    if world > 1:
        model = DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
    optimizer, scheduler = _make_optimizer(cfg, params)
    scaler = torch.amp.GradScaler("cuda", enabled=amp)

    miner = HardNegativeMiner.for_dataset(
        train_ds,
        **{k: mi[k] for k in ("pos_radius", "neg_radius") if mi[k] is not None},
        num_sampled=int(mi["num_sampled"]),
        num_negatives=int(mi["num_negatives"]),
        margin=float(mi["margin"]),
        seed=int(cfg["seed"]) * 1000 + rank,
    )
    if len(miner.trainable_queries) == 0:
        raise TrainConfigError(
            f"no training query has a database image within {miner.pos_radius} m and one beyond "
            f"{miner.neg_radius} m: check the positions of {train_ds.name}"
        )
    cache = DescriptorCache()
    sampler: DistributedSampler[int] = DistributedSampler(
        range(len(miner.trainable_queries)),  # type: ignore[arg-type]  # any sized sequence works
        num_replicas=world,
        rank=rank,
        shuffle=True,
        seed=int(cfg["seed"]),
    )
    bs = int(t["batch_size"])
    steps_per_epoch = math.ceil(len(sampler) / bs)
    refresh_steps = max(1, math.ceil(int(mi["cache_refresh_queries"]) / (bs * world)))

    progress: dict[str, Any] = {
        "epoch": 0, "step_in_epoch": 0, "global_step": 0, "best_recall5": -1.0, "best_epoch": -1,
        "bad_epochs": 0, "history": [], "initial_val": None, "stopped_early": False,
    }  # fmt: skip
    if ckpt is not None:
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        if ckpt["scaler"] is not None:
            scaler.load_state_dict(ckpt["scaler"])
        miner.load_state_dict(ckpt["miner"])
        if ckpt["cache"] is not None:
            cache.load_state_tensors(ckpt["cache"])
        torch.set_rng_state(ckpt["torch_rng"])
        progress = ckpt["progress"]

    writer = None
    if rank == 0 and t["tensorboard"]:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(log_dir=str(out / "tensorboard"), purge_step=progress["global_step"] or None)
    val_batch = int(mi["cache_batch_size"])

    def validate() -> dict[str, Any] | None:
        if val_ds is None:
            return None
        return evaluate_network(net, card, val_ds, ns, device, val_batch)

    if progress["initial_val"] is None and t["eval_initial"] and val_ds is not None:
        initial = {k: v for k, v in (validate() or {}).items() if k != "curve"}
        progress["initial_val"] = initial
        if writer is not None:
            for n in ns:
                writer.add_scalar(f"val/recall@{n}", initial[f"recall@{n}"], 0)

    step_losses: list[float] = []
    max_steps = t["max_steps"]
    stop = False
    best_path = out / "best" / "model.safetensors"
    show = bool(t["progress"]) and rank == 0
    from tqdm import tqdm

    while progress["epoch"] < int(t["epochs"]) and not stop:
        epoch = progress["epoch"]
        sampler.set_epoch(epoch)
        order = [int(miner.trainable_queries[i]) for i in sampler]
        batches = [order[i : i + bs] for i in range(0, len(order), bs)]
        epoch_losses: list[float] = []
        bar = tqdm(total=steps_per_epoch, initial=progress["step_in_epoch"], desc=f"epoch {epoch + 1}",
                   disable=not show, leave=False)  # fmt: skip
        while progress["step_in_epoch"] < len(batches):
            step = progress["step_in_epoch"]
            if step % refresh_steps == 0 or not cache.ready:
                cache.refresh(net, card, train_ds, device, val_batch)
                train_mode(net)
            assert cache.q is not None and cache.db is not None  # refreshed just above when not ready
            triplets = [tr for q in batches[step] if (tr := miner.mine(q, cache.q[q], cache.db)) is not None]
            optimizer.zero_grad(set_to_none=True)
            loss = batch_loss(
                model, train_ds, triplets, card.preprocessing, float(mi["margin"]), bs, device, amp
            )
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            value = float(loss.detach())
            step_losses.append(value)
            epoch_losses.append(value)
            progress["step_in_epoch"] += 1
            progress["global_step"] += 1
            if writer is not None:
                writer.add_scalar("train/loss", value, progress["global_step"])
                writer.add_scalar("train/triplets", len(triplets), progress["global_step"])
                writer.add_scalar("train/lr", optimizer.param_groups[0]["lr"], progress["global_step"])
            bar.update(1)
            bar.set_postfix(loss=f"{value:.4f}")
            every = int(t["checkpoint_every"])
            if max_steps is not None and progress["global_step"] >= max_steps:
                stop = True
                break
            if every and progress["global_step"] % every == 0 and progress["step_in_epoch"] < len(batches):
                _save(ckpt_dir, net, card, optimizer, scheduler, scaler, miner, cache, progress, rank,
                      refresh_steps)  # fmt: skip
        bar.close()
        if stop and progress["step_in_epoch"] < len(batches):
            break
        # End of epoch: validation, early stopping, schedule, checkpoint.
        val = validate()
        record = {"epoch": epoch + 1, "train_loss": float(np.mean(epoch_losses)) if epoch_losses else None}
        if val is not None:
            record.update({k: v for k, v in val.items() if k != "curve"})
            if writer is not None:
                for n in ns:
                    writer.add_scalar(f"val/recall@{n}", val[f"recall@{n}"], epoch + 1)
            r5 = val.get("recall@5", val[f"recall@{ns[0]}"])
            if r5 > progress["best_recall5"]:
                progress.update(best_recall5=r5, best_epoch=epoch + 1, bad_epochs=0)
                if rank == 0:
                    save_model(best_path, net, copy.deepcopy(card))
            else:
                progress["bad_epochs"] += 1
        progress["history"].append(record)
        scheduler.step()
        progress["epoch"] += 1
        progress["step_in_epoch"] = 0
        if progress["bad_epochs"] >= int(t["patience"]):
            progress["stopped_early"] = True
            stop = True
        if writer is not None and record["train_loss"] is not None:
            writer.add_scalar("train/epoch_loss", record["train_loss"], epoch + 1)
        cache.db = cache.q = None  # the next epoch starts with a fresh cache
        _save(ckpt_dir, net, card, optimizer, scheduler, scaler, miner, cache, progress, rank, refresh_steps)
    if stop and progress["step_in_epoch"] > 0:  # max_steps inside an epoch: keep a resumable checkpoint
        _save(ckpt_dir, net, card, optimizer, scheduler, scaler, miner, cache, progress, rank, refresh_steps)
    if writer is not None:
        writer.close()

    result = _finish(cfg, net, card, train_ds, val_ds, progress, device, out, rank, best_path, ns)
    result.update(
        steps=progress["global_step"], step_losses=step_losses, resumed=resumed, trainable_parameters=n_trainable,
        seconds=round(time.time() - t0, 1), world_size=world,
    )  # fmt: skip
    return result


def _save(
    ckpt_dir, net, card, optimizer, scheduler, scaler, miner, cache, progress, rank, refresh_steps
) -> None:
    # The descriptor cache is saved only mid-period: at a refresh boundary the resumed run
    # recomputes it from the same weights, exactly as the uninterrupted run does.
    keep_cache = progress["step_in_epoch"] % refresh_steps != 0
    save_checkpoint(ckpt_dir, net, card, optimizer, scheduler, scaler, miner, cache if keep_cache else None,
                    progress, rank)  # fmt: skip


def _finish(cfg, net, card, train_ds, val_ds, progress, device, out, rank, best_path, ns) -> dict[str, Any]:
    """Best weights -> optional PCA whitening -> final validation -> model file with provenance."""
    t, mcfg = cfg["train"], cfg["model"]
    if best_path.is_file():
        best_net, _ = load_model(best_path)
        net.load_state_dict(best_net.state_dict())
    net.eval()
    final_card = card
    whiten = int(mcfg["whitening_dim"] or 0)
    batch = int(cfg["mining"]["cache_batch_size"])
    if whiten and card.pooling == "netvlad":
        net, final_card = _fit_whitening(net, card, train_ds, whiten, device, batch)
    final_val = None
    if val_ds is not None:
        final_val = {
            k: v
            for k, v in evaluate_network(net, final_card, val_ds, ns, device, batch).items()
            if k != "curve"
        }
    final_card.provenance = {
        **{k: v for k, v in card.provenance.items() if k in ("created_by", "backbone_weights", "alpha")},
        "trained_by": f"netvlad_ros {__version__} train",
        "trained": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "train_data": train_ds.summary(),
        "val_data": val_ds.summary() if val_ds is not None else None,
        "epochs": progress["epoch"],
        "steps": progress["global_step"],
        "best_epoch": progress["best_epoch"],
        "best_val_recall@5": progress["best_recall5"] if progress["best_recall5"] >= 0 else None,
        "initial_val": progress["initial_val"],
        "final_val": final_val,
        "train_from": t["train_from"],
        "optimizer": {
            k: t[k] for k in ("optimizer", "lr", "momentum", "weight_decay", "lr_step", "lr_gamma")
        },
        "mining": dict(cfg["mining"]),
        "seed": cfg["seed"],
    }
    model_path = out / "model.safetensors"
    if rank == 0:
        save_model(model_path, net.cpu(), final_card)
    _barrier()
    return {
        "model": str(model_path),
        "card": final_card.to_dict(),
        "initial_val": progress["initial_val"],
        "best_val_recall@5": final_card.provenance["best_val_recall@5"],
        "final_val": final_val,
        "history": progress["history"],
        "epochs": progress["epoch"],
        "stopped_early": progress["stopped_early"],
    }


def train_from_config(config_path: str | Path, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Load ``config_path`` (YAML) with dotted-key ``overrides`` and train; returns :func:`train`'s summary."""
    return train(load_config(config_path, overrides))


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["train.epochs=2", "data.train.root=/x"]`` -> ``{"train.epochs": 2, ...}`` (values parsed as YAML)."""
    import yaml

    out = {}
    for item in items:
        if "=" not in item:
            raise TrainConfigError(f"override {item!r} must look like key.sub=value")
        key, value = item.split("=", 1)
        out[key] = yaml.safe_load(value)
    return out


def main(argv: list[str] | None = None) -> int:
    """``python -m netvlad_ros.offline.train CONFIG [key=value ...]`` (for torchrun)."""
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0].startswith("-"):
        print("usage: python -m netvlad_ros.offline.train CONFIG.yaml [key.sub=value ...]", file=sys.stderr)
        return 2
    result = train_from_config(Path(args[0]), parse_overrides(args[1:]))
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps({k: v for k, v in result.items() if k not in ("step_losses", "card")}, indent=2))
    if dist.is_initialized():
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
