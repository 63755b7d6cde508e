"""The ``fairdistill`` command line: a thin typer layer over :mod:`fairdistill.api`."""

from __future__ import annotations

import logging
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
import typer.core
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .errors import FairDistillError
from .validate import one_line


def _click_errors() -> tuple[type[Exception], tuple[type[BaseException], ...]]:
    """Click's base exception and the Abort classes, of the click typer parses with (recent typers bundle one)."""
    try:
        from typer._click.exceptions import ClickException  # typer >= 0.2x: a bundled click
    except ImportError:  # pragma: no cover - older typer on the click package
        from click.exceptions import Abort, ClickException

        return ClickException, (Abort, typer.Abort)
    return ClickException, (typer.Abort,)


class _OneLineErrors(typer.core.TyperGroup):
    """The command group, with click's usage errors (``--ipc abc``, an unknown option, a missing one) on one line.

    Click prints a usage error as a usage block plus a framed message; every other error of the
    program is one ``error: ...`` line with exit code 2, and so are these.
    """

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        click_error, aborts = _click_errors()
        try:
            code = super().main(*args, standalone_mode=False, **kwargs)
        except click_error as err:
            ctx = getattr(err, "ctx", None)
            if type(err).__name__ == "NoArgsIsHelpError" and ctx is not None:  # a bare group: its help
                out_console.print(ctx.get_help(), highlight=False, markup=False)
                sys.exit(getattr(err, "exit_code", 2))
            hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
            text = str(err.format_message()).rstrip(".")  # type: ignore[attr-defined]
            message = one_line(f"{text}{hint}")
            err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
            sys.exit(getattr(err, "exit_code", 2))
        except aborts:
            err_console.print("aborted", highlight=False)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(
    cls=_OneLineErrors,
    add_completion=False,
    pretty_exceptions_enable=False,
    no_args_is_help=False,
    help="Fair dataset distillation: COBRA, FairDD and vanilla matching, evaluated for accuracy and fairness.",
)
out_console = Console()
err_console = Console(stderr=True)

