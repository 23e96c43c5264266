"""``htakl-deploy run``: teacher → HTA-KL student → export → Lava + emulator → energy → report."""

from __future__ import annotations

import argparse

EXAMPLES = """\
examples:
  htakl-deploy run                                   # the embedded digits data, a few minutes on 2 cores
  htakl-deploy run --run-name demo --lava-samples 100
  htakl-deploy run --data fashion-mnist --epochs 20 --lr 0.05 --lava-samples 200
  htakl-deploy run --config configs/digits.toml --method hta-kl --timesteps 4
  htakl-deploy run --config configs/paper/cifar100-resnet20.toml     # a [grid] of runs on Ray: every cell, resumable
  htakl-deploy run --config configs/digits-grid.toml --ray-address auto   # the grid on a running Ray cluster
  htakl-deploy run --resume runs/demo                # finish an interrupted run with its saved settings
  htakl-deploy run --resume runs/demo --lava-samples 50   # pipeline flags given on resume override
  htakl-deploy run --from-nir model.nir --data digits --dt 1e-4   # a NIR graph from any framework: no training
  htakl-deploy run --from-nir network.net --input frames.npy     # a lava-dl netx file (integer inputs)

Every distill flag works here (see `htakl-deploy distill --help`), and every flag is also a key of
the --config file (TOML or YAML, dashes or underscores). The run directory ends up with config.json
and pipeline.json (the settings), teacher/, student/, export/, simulate/<backend>/,
energy/<backend>.json, map/<target>.json and report.{md,html,json}.
"""

#: help of the pipeline settings (``runconfig.PipelineConfig`` fields)
PIPELINE_HELP = {
    "lava": "run Lava (the export check and the lava-* backends); --no-lava skips it: large nets need "
            "one OS process per Lava process, and the emulator is bit-exact with Lava's fixed_pt models",
    "lava_samples": "test images run through Lava (default: all the run is evaluated on; the other "
                    "backends always run all)",
    "lava_check": "images the export runs through Lava and the emulator, which must agree spike for "
                  "spike (default 4; 0 skips)",
    "preset": "energy preset for the report (default paper-45nm)",
    "backends": "simulation backends (default: torch-float emulator lava-fixed_pt; also lava-floating_pt)",
    "export_targets": "export targets (default: nir onnx lava; nir and lava are needed by the later stages)",
    "map_target": "hardware target of the mapping stage (`htakl-deploy map`): loihi2 (default), loihi1, "
                  "a target .toml file, or none to skip it",
}


def add_pipeline_flags(parser: argparse.ArgumentParser) -> None:
    from htakl_deploy.runconfig import EXPORT_TARGETS, SIM_BACKENDS

    g = parser.add_argument_group("pipeline (after training; saved in pipeline.json, may be changed on --resume)")
    g.add_argument("--lava", action=argparse.BooleanOptionalAction, default=None, help=PIPELINE_HELP["lava"])
    g.add_argument("--lava-samples", type=int, metavar="N", help=PIPELINE_HELP["lava_samples"])
    g.add_argument("--lava-check", type=int, metavar="N", help=PIPELINE_HELP["lava_check"])
    g.add_argument("--preset", help=PIPELINE_HELP["preset"])
    g.add_argument("--backends", nargs="+", choices=SIM_BACKENDS, metavar="B", help=PIPELINE_HELP["backends"])
    g.add_argument("--export-targets", nargs="+", choices=EXPORT_TARGETS, metavar="T",
                   help=PIPELINE_HELP["export_targets"])
    g.add_argument("--map-target", metavar="TARGET", help=PIPELINE_HELP["map_target"])


