"""``htakl-deploy energy``: exact AC/MAC counts, firing rates and energy of a spike recording."""

from __future__ import annotations

import argparse

from htakl_deploy.cliout import add_json_flags
from htakl_deploy.energy.report import NEUROBENCH_SAMPLES

EXAMPLES = """\
examples:
  htakl-deploy energy spikes.h5 --graph export/student_quant.nir                 # paper-45nm preset
  htakl-deploy energy spikes.h5 --graph export/student_float.nir --preset loihi1 --json-out energy.json
  htakl-deploy energy spikes.h5 --graph export/student_quant.nir --neurobench-samples all   # NeuroBench on every sample
  htakl-deploy energy spikes.h5 --graph export/student_quant.nir --energy-model my_chip.toml
  htakl-deploy energy spikes.h5 --graph export/student_quant.nir --shards 2   # NeuroBench pass on 2 Ray workers

presets: paper-45nm (0.9 pJ/AC, 4.6 pJ/MAC), horowitz-int8 (add 0.03, mult 0.2 pJ), loihi1
(23.6 pJ/synaptic op, 81 pJ/neuron update, 1.7 pJ/spike). An energy model file (TOML or JSON)
holds source, e_ac_pj, e_mac_pj and optionally e_neuron_update_pj, e_spike_pj, name, notes.
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "energy", help="count ACs/MACs of recorded spikes and price them with an energy model",
        description=__doc__, epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("spikes", metavar="SPIKES.h5", help="spike recording (htakl-spikes/1 HDF5)")
    p.add_argument("--graph", required=True, metavar="NIR", help="the student's NIR file (float or quantised)")
    model = p.add_mutually_exclusive_group()
    model.add_argument("--preset", default=None, help="energy preset (default: paper-45nm)")
    model.add_argument("--energy-model", metavar="FILE", help="energy model file (.toml or .json)")
    add_json_flags(p, "the full report")
    nb = p.add_mutually_exclusive_group()
    nb.add_argument("--neurobench-samples", metavar="N|all", type=neurobench_samples, default=NEUROBENCH_SAMPLES,
                    help="the NeuroBench-style effective op counts, a cross-check that runs every layer again, "
                         f"on N samples spread evenly over the recording (default {NEUROBENCH_SAMPLES}), or all "
                         "of them; the AC/MAC counts and the energy always use every sample")
    nb.add_argument("--no-neurobench", dest="neurobench_samples", action="store_const", const=0,
                    help="skip the NeuroBench-style counts")
    from htakl_deploy.cluster import add_ray_flags

    g = p.add_argument_group("shards (docs/SCALING.md)")
    g.add_argument("--shards", type=int, metavar="N",
                   help="run the NeuroBench-style counts (the pass that reads every spike of its samples) as N Ray "
                        "tasks over parts of those samples; the counts are exactly one process's (default: one "
                        "process, no Ray)")
    add_ray_flags(g, "the shards")
    p.set_defaults(handler=run_command)


def neurobench_samples(text: str) -> int | None:
    """``--neurobench-samples``: a positive count, or ``all`` (None)."""
    if text == "all":
        return None
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"got {text!r}, expected a positive number of samples or 'all'")
    return n


def run_command(args: argparse.Namespace) -> int:
    from htakl_deploy.cliout import check_json_out, emit
    from htakl_deploy.energy.models import load_energy_model, load_preset
    from htakl_deploy.energy.report import format_table, report_for_files

    from htakl_deploy.cluster import ray_address
    from htakl_deploy.errors import UserError

    if (args.ray_address or args.ray_cpus) and not (args.shards and args.shards > 1):
        raise UserError(f"{'--ray-address' if args.ray_address else '--ray-cpus'} applies with --shards N (N >= 2)")
    check_json_out(args)  # before counting: a bad output path costs nothing
    model = load_energy_model(args.energy_model) if args.energy_model else load_preset(args.preset or "paper-45nm")
    report = report_for_files(args.spikes, args.graph, model, neurobench_samples=args.neurobench_samples,
                              shards=args.shards, ray_address=ray_address(args.ray_address), ray_cpus=args.ray_cpus)
    emit(report, args, [format_table(report)])
    return 0
