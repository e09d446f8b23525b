"""The `siamdetr` command: argument parsing only. Each command calls one library function.

DVC calls these commands (dvc.yaml); users call them directly too.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

# OpenMP threads spin-wait on shared 2-core machines; a short spin keeps full speed when the machine is
# free and limits the loss under contention. Must be set before torch (libgomp) loads.
os.environ.setdefault("GOMP_SPINCOUNT", "20000")

from siamdetr.config import ConfigError  # noqa: E402  (light: yaml only)

TRACKED = ("backbone", "pretrain", "finetune", "sweep", "report", "compare")  # commands that use MLflow


def count(least: int) -> Callable[[str], int]:
    """An argparse type: an integer of at least `least` (argparse then says which argument, in one line)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < least:
            raise argparse.ArgumentTypeError(f"{value} is below {least}")
        return value

    return parse


def area_scale(text: str) -> str | float:
    """'auto' or a positive, finite number."""
    if text == "auto":
        return text
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected 'auto' or a positive number") from None
    if not (value > 0 and value != float("inf")):
        raise argparse.ArgumentTypeError(f"{text}: expected 'auto' or a positive number")
    return value


log = logging.getLogger("siamdetr")

EPILOG = """\
The pipeline's stages run in this order (dvc.yaml wires them): data → … → report.
Every config-driven command reads params.yaml (or --params), the profile it names (or --profile), any
--experiment files and --set overrides, validated before any work starts. `siamdetr config show` prints
the resolved configuration and which file set each value.
"""


def add_config_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("configuration")
    g.add_argument(
        "--params",
        type=Path,
        default=Path("params.yaml"),
        help="params file (default: ./params.yaml, which may be absent; any other must exist)",
    )
    g.add_argument(
        "--profile",
        help="tiny (default: CPU, Table 2's VOC Conditional row, minutes), tiny-all (every table's runs, CPU, "
        "hours), small (one GPU, ~10 min), paper (the paper's §4.1 settings, many GPUs), smoke (tests, seconds)",
    )
    g.add_argument(
        "--experiment",
        type=Path,
        action="append",
        default=[],
        metavar="FILE",
        help="extra YAML merged after params (repeatable)",
    )
    g.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one value, e.g. --set pretrain.tau=0.7 (repeatable)",
    )
    g.add_argument("--seed", type=int, help="shortcut for --set seed=N")


def add_grid_args(p: argparse.ArgumentParser) -> None:
    grid = p.add_mutually_exclusive_group()
    grid.add_argument(
        "--run",
        metavar="NAME",
        help="one named run of the experiment grid (grid.runs_file), every seed of grid.seeds (or only --seed)",
    )
    grid.add_argument("--stage", metavar="GROUP", help="every run of one group of the grid (what each DVC stage calls)")


def config_from_args(args: argparse.Namespace, sections: tuple[str, ...] = ()):  # -> Config
    """The validated config; input paths are checked for the sections this command reads."""
    from siamdetr.config import load_config  # lazy: a fast --help

    overrides = list(args.overrides) + ([f"seed={args.seed}"] if args.seed is not None else [])
    return load_config(args.params, args.profile, args.experiment, overrides, sections)


def layers_from_args(args: argparse.Namespace):  # -> grid.Layers
    """The configuration layers of the command, for the grid and the sweep to resolve each run's config."""
    from siamdetr.grid import Layers

    overrides = list(args.overrides) + ([f"seed={args.seed}"] if args.seed is not None else [])
    return Layers(args.params, args.profile, tuple(args.experiment), tuple(overrides))


def run_grid(args: argparse.Namespace, sections: tuple[str, ...]) -> dict:
    """`--run NAME` / `--stage GROUP`: {run name: summary over seeds} (siamdetr.grid.run_named)."""
    from siamdetr.grid import run_named

    return run_named(args.command, layers_from_args(args), sections, args.run, args.stage, args.seed)


# ------------------------------------------------------------------------------------------- commands
def cmd_config_show(args: argparse.Namespace) -> None:
    from siamdetr.config import SECTIONS, describe

    cfg = config_from_args(args, SECTIONS)
    print(f"# profile {cfg.profile}, params hash {cfg.params_hash()}")
    print(describe(cfg), end="")