def register(sub: argparse._SubParsersAction) -> None:
    from htakl_deploy.cliout import add_json_flags
    from htakl_deploy.cmd_distill import _add_config_flags

    p = sub.add_parser(
        "run", help="the whole pipeline: distil, export, simulate in Lava, count energy, report",
        description=__doc__, epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    g = p.add_argument_group("run")
    g.add_argument("--config", metavar="FILE", help="TOML or YAML file of settings (distill and pipeline keys; "
                                                     "flags override it)")
    g.add_argument("--resume", metavar="RUN_DIR",
                   help="continue a run with its saved settings: finished stages are skipped")
    g.add_argument("--strict", action="store_true",
                   help="fail when the deployed network or a layer never spikes (default: a warning)")
    add_json_flags(g, "the run's result (progress then goes to stderr)")
    g.add_argument("--from-nir", metavar="MODEL.nir", dest="from_nir",
                   help="start from a float NIR graph (snnTorch, SpikingJelly, Norse, by hand) or a lava-dl netx file "
                        "(MODEL.net): no teacher, no distillation; export → simulate → energy → map → report. Needs "
                        "--data or --input, and --dt for a NIR file")
    g.add_argument("--reset", action="append", metavar="[LAYER=]MODE",
                   help="--from-nir only: reset after a spike, 'zero' (default) or 'subtract' (Loihi 2 programmable "
                        "neuron), for every neuron layer or one (repeat the flag); NIR cannot record it")
    g.add_argument("--dt", type=float, dest="dt_s", metavar="SECONDS",
                   help="--from-nir only: the time step the NIR file's exporter divided by (1e-4 for "
                        "SpikingJelly/snnTorch, 1e-6 for Norse 1.1.0)")
    g.add_argument("--calibration", metavar="SRC",
                   help="--from-nir only: calibration inputs (a data set name, or inputs as --input reads them), as "
                        "`export --calibration`")
    g.add_argument("--input", dest="input_file", metavar="FILE",
                   help="--from-nir only: run your own inputs instead of --data: .npy/.npz/.h5 of [T, B, ...] "
                        "sequences (event frames; T from the data) or [B, ...] static inputs, labels optional; or a "
                        "folder of N-MNIST-format .bin event recordings")
    from htakl_deploy.cluster import add_ray_flags

    r = p.add_argument_group("grid (a --config file with a [grid] table: its cells run as Ray tasks; docs/SCALING.md)")
    add_ray_flags(r, "the cells")
    r.add_argument("--cell-cpus", type=float, metavar="N",
                   help="CPUs each cell holds and uses as torch/numba threads (default 1); a cell whose device is "
                        "cuda also holds one GPU")
    add_pipeline_flags(p)
    _add_config_flags(p.add_argument_group("training (as `htakl-deploy distill`; fixed by --resume)"),
                      with_config=False)
    p.set_defaults(handler=run_command)


def pipeline_settings(args: argparse.Namespace, file_values: dict) -> "tuple[object, dict]":
    """The ``PipelineConfig`` of a new run (defaults ← file ← flags) or of a resumed one (saved ←
    flags), and the flags that overrode saved values ({name: (saved, new)})."""
    from htakl_deploy.pipeline import saved_settings
    from htakl_deploy.runconfig import PIPELINE_FIELDS, PipelineConfig

    flags = {k: getattr(args, k) for k in PIPELINE_FIELDS if getattr(args, k) is not None}
    if not args.resume:
        return PipelineConfig(**{**file_values, **flags}), {}
    saved = saved_settings(args.resume) or PipelineConfig()
    new = saved.replace(**flags)
    changed = {k: (getattr(saved, k), getattr(new, k)) for k in flags if getattr(saved, k) != getattr(new, k)}
    return new, changed


def run_command(args: argparse.Namespace) -> int:
    import sys

    from htakl_deploy.cmd_distill import config_from_args, resumed_config
    from htakl_deploy.distill.config import FIELD_NAMES, build_config, read_config_file
    from htakl_deploy.errors import UserError
    from htakl_deploy.pipeline import run_pipeline
    from htakl_deploy.runconfig import PIPELINE_FIELDS

    from htakl_deploy.cliout import check_json_out

    check_json_out(args)
    accepted = FIELD_NAMES | set(PIPELINE_FIELDS)
    values = {}
    if args.config and args.from_nir is None and not args.resume:
        values = read_config_file(args.config, accepted | {"grid"})
        if "grid" in values:
            return _run_grid(args, values, accepted)
    grid_flags = [f for f in ("ray_address", "ray_cpus", "cell_cpus") if getattr(args, f) is not None]
    if grid_flags:
        raise UserError(f"--{grid_flags[0].replace('_', '-')} applies to a grid (a --config file with a [grid] "
                        "table); a single run runs in this process")
    if args.from_nir is not None:
        return _run_from_nir(args)
    given = [f for f, v in (("--dt", args.dt_s), ("--calibration", args.calibration), ("--input", args.input_file),
                            ("--reset", args.reset)) if v is not None]
    if given:
        raise UserError(f"{given[0]} applies to --from-nir only (a trained run knows its own time step and data)")
    if args.resume:
        config_from_args(args)  # refuses training flags and --config with --resume
        settings, changed = pipeline_settings(args, {})
        cfg, teacher_only = resumed_config(args)
    else:
        file_pipeline = {k: values.pop(k) for k in list(values) if k in PIPELINE_FIELDS}
        settings, changed = pipeline_settings(args, file_pipeline)
        cfg, teacher_only = build_config(values, {f: getattr(args, f) for f in FIELD_NAMES}), False
    say = (lambda line: print(line, file=sys.stderr)) if args.json else print
    for name, (old, new) in changed.items():
        say(f"[run] --{name.replace('_', '-')} given on resume: {_show(new)} (was {_show(old)})")
    result = run_pipeline(cfg, settings, resume_dir=args.resume, teacher_only=teacher_only, say=say, strict=args.strict,
                          progress=cfg.progress)
    _emit(result, args)
    return 0


#: the training flags that mean something for --from-nir (the data to run, its time steps, where)
FROM_NIR_FLAGS = ("data", "data_root", "timesteps", "limit_test", "run_name", "out_dir", "progress")


def _run_from_nir(args: argparse.Namespace) -> int:
    """``run --from-nir MODEL.nir``: the pipeline from export on (``pipeline.run_from_nir``)."""
    import sys

    from htakl_deploy.distill.config import FIELD_NAMES
    from htakl_deploy.errors import UserError
    from htakl_deploy.pipeline import run_from_nir

    if args.resume or args.config:
        raise UserError(f"--from-nir: {'--resume' if args.resume else '--config'} does not apply (a NIR run "
                        "has no training to continue or configure); give the pipeline flags directly")
    extra = sorted(f for f in FIELD_NAMES if f not in FROM_NIR_FLAGS and getattr(args, f, None) is not None)
    if extra:
        raise UserError(f"--from-nir: --{extra[0].replace('_', '-')} is a training flag; a NIR run trains nothing")
    settings, _ = pipeline_settings(args, {})
    say = (lambda line: print(line, file=sys.stderr)) if args.json else print
    result = run_from_nir(args.from_nir, data=args.data, dt_s=args.dt_s, settings=settings, timesteps=args.timesteps,
                          run_name=args.run_name, out_dir=args.out_dir or "runs", data_root=args.data_root,
                          limit_test=args.limit_test, calibration=args.calibration, say=say,
                          input_file=args.input_file, reset=args.reset, strict=args.strict,
                          progress=True if args.progress is None else bool(args.progress))
    _emit(result, args)
    return 0


def grid_plan(args: argparse.Namespace, values: dict, accepted: frozenset) -> list:
    """The cells (``grid.Cell``: name, DistillConfig, PipelineConfig) of a config file with a
    ``[grid]`` table, each validated, their paths absolute (``htakl_deploy.grid``)."""
    from pathlib import Path

    from htakl_deploy.distill.config import FIELD_NAMES, build_config
    from htakl_deploy.errors import UserError
    from htakl_deploy.grid import Cell, absolute, cell_name, grid_cells
    from htakl_deploy.runconfig import PIPELINE_FIELDS

    values = dict(values)
    cells_values = grid_cells(values.pop("grid"), set(accepted), f"--config: {args.config}")
    flags = {f: getattr(args, f) for f in FIELD_NAMES}
    clash = [k for k in cells_values[0] if getattr(args, k, None) is not None]
    if clash:
        raise UserError(f"--{clash[0].replace('_', '-')} is a [grid] axis of {args.config}; drop the flag")
    base = flags.get("run_name") or values.get("run_name") or Path(args.config).stem
    cells = []
    for cell in cells_values:  # every cell is validated before the first one runs
        merged = {**values, **cell}
        name = cell_name(cell)
        file_pipeline = {k: merged.pop(k) for k in list(merged) if k in PIPELINE_FIELDS}
        settings, _ = pipeline_settings(args, file_pipeline)
        cfg = build_config(merged, {**flags, "run_name": None}).replace(run_name=f"{base}-{name}", progress=False)
        cells.append(Cell(name, absolute(cfg), settings))
    return cells


def _run_grid(args: argparse.Namespace, values: dict, accepted: frozenset) -> int:
    """``run --config GRID``: every cell on Ray (``htakl_deploy.grid``); 0 when every cell
    finished, 1 (with the list) when some failed, 130 on Ctrl-C (every cell resumable)."""
    import sys
    from pathlib import Path

    from htakl_deploy.cluster import check_ray_flags, ray_address
    from htakl_deploy.grid import run_grid, share_teachers

    address = ray_address(args.ray_address)
    check_ray_flags(address, args.ray_cpus)
    cells = grid_plan(args, values, accepted)
    base = cells[0].cfg.run_name[: -len(cells[0].name) - 1]
    cells, teachers = share_teachers(cells, base)
    say = (lambda line: print(line, file=sys.stderr)) if args.json else print
    try:
        results = run_grid(cells, teachers, address=address, cpus=args.ray_cpus,
                           cell_cpus=args.cell_cpus if args.cell_cpus is not None else 1.0, say=say)
    except KeyboardInterrupt:
        print("htakl-deploy: grid interrupted: the running cells were stopped; every cell continues from its last "
              "checkpoint when you run the same command again", file=sys.stderr)
        return 130
    failed = [r for r in results if r["status"] == "failed"]
    _emit(results, args)
    if not args.json:
        say(f"\ngrid finished: {len(results)} cells ({sum(r['status'] == 'skipped' for r in results)} already done, "
            f"{len(failed)} failed); compare them with `htakl-deploy compare "
            f"{' '.join(str(Path(r['run_dir'])) for r in results if r['status'] != 'failed')}`")
    for r in failed:
        print(f"htakl-deploy: grid cell {r['cell']} failed: {r['error']} (log: {r['log']})", file=sys.stderr)
    return 1 if failed else 0


def _emit(result, args: argparse.Namespace) -> None:
    """``--json-out``, then ``--json`` (the human summary has been said already, line by line)."""
    from htakl_deploy.cliout import emit

    emit(result, args, [])


def _show(value) -> str:
    if isinstance(value, (list, tuple)):
        return " ".join(map(str, value))
    return str(value)
