"""``netvlad-ros``: the command line. Parses arguments and calls the layers; no logic here."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import __version__


def cmd_describe(args: argparse.Namespace) -> int:
    from .model import DescriptorExtractor
    from .offline.build_map import extractor_params_from_args
    from .offline.describe import describe_folder

    extractor = DescriptorExtractor(args.model, extractor_params_from_args(args))
    summary = describe_folder(args.folder, args.output, extractor, progress=not args.quiet)
    print(
        f"described {summary['images']} images -> {summary['output']} "
        f"({summary['dim']}-D, {summary['images_per_second']:.1f} img/s on {extractor.device})"
    )
    for line in summary["skipped"]:
        print(f"skipped {line}", file=sys.stderr)
    return 0


def cmd_init_clusters(args: argparse.Namespace) -> int:
    from .model import save_model
    from .model.clusters import create_model, new_card
    from .offline.image_folder import list_images, read_image

    files = list_images(args.images)
    if args.max_images and len(files) > args.max_images:
        step = len(files) / args.max_images
        files = [files[int(i * step)] for i in range(args.max_images)]
    images = [read_image(f) for f in files]
    card = new_card(
        args.backbone, args.cut, args.pooling, args.clusters, args.whiten, args.max_side, name=args.name or ""
    )
    net, card = create_model(
        images,
        card,
        backbone_weights=args.backbone_weights,
        allow_download=args.download,
        per_image=args.per_image,
        seed=args.seed,
        device=args.device,
        provenance={"cluster_images": f"{args.images} ({len(images)} images)"},
    )
    path = save_model(args.output, net, card)
    print(
        f"wrote {path} and {path.with_suffix('.json')} ({card.descriptor_dim}-D, fingerprint {card.fingerprint()[:12]})"
    )
    return 0


def cmd_fit_default_model(args: argparse.Namespace) -> int:
    from .model import read_card
    from .offline.default_model_fit import fit_default_model

    path = fit_default_model(args.output, **({"frames": args.frames} if args.frames else {}))
    card = read_card(path)
    print(f"wrote {path} and {path.with_suffix('.json')} (fingerprint {card.fingerprint()[:12]})")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from .model import load_model, read_card
    from .model.default_model import default_model_path

    path = args.model or default_model_path()
    card = read_card(path)
    if args.verify:
        load_model(path)  # checksum, names and shapes
    if args.json:
        print(json.dumps({**card.to_dict(), "fingerprint": card.fingerprint(), "path": str(path)}, indent=2))
        return 0
    pre = card.preprocessing
    print(f"model        {card.name}  ({path})")
    print(f"backbone     {card.backbone} cut at {card.cut} ({card.local_dim} channels)")
    pooling = f"{card.pooling}" + (f", K={card.num_clusters}" if card.pooling == "netvlad" else "")
    print(f"pooling      {pooling} -> {card.pooled_dim}-D")
    print(f"whitening    {f'PCA to {card.whitening_dim}-D' if card.whitening_dim else 'none'}")
    print(f"descriptor   {card.descriptor_dim}-D, L2-normalised")
    print(
        f"input        longer side {pre.max_side or 'unchanged'}, {pre.color_order}, mean {pre.mean}, std {pre.std}"
    )
    print(f"fingerprint  {card.fingerprint()}")
    print(f"weights      sha256 {card.weights_sha256}" + ("  (verified)" if args.verify else ""))
    for key, value in card.provenance.items():
        print(f"provenance   {key}: {value}")
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    from .model.convert import convert_matlab_struct, convert_pytorch_netvlad

    if args.format == "matlab":
        path = convert_matlab_struct(args.input, args.output, whiten=not args.no_whitening)
    else:
        path = convert_pytorch_netvlad(args.input, args.output)
    print(f"wrote {path} and {path.with_suffix('.json')}")
    return 0


def cmd_build_map(args: argparse.Namespace) -> int:
    from .offline.build_map import build_map_from_args, format_summary

    print(format_summary(build_map_from_args(args)))
    return 0


def cmd_eval_map(args: argparse.Namespace) -> int:
    from .offline.eval_map import eval_map_from_args, format_eval

    print(format_eval(eval_map_from_args(args)))
    return 0


def cmd_migrate_map(args: argparse.Namespace) -> int:
    from .mapdb import migrate

    print(migrate(args.path, args.output))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from .offline.train import parse_overrides, train_from_config

    result = train_from_config(args.config, parse_overrides(args.overrides))
    summary = {k: v for k, v in result.items() if k not in ("step_losses", "card", "history")}
    print(json.dumps(summary, indent=2, default=str))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from .offline.evaluate import evaluate
    from .offline.train import parse_overrides

    spec = parse_overrides(args.dataset)
    evaluate(
        args.model,
        spec,
        args.output,
        baselines=not args.no_baselines,
        device=args.device,
        batch_size=args.batch_size,
    )
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .ros.demo import run_demo

    result = run_demo(
        args.output, seed=args.seed, map_frames=args.map_frames, query_frames=args.query_frames,
        device=args.device, rate=args.rate, slam=not args.no_slam,
    )  # fmt: skip
    return 0 if result["answered"] > 0 else 1


def build_parser() -> argparse.ArgumentParser:
    from .offline.build_map import add_build_map_arguments, add_model_arguments

    parser = argparse.ArgumentParser(
        prog="netvlad-ros", description="NetVLAD visual place recognition for ROS 2"
    )
    parser.add_argument("--version", action="version", version=f"netvlad-ros {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("describe", help="describe a folder of images into a descriptors file (.npz)")
    p.add_argument("folder", type=Path)
    p.add_argument("-o", "--output", type=Path, default=Path("descriptors.npz"))
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    add_model_arguments(p)
    p.set_defaults(func=cmd_describe)

    p = sub.add_parser("init-clusters", help="new model: NetVLAD centres by k-means on a folder of images")
    p.add_argument("--images", type=Path, required=True)
    p.add_argument("-o", "--output", type=Path, required=True, help="model file to write (.safetensors)")
    p.add_argument(
        "--backbone",
        default="efficientnet_lite0",
        choices=["efficientnet_lite0", "vgg16", "resnet18", "resnet50"],
    )
    p.add_argument("--cut", default=None, help="layer to cut at (default per backbone)")
    p.add_argument("--pooling", default="netvlad", choices=["netvlad", "avg", "max", "gem"])
    p.add_argument("--clusters", type=int, default=32, help="K, the number of NetVLAD centres")
    p.add_argument("--whiten", type=int, default=0, help="PCA-whitening output dimension (0: none)")
    p.add_argument("--max-side", type=int, default=640, help="resize the longer image side to this")
    p.add_argument("--per-image", type=int, default=100, help="local descriptors sampled per image")
    p.add_argument("--max-images", type=int, default=1000)
    p.add_argument(
        "--backbone-weights", default="imagenet", help="imagenet, none, or a torchvision state_dict file"
    )
    p.add_argument("--download", action="store_true", help="let torchvision download ImageNet weights")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--name", default=None)
    p.set_defaults(func=cmd_init_clusters)

    p = sub.add_parser(
        "fit-default-model",
        help="maintainers: refit the built-in default model's head on the synthetic fitting worlds",
    )
    p.add_argument("-o", "--output", type=Path, required=True, help="head-only model file to write")
    p.add_argument("--frames", type=int, default=None, help="fitting frames (default: the shipped recipe's)")
    p.set_defaults(func=cmd_fit_default_model)

    p = sub.add_parser("info", help="print a model card")
    p.add_argument("model", type=Path, nargs="?", default=None, help="model file (default: built-in model)")
    p.add_argument("--json", action="store_true")
    p.add_argument(
        "--verify", action="store_true", help="also load the weights and check them against the card"
    )
    p.set_defaults(func=cmd_info)

    p = sub.add_parser(
        "convert", help="convert MATLAB (hloc struct) or pytorch-NetVlad weights to a model file"
    )
    p.add_argument("format", choices=["matlab", "pytorch-netvlad"])
    p.add_argument("input", type=Path)
    p.add_argument("-o", "--output", type=Path, required=True)
    p.add_argument("--no-whitening", action="store_true", help="MATLAB: drop the 4096-D whitening layer")
    p.set_defaults(func=cmd_convert)

    from .offline.eval_map import add_eval_map_arguments

    p = sub.add_parser(
        "build-map", help="build a map from a rosbag or an image folder (see docs/build_map.md)"
    )
    add_build_map_arguments(p)
    p.set_defaults(func=cmd_build_map)

    p = sub.add_parser("eval-map", help="Recall@N (25 m) of a map against a query bag or image folder")
    add_eval_map_arguments(p)
    p.set_defaults(func=cmd_eval_map)

    p = sub.add_parser(
        "migrate-map", help="upgrade a map directory to the current schema (see docs/mapdb.md)"
    )
    p.add_argument("path", type=Path, help="map directory")
    p.add_argument(
        "-o", "--output", type=Path, default=None, help="write the upgraded map here (default: in place)"
    )
    p.set_defaults(func=cmd_migrate_map)

    p = sub.add_parser("train", help="weakly supervised training (see docs/training.md)")
    p.add_argument("--config", type=Path, default=Path("config/train.yaml"), help="training config (YAML)")
    p.add_argument("overrides", nargs="*", help="config overrides, key.sub=value (values read as YAML)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="Recall@1/5/10/20 of a model on a dataset, with avg/max/GeM baselines")
    p.add_argument("--model", type=Path, required=True)
    p.add_argument(
        "--dataset", nargs="+", required=True, metavar="KEY=VALUE",
        help="dataset spec, e.g. format=folder root=DIR split=test (formats: pittsburgh, tokyo247, mat, folder, map)",
    )  # fmt: skip
    p.add_argument(
        "--output", type=Path, default=None, help="folder for recalls.json/.md and recall_curve.png"
    )
    p.add_argument("--no-baselines", action="store_true", help="skip the avg/max/GeM pooling baselines")
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-size", type=int, default=16)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser(
        "demo", help="end-to-end demo: synthetic world -> map -> the real node over DDS -> recall + plot"
    )
    p.add_argument(
        "--output", type=Path, default=Path("netvlad_demo"), help="folder for bags, map, plot, results"
    )
    p.add_argument("--seed", type=int, default=7, help="synthetic world seed")
    p.add_argument("--map-frames", type=int, default=120, help="frames of the mapping traversal (3 m apart)")
    p.add_argument("--query-frames", type=int, default=50, help="frames of the query traversal")
    p.add_argument("--rate", type=float, default=1.0, help="replay speed (1 = real time)")
    p.add_argument(
        "--no-slam", action="store_true", help="skip the SLAM phase (loop closures against the map)"
    )
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``netvlad-ros`` console script."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, ImportError, RuntimeError) as exc:
        print(f"netvlad-ros {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