def cmd_data_synth(args: argparse.Namespace) -> None:
    from siamdetr.data.synthetic import write_synthetic

    cfg = config_from_args(args, ("data",))
    counts = write_synthetic(args.out, cfg.data.synth, seed=cfg.seed, workers=args.workers)
    print(f"wrote {sum(counts.values())} images to {args.out}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))


def cmd_data_voc2coco(args: argparse.Namespace) -> None:
    from siamdetr.data.voc import voc_to_coco
    from siamdetr.io import atomic_write_json

    data, cleaning = voc_to_coco(args.devkit, args.years, args.split, args.classes, args.protocol)
    atomic_write_json(args.out, data)
    difficult = sum(a["difficult"] for a in data["annotations"])
    treated = "ignored (iscrowd)" if args.protocol == "voc_standard" else "kept as ground truth"
    print(
        f"wrote {args.out}: {len(data['images'])} images, {len(data['annotations'])} boxes "
        f"({difficult} difficult, {treated}), {len(data['categories'])} classes; {cleaning}"
    )


def cmd_data_prepare(args: argparse.Namespace) -> None:
    from siamdetr.data.manifest import MANIFEST
    from siamdetr.stages import data

    cfg = config_from_args(args, ("data",))
    manifest = data.run(cfg)
    print(
        f"wrote {Path(cfg.data.prepared_dir) / MANIFEST}: datasets "
        + ", ".join(k for k in ("imagenet", "coco", "voc") if k in manifest)
    )


def cmd_backbone(args: argparse.Namespace) -> None:
    from siamdetr.config import check_input_paths
    from siamdetr.stages import backbone

    cfg = config_from_args(args, ("data", "backbone"))
    if cfg.model.backbone != "small":  # the small ResNet's checkpoint is this stage's output, not an input
        check_input_paths(cfg, ("model",))
    metrics = backbone.run(cfg)
    print(f"backbone stage done: {json.dumps({k: v for k, v in metrics.items() if k != 'run_hash'})}")


def cmd_proposals(args: argparse.Namespace) -> None:
    from siamdetr.stages import proposals

    cfg = config_from_args(args, ("data", "proposals"))
    if args.images is None:  # the DVC stage: the pretraining dataset and method of the config
        summary = proposals.run(cfg, args.method, args.workers)
        out = summary["store"]
    else:
        if args.method is None or args.out is None:
            raise ConfigError("--images needs --method and --out")
        summary = proposals.proposals_for_folder(cfg, args.method, args.images, args.out, args.workers)
        out = args.out
    recall = f", recall@0.5 top100 {summary['recall@0.5_top100']:.3f}" if "recall@0.5_top100" in summary else ""
    print(
        f"wrote {out}: {summary['n_images']} images ({summary['n_skipped']} skipped, {summary['n_fallback']} "
        f"fallback boxes), {summary['boxes_per_image']:.1f} boxes/image, {summary['images_per_s']:.1f} img/s" + recall
    )


def cmd_pretrain(args: argparse.Namespace) -> None:
    from siamdetr.stages import pretrain

    if args.run or args.stage:
        summaries = run_grid(args, ("data", "model", "pretrain"))
        for name, s in summaries.items():
            print(f"pretraining run {name}: seeds {s['seeds']} done, last loss {s['loss']:.3f} ± {s['loss_std']:.3f}")
        return
    cfg = config_from_args(args, ("data", "model", "pretrain"))
    losses = pretrain.run(cfg)
    print(f"wrote {Path(cfg.pretrain.out_dir) / pretrain.PRETRAINED}: last epoch loss {losses['loss']:.3f}")


def cmd_finetune(args: argparse.Namespace) -> None:
    from siamdetr.stages import finetune

    if args.init is not None:
        args.overrides.append(f"finetune.init={args.init}")
    if args.run or args.stage:
        summaries = run_grid(args, ("data", "model", "finetune"))
        for name, s in summaries.items():
            print(f"fine-tuning run {name}: AP {s['AP']:.1f} ± {s['AP_std']:.1f} over seeds {s['seeds']}")
        return
    cfg = config_from_args(args, ("data", "model", "finetune"))
    metrics = finetune.run(cfg)
    print(
        f"wrote {Path(cfg.finetune.out_dir) / finetune.METRICS}: AP {metrics['AP']:.1f}  AP50 {metrics['AP50']:.1f}  "
        f"AP75 {metrics['AP75']:.1f}"
    )


def cmd_sweep(args: argparse.Namespace) -> None:
    from siamdetr.stages import sweep

    plan = sweep.prepare(
        layers_from_args(args), args.space, args.study, args.storage, args.n_trials, args.workers, args.out_dir
    )
    written = sweep.run(plan, args.workers, args.search_only, args.report_dir)
    if written:
        print(f"study {plan.study}: wrote {args.report_dir / plan.study / 'index.md'} (best.yaml, trials.csv, figures)")


def cmd_report(args: argparse.Namespace) -> None:
    from siamdetr.stages import report
    from siamdetr.tracking import default_tracking_uri

    cfg = config_from_args(args, ())
    record = report.run(cfg, args.out, args.tracking_uri or default_tracking_uri())
    n_missing = sum(len(v) for v in record["missing"].values())
    print(f"wrote {args.out}/index.md, tables 1-4 (md, csv, tex), figures 4 and 6 (png, svg); {n_missing} rows missing")


def cmd_compare(args: argparse.Namespace) -> None:
    from siamdetr.io import atomic_write_text
    from siamdetr.report.compare import compare_markdown, compare_runs, select
    from siamdetr.tracking import default_tracking_uri

    uri = args.tracking_uri or default_tracking_uri()
    text = compare_markdown(args.a, args.b, compare_runs(select(uri, args.a), select(uri, args.b)))
    if args.out:
        atomic_write_text(args.out, text)
        print(f"wrote {args.out}")
    else:
        print(text, end="")


def cmd_evaluate(args: argparse.Namespace) -> None:
    from siamdetr.engine.evaluate import evaluate_files

    scale = None if args.area_scale == "auto" else args.area_scale
    metrics = evaluate_files(args.gt, args.detections, args.out, area_scale=scale, backend=args.backend)
    print(
        f"wrote {args.out}: "
        + "  ".join(f"{k} {_fmt(metrics[k])}" for k in ("AP", "AP50", "AP75", "APs", "APm", "APl"))
    )


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}"