DatasetOpt = Annotated[str, typer.Option("--dataset", help="Dataset key (see `fairdistill datasets`).")]
DataRootOpt = Annotated[
    Path | None, typer.Option("--data-root", envvar="FAIRDISTILL_DATA", help="Folder holding on-disk datasets.")
]
StreamOpt = Annotated[
    bool | None,
    typer.Option(
        "--stream/--no-stream",
        help="Keep on-disk training images uint8 and decode a batch at a time (same results, far less memory); "
        "default: the dataset's (npy, folder and hf stream; the benchmarks do not).",
        show_default=False,
    ),
]
#: the dataset options: each given one goes to the dataset's builder (``dataset_options`` of the api)
_DATA_PANEL = "Dataset options (given to the dataset's loader; `fairdistill datasets show KEY` tries them)"
ColumnsOpt = Annotated[
    str | None,
    typer.Option(
        "--columns",
        help="folder: the metadata column of each key, e.g. path=img_filename,label=y,group=place,split=split "
        "(keys: path, label, group, split, class_name, group_name; default: the key's own name).",
        rich_help_panel=_DATA_PANEL,
    ),
]
SplitsOpt = Annotated[
    str | None,
    typer.Option(
        "--splits",
        help="folder: the split values, hf: the split names that are train and test, e.g. train=0,test=2 "
        "(default: train=train,test=test; other splits are left out).",
        rich_help_panel=_DATA_PANEL,
    ),
]
ImageSizeOpt = Annotated[
    int | None,
    typer.Option(
        "--image-size",
        help="Resize the images to N x N (folder, hf, waterbirds, the faces, the MNIST types...; "
        "default: the dataset's).",
        rich_help_panel=_DATA_PANEL,
    ),
]
LabelColumnOpt = Annotated[
    str | None,
    typer.Option("--label-column", help="hf: the label column (default: label).", rich_help_panel=_DATA_PANEL),
]
GroupColumnOpt = Annotated[
    str | None, typer.Option("--group-column", help="hf: the group column (required).", rich_help_panel=_DATA_PANEL)
]
ImageColumnOpt = Annotated[
    str | None,
    typer.Option("--image-column", help="hf: the image column (default: image).", rich_help_panel=_DATA_PANEL),
]
IpcOpt = Annotated[int, typer.Option("--ipc", help="Synthetic images per class.")]
ItersOpt = Annotated[int | None, typer.Option("--iterations", help="Distillation iterations (default: the preset's).")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed of every random draw of the run.")]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")]
ModelsOpt = Annotated[int | None, typer.Option("--models", help="Evaluation models per set (default: the preset's).")]
EpochsOpt = Annotated[int | None, typer.Option("--epochs", help="Evaluation training epochs (default: the preset's).")]
InitOpt = Annotated[
    str | None,
    typer.Option(
        "--init",
        help="How the synthetic set starts: real (as the data comes), balanced (the random-balanced subset "
        "of the same seed) or noise; for every method of the run (default: each recipe's own).",
    ),
]
UnrollOpt = Annotated[
    bool | None,
    typer.Option(
        "--unroll-checkpoint/--no-unroll-checkpoint",
        help="MTT: recompute the student's steps in the backward pass (memory of the parameters, not of "
        "syn_steps x batch_syn activations; the same gradients). Default: the profile's (off).",
    ),
]
DsaExactOpt = Annotated[
    bool | None,
    typer.Option(
        "--dsa-exact/--no-dsa-exact",
        help="DSA's float64 warp and colour jitter on every image: exact to rounding, DSA 2.6x slower "
        "(default: the images' dtype and only the drawn operations, as the reference codebases).",
    ),
]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress output and no notes.")]
VerboseOpt = Annotated[
    bool, typer.Option("--verbose", "-v", help="Log details (INFO); same as the global `fairdistill -v`.")
]
EvalModelsOpt = Annotated[
    str | None,
    typer.Option(
        "--eval-models",
        help="Comma-separated architectures to evaluate with, --models networks each, e.g. "
        "convnet,alexnet,vgg11,resnet18 (default: the preset's ConvNet). The first one is the headline.",
    ),
]
GroupFractionOpt = Annotated[
    float | None,
    typer.Option(
        "--group-label-fraction",
        help="Keep the group label of this share of each class's training images (0 < P <= 1); the rest unlabelled.",
    ),
]
GroupNoiseOpt = Annotated[
    float | None,
    typer.Option("--group-label-noise", help="Give this share of the training group labels another group (0..1)."),
]
GroupsOpt = Annotated[
    str | None,
    typer.Option(
        "--groups",
        help="Training groups: true (default), infer:kmeans:K, infer:kmeans (K by silhouette) or infer:dbscan. "
        "The test split always keeps the true groups.",
    ),
]
CheckpointOpt = Annotated[
    int,
    typer.Option(
        "--checkpoint-every",
        help="Save the distillation state to OUT/checkpoint/ every N iterations and at the end (0: never).",
    ),
]
EvalWorkersOpt = Annotated[
    int,
    typer.Option(
        "--eval-workers",
        help="Train the evaluation models in N worker processes, each with its share of the threads (1: here).",
    ),
]
EvalExecutorOpt = Annotated[
    str, typer.Option("--eval-executor", help="Where the --eval-workers run: local (processes) or ray.")
]
ResumeOpt = Annotated[
    bool,
    typer.Option("--resume", help="Continue an interrupted run from what OUT holds (same settings required)."),
]
#: the output folder of distill, compare and reproduce (each with its own default)
OutDirOpt = Annotated[str, typer.Option("--out", help="Output folder.")]
#: compare's --preset: a compute profile, not a method preset
ProfileOpt = Annotated[
    str | None,
    typer.Option(
        "--preset", help="Compute profile: cpu or gpu (ours; default: by device), cobra-paper or fairdd-paper."
    ),
]


def _configure_logging(verbose: bool) -> None:
    """Library messages go through :mod:`logging`: warnings by default, everything with --verbose."""
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")  # a no-op when already configured
    logging.getLogger("fairdistill").setLevel(logging.INFO if verbose else logging.WARNING)
    if verbose:
        warnings.filterwarnings("default", message="empty test cells")
    else:
        warnings.filterwarnings("ignore", message="empty test cells")