# ---------------------------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="siamdetr",
        description="Siamese DETR reproduction harness: one command per pipeline stage.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    stages = parser.add_subparsers(dest="command", metavar="STAGE", required=True)

    data = stages.add_parser("data", help="stage 1: generate or check datasets, convert VOC to COCO json")
    data_cmds = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    p = data_cmds.add_parser("prepare", help="the DVC `data` stage: synthetic or real data → manifest.json")
    add_config_args(p)
    p.set_defaults(func=cmd_data_prepare)

    p = data_cmds.add_parser(
        "synth",
        help="write the synthetic ImageNet-, COCO- and VOC-like trees",
        description="Deterministic synthetic datasets in real formats: DIR/imagenet_like, "
        "DIR/coco_like (COCO json), DIR/VOCdevkit (VOC XML). Sizes come from the profile.",
    )
    p.add_argument(
        "--out",
        type=Path,
        required=True,
        metavar="DIR",
        help="output directory (replaced if it "
        "holds an earlier synthetic tree; any other existing directory is refused)",
    )
    p.add_argument("--workers", type=count(0), help="processes (default: data.synth.workers, 0 = all cores)")
    add_config_args(p)
    p.set_defaults(func=cmd_data_synth)

    p = data_cmds.add_parser(
        "voc2coco",
        help="convert a VOC devkit split to a COCO instances json",
        description="VOC XML → COCO json, file_name relative to the devkit. --protocol official (default, "
        "as the official Siamese DETR json): every object is ground truth, bbox [xmin, ymin, xmax-xmin, "
        "ymax-ymin]; voc_standard: 1-based → 0-based boxes, difficult → iscrowd=1 (ignored by COCOeval).",
    )
    p.add_argument("--devkit", type=Path, required=True, help="VOCdevkit directory (holds VOC2007/, VOC2012/)")
    p.add_argument("--years", type=int, nargs="+", default=[2007], help="e.g. 2007 2012")
    p.add_argument("--split", default="trainval", help="ImageSets/Main/<split>.txt (trainval, test, ...)")
    p.add_argument("--out", type=Path, required=True, metavar="FILE.json")
    p.add_argument("--protocol", choices=("official", "voc_standard"), default="official", help="default: official")
    p.add_argument(
        "--classes",
        nargs="+",
        help="class names in label order (default: the devkit's per-class lists, else VOC's 20 classes)",
    )
    p.set_defaults(func=cmd_data_voc2coco)

    p = stages.add_parser(
        "backbone",
        help="SwAV self-supervision of the small ResNet (CPU profiles)",
        description="Trains model.backbone=small with SwAV on the unlabeled pretraining images and "
        "writes <backbone.out_dir>/backbone.pth plus a k-NN probe (trained vs random init) in "
        "metrics.json. With model.backbone=resnet50 nothing is trained: the paper's SwAV R50 is "
        "your model.backbone_checkpoint.",
    )
    add_config_args(p)
    p.set_defaults(func=cmd_backbone)

    p = stages.add_parser(
        "proposals",
        help="offline object proposals (EdgeBoxes, Selective Search, random)",
        description="Without --images: the DVC stage, for pretrain.dataset and pretrain.proposals "
        "into proposals.out_dir/<dataset>_<method>, with recall where ground truth exists. With "
        "--images DIR --method M --out STORE: any image folder. Resumable: a rerun keeps "
        "finished shards.",
    )
    p.add_argument("--method", choices=("edgeboxes", "selective_search", "random"), help="default: pretrain.proposals")
    p.add_argument("--images", type=Path, metavar="DIR", help="image folder (searched recursively)")
    p.add_argument("--out", type=Path, metavar="STORE", help="output store directory")
    p.add_argument("--workers", type=count(0), help="processes (default: proposals.workers, 0 = all cores)")
    add_config_args(p)
    p.set_defaults(func=cmd_proposals)

    p = stages.add_parser(
        "pretrain",
        help="self-supervised Transformer pretraining (Siamese DETR, UP-DETR, DETReg)",
        description="pretrain.method on pretrain.dataset with its pretrain.proposals store, backbone "
        "frozen; writes <pretrain.out_dir>/pretrained.pth for `finetune --init`; a rerun resumes. "
        "Choose the method with --set pretrain.method=siamese (Siamese DETR, the default) | updetr (UP-DETR: "
        "random query patches) | detreg (DETReg: Selective Search boxes and their embeddings); the "
        "proposals with pretrain.proposals=edgeboxes | selective_search | random (Table 4). Table 3's "
        "switches (Siamese DETR): pretrain.region_detection=multi | single and pretrain.semantic="
        "R-C+G | R-C | R-O | G | none. Several processes: torchrun --nproc_per_node=N -m siamdetr.cli pretrain ...",
    )
    add_grid_args(p)
    add_config_args(p)
    p.set_defaults(func=cmd_pretrain)

    p = stages.add_parser(
        "finetune",
        help="fine-tune a DETR variant (from scratch or --set finetune.init=CKPT)",
        description="Train on the prepared downstream dataset (finetune.dataset = voc | coco), evaluate every "
        "finetune.eval_every epochs, checkpoint every epoch (a rerun resumes), log to MLflow. Choose the "
        "detector with --set model.variant=vanilla (DETR) | conditional (Conditional DETR, the default) | "
        "deform_ss (Deformable DETR, single scale) | deform_ms (multi-scale). "
        "Several processes: torchrun --nproc_per_node=N -m siamdetr.cli finetune ...",
    )
    p.add_argument(
        "--init",
        type=Path,
        metavar="CHECKPOINT",
        help="start from a pretraining checkpoint (same as "
        "--set finetune.init=...; class head reset, other keys mapped by name: docs/finetuning.md)",
    )
    add_grid_args(p)
    add_config_args(p)
    p.set_defaults(func=cmd_finetune)

    p = stages.add_parser(
        "evaluate",
        help="COCO-style AP of any detector's results json against a gt json",
        description="AP, AP50, AP75, APs, APm, APl (percent) and AP at each IoU 0.50:0.05:0.95, "
        "from a COCO results file (image_id, category_id, bbox [x,y,w,h], score).",
    )
    p.add_argument("--gt", type=Path, required=True, metavar="ANNOTATIONS.json")
    p.add_argument("--detections", type=Path, required=True, metavar="RESULTS.json")
    p.add_argument("--out", type=Path, required=True, metavar="METRICS.json")
    p.add_argument(
        "--area-scale",
        type=area_scale,
        default="auto",
        help="scale of COCO's small/medium/large area limits: 'auto' "
        "reads info.area_scale from the gt json (synthetic data), else 1",
    )
    p.add_argument(
        "--backend",
        choices=("faster", "pycocotools"),
        default="faster",
        help="faster-coco-eval (default) or pycocotools; the numbers are identical",
    )
    p.set_defaults(func=cmd_evaluate)

    p = stages.add_parser(
        "sweep",
        help="Optuna search over Siamese DETR's loss weights and view IoU tau, re-checked over seeds",
        description="A trial pretrains Siamese DETR with the trial's values (the sweep file's pretrain_run) "
        "and fine-tunes from it (finetune_run) on the profile's first seed; the fine-tune's AP after each "
        "evaluated epoch feeds the pruner. Then the best recheck.top_k trials and the paper's values are "
        "re-run with every seed of grid.seeds, and REPORT_DIR/<study>/ gets best.yaml (with the `dvc exp run -S` "
        "command that applies it), trials.csv, figures and index.md. Rerunning the same command resumes "
        "the study. Storage: an SQLite file (default), journal:///FILE for several workers on one "
        "machine, or a PostgreSQL URL for many machines (each runs `siamdetr sweep --search-only`).",
    )
    p.add_argument("--study", help="study name (default: the sweep file's `study`)")
    p.add_argument(
        "--storage", help="sqlite:///FILE (default: runs/sweeps/optuna.db), journal:///FILE, or postgresql://..."
    )
    p.add_argument("--n-trials", type=count(1), help="trials the study should end with (default: the sweep file's)")
    p.add_argument("--workers", type=count(1), default=1, help="trial processes on this machine, one thread each")
    p.add_argument(
        "--space",
        type=Path,
        default=Path("experiments/sweep.yaml"),
        help="sweep file: ranges, objective, pruner, re-check (default: experiments/sweep.yaml)",
    )
    p.add_argument("--search-only", action="store_true", help="run trials only; no re-check, no report")
    p.add_argument("--out-dir", type=Path, default=Path("runs/sweeps"), help="trial runs (default: runs/sweeps)")
    p.add_argument("--report-dir", type=Path, default=Path("reports/sweeps"), help="reports (default: reports/sweeps)")
    add_config_args(p)
    p.set_defaults(func=cmd_sweep)

    p = stages.add_parser(
        "report",
        help="the last stage: Tables 1-4 and Figures 4, 6 from MLflow, paper beside measured",
        description="Reads the finished fine-tuning runs of this profile from MLflow (any tracking URI: "
        "runs from a cluster or a sweep count too) and writes OUT/index.md, OUT/tables/table{1..4}.{md,csv,tex}, "
        "OUT/figures/figure{4,6}.{png,svg} and OUT/runs.json (the run ids behind every cell).",
    )
    p.add_argument("--out", type=Path, default=Path("reports"), help="output directory (default: reports)")
    p.add_argument("--tracking-uri", help="default: $MLFLOW_TRACKING_URI, else sqlite:///<cwd>/mlflow.db")
    add_config_args(p)
    p.set_defaults(func=cmd_report)

    p = stages.add_parser(
        "compare",
        help="two DVC experiments or two sets of MLflow runs side by side",
        description="Every metric of every grid run on both sides: mean ± std over seeds, B - A, and "
        "whether the difference exceeds the seed spread. A side is exp:NAME (a `dvc exp run` "
        "experiment), 'workspace' (runs outside dvc exp) or an MLflow filter string, e.g. "
        "\"tags.git_commit LIKE 'abc%%'\".",
    )
    p.add_argument("a", help="side A: exp:NAME, workspace, or an MLflow filter")
    p.add_argument("b", help="side B")
    p.add_argument("--out", type=Path, help="write Markdown here (default: print it)")
    p.add_argument("--tracking-uri", help="default: $MLFLOW_TRACKING_URI, else sqlite:///<cwd>/mlflow.db")
    p.set_defaults(func=cmd_compare)

    cfg = stages.add_parser("config", help="show the resolved configuration")
    cfg_cmds = cfg.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    p = cfg_cmds.add_parser("show", help="print the resolved config, each value with the file that set it")
    add_config_args(p)
    p.set_defaults(func=cmd_config_show)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from siamdetr.errors import DatasetError, DiskFull, NonFiniteLoss, RunLocked, TrackingError

    args = build_parser().parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    func: Callable[[argparse.Namespace], None] = args.func
    try:
        if args.command in TRACKED:
            from siamdetr.tracking import check_store, default_tracking_uri

            check_store(getattr(args, "tracking_uri", None) or default_tracking_uri())
        func(args)
    except (  # what a user can fix: one line, no traceback
        ConfigError,
        DatasetError,
        DiskFull,
        NonFiniteLoss,
        RunLocked,
        TrackingError,
        FileExistsError,
        FileNotFoundError,
    ) as e:
        print(f"siamdetr: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