@contextmanager
def _user_errors() -> Iterator[None]:
    """Turn user errors into one line on stderr and exit code 2 (no traceback)."""
    try:
        yield
    except FairDistillError as err:
        # one bounded line whatever the message holds (a list of 10^6 class names must not reach the terminal)
        err_console.print(f"[bold red]error:[/] {escape(one_line(str(err)))}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None


@contextmanager
def _progress(quiet: bool) -> Iterator:
    """A progress hook: rich bars on a terminal, a plain line every ~10% otherwise, nothing when quiet."""
    if quiet:
        yield None
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    bars = Progress(
        TextColumn("{task.description:<22}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=False,
        disable=not err_console.is_terminal,
    )
    tasks: dict[str, int] = {}
    plain = not err_console.is_terminal
    last: dict[str, int] = {}

    def hook(phase: str, done: int, total: int) -> None:
        if phase not in tasks:
            tasks[phase] = bars.add_task(phase, total=total)
        bars.update(tasks[phase], completed=done, total=total)
        if plain:  # a log line every ~10% instead of a bar
            step = max(1, total // 10)
            if done == total or done - last.get(phase, 0) >= step:
                last[phase] = done
                err_console.print(f"{phase}: {done}/{total}", highlight=False)

    with bars:
        yield hook


def _split(names: str) -> list[str]:
    return [n.strip() for n in names.split(",") if n.strip()]


def _true_false(option: str, value: str | None) -> bool | None:
    """``true`` / ``false`` (any case) as a bool, None when not given; anything else is a user error."""
    if value is None:
        return None
    if value.lower() not in ("true", "false"):
        raise FairDistillError(f"{option} takes true or false, got {value!r}")
    return value.lower() == "true"


#: a command's parameter -> the api keyword it is passed as, where the two names differ
API_NAMES = {"models": "num_models"}
#: the parameters a command handles itself, never passed on to the api
CLI_ONLY = ("quiet", "verbose")
#: the parameters that are dataset options: the api gets the given ones as ``dataset_options``
DATASET_OPTIONS = ("columns", "splits", "image_size", "label_column", "group_column", "image_column")


def _dataset_options(params: dict[str, Any]) -> dict[str, Any]:
    """The dataset options among a command's parameters that were given (not None)."""
    return {name: params[name] for name in DATASET_OPTIONS if params.get(name) is not None}


def _api_kwargs(
    params: dict[str, Any],
    *,
    skip: tuple[str, ...] = (),
    lists: tuple[str, ...] = (),
    optional_lists: tuple[str, ...] = (),
) -> dict[str, Any]:
    """The api keywords for a command's parameters (``params``: name -> value, in declaration order).

    Each keeps its name but for :data:`API_NAMES` and its place in the order; :data:`CLI_ONLY` and
    ``skip`` (passed some other way) are left out. The comma-separated ``lists`` become lists (``''``:
    an empty one); ``optional_lists`` likewise, but ``None`` when not given or empty (the api's default).
    The :data:`DATASET_OPTIONS` that were given go together as ``dataset_options``.
    """
    kwargs = {}
    for name, value in params.items():
        if name in CLI_ONLY or name in skip or name in DATASET_OPTIONS:
            continue
        if name in lists:
            value = _split(value)
        elif name in optional_lists:
            value = _split(value) if value else None
        kwargs[API_NAMES.get(name, name)] = value
    if any(name in params for name in DATASET_OPTIONS):
        kwargs["dataset_options"] = _dataset_options(params)
    return kwargs


@app.command()
def distill(
    dataset: DatasetOpt = "cmnist-fg-mini",
    data_root: DataRootOpt = None,
    preset: Annotated[
        str, typer.Option("--preset", help="Method preset, e.g. cobra, fairdd-cpu, vanilla-gpu, dc-cobra.")
    ] = "cobra",
    backbone: Annotated[
        str | None,
        typer.Option("--backbone", help="Backbone (dm, dc, idc, cafe): use its form of the preset's recipe."),
    ] = None,
    target: Annotated[str | None, typer.Option("--target", help="Override the target.")] = None,
    distance: Annotated[str | None, typer.Option("--distance", help="Override the distance.")] = None,
    embedder: Annotated[str | None, typer.Option("--embedder", help="Override the embedder.")] = None,
    sampling: Annotated[str | None, typer.Option("--sampling", help="Real batches: class or stratified.")] = None,
    ipc: IpcOpt = 10,
    iterations: ItersOpt = None,
    seed: SeedOpt = 0,
    device: DeviceOpt = "auto",
    out: OutDirOpt = "runs/distill",
    group_label_fraction: GroupFractionOpt = None,
    group_label_noise: GroupNoiseOpt = None,
    groups: GroupsOpt = None,
    checkpoint_every: CheckpointOpt = 50,
    resume: ResumeOpt = False,
    init: InitOpt = None,
    unroll_checkpoint: UnrollOpt = None,
    dsa_exact: DsaExactOpt = None,
    stream: StreamOpt = None,
    columns: ColumnsOpt = None,
    splits: SplitsOpt = None,
    image_size: ImageSizeOpt = None,
    label_column: LabelColumnOpt = None,
    group_column: GroupColumnOpt = None,
    image_column: ImageColumnOpt = None,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Distil one synthetic set; writes synthetic.safetensors, record.json and grid.png into --out.

    Under ``torchrun --nproc_per_node N -m fairdistill distill ...`` the classes are sharded across
    the N processes (README: Scaling out); rank 0 writes the files.
    """
    params = dict(locals())  # the options as given; taken first, before any other name is bound here
    from . import api, runtime

    if verbose:
        _configure_logging(True)

    with _user_errors(), runtime.session(device) as rt, _progress(quiet or not rt.is_main) as hook:
        if not rt.is_main and not verbose:
            logging.getLogger("fairdistill").setLevel(logging.ERROR)  # one process speaks for the run
        synset = api.distill(dataset, progress=hook, **_api_kwargs(params, skip=("dataset",)))
    if rt.is_main:
        _print_distilled(synset, rt.world_size, out)


def _print_distilled(synset: Any, procs: int, out: str) -> None:
    """The one line `distill` ends with: how many images, made how, in how long, and where they went."""
    m = synset.meta["method"]
    out_console.print(
        f"distilled {synset.images.shape[0]} images ({m['backbone']} / {m['target']} / {m['distance']} / "
        f"{m['embedder']}, sampling {synset.meta['sampling']}) in {synset.meta['seconds']:.0f} s"
        f"{f' on {procs} processes' if procs > 1 else ''} -> {out}",
        highlight=False,
    )


#: the set ``evaluate`` reads, in any layout of :mod:`fairdistill.layouts`
AnySetArg = Annotated[
    Path,
    typer.Argument(
        help="A set in any layout: synthetic.safetensors (or its folder), a DC-style .pt, a folder with "
        "images.pt + labels.pt, or a folder of <class>/<index>.png (README: Evaluate sets from other tools)."
    ),
]
NormalisedOpt = Annotated[
    str | None,
    typer.Option(
        "--normalised",
        help="true: the .pt tensors are in model space ((pixel - mean) / std); false: pixels in [0, 1]. "
        "Required where the layout cannot tell (a .pt from another tool).",
    ),
]


@app.command()
def evaluate(
    synthetic: AnySetArg,
    dataset: Annotated[
        str | None,
        typer.Option("--dataset", help="Dataset key (default: the set's own; required for sets from other tools)."),
    ] = None,
    data_root: DataRootOpt = None,
    normalised: NormalisedOpt = None,
    columns: ColumnsOpt = None,
    splits: SplitsOpt = None,
    image_size: ImageSizeOpt = None,
    label_column: LabelColumnOpt = None,
    group_column: GroupColumnOpt = None,
    image_column: ImageColumnOpt = None,
    preset: Annotated[str | None, typer.Option("--preset", help="Take evaluation settings from this preset.")] = None,
    models: ModelsOpt = None,
    epochs: EpochsOpt = None,
    seed: SeedOpt = 0,
    empty_cells: Annotated[str | None, typer.Option("--empty-cells", help="ignore (default) or zero.")] = None,
    device: DeviceOpt = "auto",
    out: Annotated[str | None, typer.Option("--out", help="JSON file for the results.")] = None,
    eval_models: EvalModelsOpt = None,
    resume: Annotated[
        bool,
        typer.Option("--resume", help="Skip the models an interrupted run with this --out already finished."),
    ] = False,
    eval_workers: EvalWorkersOpt = 1,
    eval_executor: EvalExecutorOpt = "local",
    dsa_exact: DsaExactOpt = None,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Train fresh networks on a synthetic set (ours or another tool's) and print ACC / DEO_M / DEO_A."""
    from . import api

    if verbose:
        _configure_logging(True)

    with _user_errors(), _progress(quiet) as hook:
        result = api.evaluate(
            synthetic,
            dataset=dataset,
            data_root=data_root,
            normalised=_true_false("--normalised", normalised),
            preset=preset,
            num_models=models,
            epochs=epochs,
            seed=seed,
            empty_cells=empty_cells,
            device=device,
            out=out,
            progress=hook,
            eval_models=_split(eval_models) if eval_models else None,
            resume=resume,
            eval_workers=eval_workers,
            eval_executor=eval_executor,
            dataset_options=_dataset_options(locals()),
            dsa_exact=dsa_exact,
        )
    soft = " · soft labels" if result.extra.get("labels") == "soft" else ""
    title = f"{len(result.reports)} evaluation model(s){soft}"
    _print_by_model({synthetic.name: {**result.aggregate(), "by_model": result.aggregates()}}, title=title)


@app.command()
def compare(
    dataset: DatasetOpt = "cmnist-fg-mini",
    data_root: DataRootOpt = None,
    methods: Annotated[str, typer.Option("--methods", help="Comma-separated method presets.")] = (
        "vanilla,fairdd,cobra,fair"
    ),
    baselines: Annotated[str, typer.Option("--baselines", help="Comma-separated baselines ('' for none).")] = (
        "random,random-balanced,full"
    ),
    preset: ProfileOpt = None,
    backbone: Annotated[str, typer.Option("--backbone", help="Matching backbone.")] = "dm",
    ipc: IpcOpt = 10,
    iterations: ItersOpt = None,
    models: ModelsOpt = None,
    epochs: EpochsOpt = None,
    seed: SeedOpt = 0,
    device: DeviceOpt = "auto",
    scale: Annotated[
        str | None,
        typer.Option("--scale", help="cpu: cut the profile's sizes to two CPU cores (each cut listed); default: as is"),
    ] = None,
    out: OutDirOpt = "runs/compare",
    group_label_fraction: GroupFractionOpt = None,
    group_label_noise: GroupNoiseOpt = None,
    groups: GroupsOpt = None,
    eval_models: EvalModelsOpt = None,
    checkpoint_every: CheckpointOpt = 50,
    resume: ResumeOpt = False,
    init: InitOpt = None,
    unroll_checkpoint: UnrollOpt = None,
    dsa_exact: DsaExactOpt = None,
    report: Annotated[
        bool, typer.Option("--report/--no-report", help="Also write report.html and report.md into --out.")
    ] = True,
    stream: StreamOpt = None,
    columns: ColumnsOpt = None,
    splits: SplitsOpt = None,
    image_size: ImageSizeOpt = None,
    label_column: LabelColumnOpt = None,
    group_column: GroupColumnOpt = None,
    image_column: ImageColumnOpt = None,
    eval_workers: EvalWorkersOpt = 1,
    eval_executor: EvalExecutorOpt = "local",
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Distil several methods in lockstep, evaluate them beside the baselines, write summary.json and a report."""
    params = dict(locals())  # the options as given; taken first, before any other name is bound here
    from . import api

    if verbose:
        _configure_logging(True)

    kwargs = _api_kwargs(params, skip=("dataset",), lists=("methods", "baselines"), optional_lists=("eval_models",))
    with _user_errors(), _progress(quiet) as hook:
        result = api.compare(dataset, progress=hook, **kwargs)
    _print_compared(result, out, quiet)


def _print_compared(result: Any, out: str, quiet: bool) -> None:
    """What `compare` ends with: the scale's cuts, the metrics table(s) and the files written (or why no report)."""
    s = result.summary
    for cut in s["scale"]["reductions"]:
        out_console.print(f"reduced: {cut}", highlight=False)
    title = (
        f"{s['dataset']} · {s['backbone']} · ipc {s['ipc']} · preset {s['preset']} · "
        f"{s['eval_config']['num_models']} model(s) · mean ± std, %"
    )
    _print_by_model(s["methods"], title=title)
    out_console.print(f"wrote {Path(out) / 'summary.json'}", highlight=False)
    if result.report is not None:
        out_console.print(f"wrote {result.report} and {result.report.with_suffix('.md')}", highlight=False)
    elif result.report_skipped and not quiet:
        err_console.print(f"note: no report ({escape(result.report_skipped)})", highlight=False, soft_wrap=True)


@app.command("report")
def report_cmd(
    run_dirs: Annotated[
        list[Path], typer.Argument(help="Output folders of `fairdistill compare` (or their summary.json).")
    ],
    out: Annotated[
        str | None, typer.Option("--out", help="Folder for report.html / report.md (default: the one run folder).")
    ] = None,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Write an offline HTML report (report.html) and a Markdown summary (report.md) of compare runs."""
    from .report import report

    if verbose:
        _configure_logging(True)
    with _user_errors(), _progress(quiet) as hook:
        written = report(run_dirs, out, progress=hook)
    if not quiet:
        out_console.print(f"wrote {written.html} and {written.markdown}", highlight=False)


def _print_by_model(rows: dict[str, dict], title: str) -> None:
    """One table, or one per architecture when the rows hold several (``row["by_model"]``)."""
    archs = next(iter(rows.values()), {}).get("by_model", {})
    if len(archs) <= 1:
        _print_table(rows, title=title)
        return
    for arch in archs:
        _print_table({name: m["by_model"][arch] for name, m in rows.items()}, title=f"{arch} · {title}")


def _print_table(rows: dict[str, dict], title: str) -> None:
    from .evaluate import format_mean_std

    table = Table(title=title, title_justify="left")
    for col in ("method", "ACC ↑", "DEO_M ↓", "DEO_A ↓", "worst group ↑"):
        table.add_column(col, justify="left" if col == "method" else "right")
    for name, m in rows.items():
        table.add_row(name, *(format_mean_std(m[k]) for k in ("acc", "deo_m", "deo_a", "worst_group_acc")))
    out_console.print(table)


@app.command()
def experts(
    dataset: DatasetOpt = "cmnist-fg-mini",
    data_root: DataRootOpt = None,
    target: Annotated[
        str, typer.Option("--target", help="population (MTT's experts), barycenter or uniform-sampling.")
    ] = "population",
    num_experts: Annotated[int | None, typer.Option("--experts", help="How many (default: the profile's).")] = None,
    epochs: Annotated[int | None, typer.Option("--epochs", help="Epochs each (default: the profile's).")] = None,
    out: Annotated[
        str | None, typer.Option("--out", help="Folder of the buffers (default: the cache, where MTT finds them).")
    ] = None,
    preset: Annotated[str | None, typer.Option("--preset", help="Profile of the MTT settings: cpu or gpu.")] = None,
    seed: SeedOpt = 0,
    device: DeviceOpt = "auto",
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Train the expert trajectories MTT matches (one safetensors file per expert; resumable, cached)."""
    params = dict(locals())  # the options as given; taken first, before any other name is bound here
    from . import api

    if verbose:
        _configure_logging(True)
    with _user_errors(), _progress(quiet) as hook:
        buffer = api.experts(dataset, progress=hook, **_api_kwargs(params, skip=("dataset",)))
    cfg = buffer.config
    out_console.print(
        f"{len(buffer)} {cfg.target} expert(s) x {cfg.epochs} epochs of {cfg.model} on {buffer.dataset.name} "
        f"-> {buffer.folder}",
        highlight=False,
    )


@app.command()
def export(
    synthetic: Annotated[Path, typer.Argument(help="A synthetic.safetensors file or the folder holding it.")],
    fmt: Annotated[
        str,
        typer.Option(
            "--format",
            help="dc-pt: one .pt file, a dict whose 'data' lists one (images, labels) pair (the DC/DSA/DM "
            "layout); tensor: a folder with images.pt + labels.pt (DD-Ranking); png: a folder of <class>/<index>.png.",
        ),
    ],
    out: Annotated[str, typer.Option("--out", help="dc-pt: a .pt file (or a folder); tensor and png: a folder.")],
) -> None:
    """Export a saved synthetic set for other dataset-distillation tools."""
    from .artifacts import load_synthetic
    from .export import check_export_out, export_synthetic

    with _user_errors():
        check_export_out(out, fmt)  # the format and the output path before the set is read
        synset = load_synthetic(synthetic)
        written = export_synthetic(synset, out, fmt)
    out_console.print(
        f"exported {synset.images.shape[0]} images as {fmt}: {len(written)} file(s) -> {out}", highlight=False
    )


@app.command("reproduce")
def reproduce_cmd(
    paper: Annotated[str, typer.Option("--paper", help="Whose published table to reproduce: fairdd or cobra.")],
    datasets: Annotated[
        str | None,
        typer.Option("--datasets", help="Comma-separated datasets of the paper's table (default: all at --ipc)."),
    ] = None,
    backbones: Annotated[
        str | None, typer.Option("--backbones", help="Comma-separated backbones, e.g. dm,dc (default: all at --ipc).")
    ] = None,
    ipc: IpcOpt = 10,
    scale: Annotated[
        str,
        typer.Option(
            "--scale",
            help="paper: the paper's settings (GPU hours); cpu: reduced settings for a CPU, listed in the output.",
        ),
    ] = "paper",
    data_root: DataRootOpt = None,
    out: OutDirOpt = "runs/reproduce",
    seed: SeedOpt = 0,
    device: DeviceOpt = "auto",
    iterations: ItersOpt = None,
    models: ModelsOpt = None,
    epochs: EpochsOpt = None,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Run a paper's benchmarks and print its published numbers beside ours (reproduce.json / .md / .html)."""
    params = dict(locals())  # the options as given; taken first, before any other name is bound here
    from . import reproduce as rep

    if verbose:
        _configure_logging(True)
    kwargs = _api_kwargs(params, skip=("paper",), optional_lists=("datasets", "backbones"))
    for name in REPRODUCE_OVERRIDES:  # not given: the paper's profile decides
        if kwargs[name] is None:
            del kwargs[name]
    with _user_errors(), _progress(quiet) as hook:
        result = rep.reproduce(paper, progress=hook, **kwargs)
    _print_reproduce_table(result)
    _print_reproduce_notes(result, quiet)


#: the reproduce options passed on only where given (overrides of the paper's profile)
REPRODUCE_OVERRIDES = ("iterations", "num_models", "epochs")


def _print_reproduce_table(result: Any) -> None:
    """The side-by-side table, a section per benchmark, then the legend and the footnotes (nothing without rows)."""
    from rich import box

    from . import reproduce as rep

    layout = rep.terminal_table(result)
    table = Table(title=rep.title(result), title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    for col in layout.headers:
        table.add_column(col, justify="left" if col == "method" else "right", no_wrap=col == "method")
    for section, status, cells in layout.rows:
        if section is not None:
            if table.rows:
                table.add_section()
            table.add_row(f"[bold]{escape(section)}[/]")
        table.add_row(*map(escape, cells), style={"ours": "italic", "reference": "dim"}.get(status))
    if layout.rows:  # a file or a pipe gets the table's whole width instead of 80 columns
        wide = out_console if out_console.is_terminal else Console(file=out_console.file, width=132)
        wide.print(table)
        for line in [rep.legend(result), *layout.footnotes]:
            out_console.print(escape(line), highlight=False)


def _print_reproduce_notes(result: Any, quiet: bool) -> None:
    """Below the table: the settings the scale reduced, the skipped benchmarks (and a hint) and the files written."""
    from . import reproduce as rep

    reductions = rep.reductions_text(result)
    if reductions:
        out_console.print(f"[bold]reduced settings (scale {escape(result.scale)}):[/]", highlight=False)
        for item in reductions:
            out_console.print(f"  - {escape(item)}", highlight=False, soft_wrap=True)
    for s in result.skipped:
        out_console.print(
            f"skipped {escape(s.dataset)} / {escape(s.backbone)} ({escape(', '.join(s.methods))}): {escape(s.reason)}",
            highlight=False,
            soft_wrap=True,
        )
    if result.skipped and not quiet:
        err_console.print(
            "note: `fairdistill datasets show DATASET --data-root DIR` says where the files are looked for",
            highlight=False,
            soft_wrap=True,
        )
    if result.files:
        written = ", ".join(str(p) for p in result.files.values())
        out_console.print(f"wrote {escape(written)}", highlight=False, soft_wrap=True)


datasets_app = typer.Typer(help="List the dataset keys, or show one dataset's (class x group) counts.")
app.add_typer(datasets_app, name="datasets")


@datasets_app.callback(invoke_without_command=True)
def datasets(ctx: typer.Context) -> None:
    """List the dataset keys with a one-line description (`datasets show KEY` for the counts)."""
    if ctx.invoked_subcommand is not None:
        return
    from .data import DATASETS, EMBEDDED

    for name in DATASETS.list():
        where = "embedded" if name in EMBEDDED else "files"
        out_console.print(f"{name:<16} {where:<9} {DATASETS.describe(name)}", highlight=False, soft_wrap=True)


@datasets_app.command("show")
def datasets_show(
    key: Annotated[str, typer.Argument(help="Dataset key (see `fairdistill datasets`).")],
    data_root: DataRootOpt = None,
    columns: ColumnsOpt = None,
    splits: SplitsOpt = None,
    image_size: ImageSizeOpt = None,
    label_column: LabelColumnOpt = None,
    group_column: GroupColumnOpt = None,
    image_column: ImageColumnOpt = None,
) -> None:
    """Print the train and test (class x group) count tables of a dataset."""
    from .data import load_dataset

    options = _dataset_options(locals())
    with _user_errors():
        data = load_dataset(key, data_root=data_root, **options)
    out_console.print(f"[bold]{data.name}[/]: {data.description}", highlight=False, soft_wrap=True)
    out_console.print(
        f"{data.num_classes} classes x {data.num_groups} groups, images {data.channels}x"
        f"{data.image_size[0]}x{data.image_size[1]}, fingerprint {data.fingerprint()}",
        highlight=False,
    )
    for which in ("train", "test"):
        counts = data.counts(which)
        table = Table(title=f"{which}: {int(counts.sum())} images (rows: class, columns: group)", title_justify="left")
        table.add_column("class")
        for g in data.group_names_of(which):
            table.add_column(g, justify="right")
        table.add_column("total", justify="right")
        for c, row in zip(data.class_names, counts.tolist(), strict=True):
            table.add_row(c, *map(str, row), str(sum(row)))
        table.add_row("total", *map(str, counts.sum(0).tolist()), str(int(counts.sum())), style="bold")
        out_console.print(table)


presets_app = typer.Typer(help="List the profiles and method recipes, or show one preset's settings and their sources.")
app.add_typer(presets_app, name="presets")


@presets_app.callback(invoke_without_command=True)
def presets(ctx: typer.Context) -> None:
    """The compute profiles (a paper's or ours) and the recipes per backbone (preset = [BACKBONE-]RECIPE[-PROFILE])."""
    if ctx.invoked_subcommand is not None:
        return
    from .backbones import BACKBONES
    from .presets import BACKBONE_RECIPES, PROFILES, preset_name

    out_console.print("[bold]compute profiles[/]")
    for name in PROFILES.list():
        prof = PROFILES.get(name)
        whose = f"{prof.paper}'s scripts" if prof.paper else "ours"
        out_console.print(f"  {name:<14} {whose:<17} {prof.description}", highlight=False)
    for backbone, recipes in BACKBONE_RECIPES.items():
        out_console.print(f"[bold]method recipes, backbone {backbone}[/]")
        allowed = BACKBONES.get(backbone).embedders  # DC trains its own network: no embedder knob to show
        has_embedders = allowed is None or len(allowed) > 1
        for name in recipes.list():
            m, label = recipes.get(name), preset_name(backbone, name)
            knobs = f"{m.target} + {m.distance}" + (f" + {m.embedder}" if has_embedders else "")
            papers = [
                p for p in PROFILES.list()
                if PROFILES.get(p).paper and backbone in PROFILES.get(p).backbones
                and name in (PROFILES.get(p).of(backbone).recipes or ())
            ]  # fmt: skip
            runs = f" [in {', '.join(papers)}]" if papers else ""
            out_console.print(f"  {label:<22} {knobs}: {recipes.describe(name)}{runs}", highlight=False)
    out_console.print(
        "`fairdistill presets show RECIPE --preset PROFILE --backbone B` prints every setting with its source.",
        highlight=False,
    )


@presets_app.command("show")
def presets_show(
    recipe: Annotated[str, typer.Argument(help="A recipe (cobra) or preset (dc-cobra, cobra-cobra-paper).")],
    preset: Annotated[
        str | None,
        typer.Option("--preset", help="The profile: cobra-paper, fairdd-paper, cpu or gpu (default: by device)."),
    ] = None,
    backbone: Annotated[
        str | None, typer.Option("--backbone", help="dm, dc, idc or cafe (default: the recipe's).")
    ] = None,
    ipc: IpcOpt = 10,
    dataset: Annotated[
        str | None,
        typer.Option("--dataset", help="A dataset key, for settings that depend on it (COBRA's IDC factor)."),
    ] = None,
) -> None:
    """Every resolved setting of one preset, with where it comes from (a reference script and flag, or ours)."""
    from .config import check_count
    from .presets import describe_preset

    with _user_errors():
        check_count("ipc", ipc, 1)
        d = describe_preset(recipe, preset, backbone=backbone, ipc=ipc, dataset=dataset)
    whose = f"{d['paper']}'s scripts" if d["paper"] else "ours (fairdistill)"
    out_console.print(f"[bold]{d['preset']}[/]: profile {d['profile']} ({whose}), backbone {d['backbone']}, IPC {ipc}")
    for section in ("method", "distill", "evaluation"):
        table = Table(title=section, title_justify="left", show_lines=False)
        table.add_column("setting")
        table.add_column("value")
        table.add_column("source")
        for name, (value, source) in d[section].items():
            table.add_row(name, escape(str(value)), escape(source))
        out_console.print(table)


@app.callback()
def _root(
    ctx: typer.Context, verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log details.")] = False
) -> None:
    _configure_logging(verbose)
    from .runtime import launched_world_size

    with _user_errors():
        if launched_world_size() > 1 and ctx.invoked_subcommand not in DISTRIBUTED_COMMANDS:
            raise FairDistillError(
                f"`fairdistill {ctx.invoked_subcommand}` runs in one process; under torchrun only "
                f"{', '.join(sorted(DISTRIBUTED_COMMANDS))} is sharded across processes "
                "(launch the others without torchrun)"
            )


#: the commands that may be launched by torchrun with several processes
DISTRIBUTED_COMMANDS = frozenset({"distill"})


def main() -> None:
    app(prog_name="fairdistill")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
