"""``htakl-deploy distill`` and ``htakl-deploy train-teacher``."""

from __future__ import annotations

import argparse
import os
from dataclasses import fields

from htakl_deploy.cliout import add_json_flags, check_json_out, emit, pct
from htakl_deploy.distill.config import TEACHER_FIELDS, DistillConfig, build_config, read_config_file

DISTILL_EXAMPLES = """\
examples:
  htakl-deploy distill                                   # digits, convnet, HTA-KL, T=4 (trains the teacher first)
  htakl-deploy distill --data fashion-mnist --epochs 12 --run-name fmnist-hta
  htakl-deploy distill --method kd --timesteps 2 --teacher runs/T/teacher/last.pt
  htakl-deploy distill --config my.toml --lr 0.05        # flags override the file
  htakl-deploy distill --resume runs/fmnist-hta          # continue an interrupted run exactly
  torchrun --nproc_per_node 2 -m htakl_deploy distill --data fashion-mnist   # data-parallel
  torchrun --nproc_per_node 8 -m htakl_deploy distill --data cifar100 --model resnet19 --device cuda
"""

TEACHER_EXAMPLES = """\
examples:
  htakl-deploy train-teacher --data fashion-mnist --epochs 10 --run-name fmnist-teacher
  htakl-deploy distill --data fashion-mnist --teacher runs/fmnist-teacher/teacher/last.pt

train-teacher offers the settings an ANN teacher's training depends on; its --epochs is the
teacher's (distill's and run's --teacher-epochs). The student's settings (method, timesteps,
neurons, losses) are distill's.
"""

HELP = {
    "data": "data set: digits (embedded default), fashion-mnist, cifar10, cifar100, image-folder",
    "data_root": "folder of the data set files (fashion-mnist default: /usr/share/datasets/fashion-mnist)",
    "limit_train": "use only N training images, every class in proportion (quick runs)",
    "limit_test": "evaluate on N test images, every class in proportion (default: the whole test split)",
    "encoding": "input encoding: direct (analog pixels repeated over T, default) or poisson",
    "model": "architecture: convnet (default), resnet19, resnet20, vgg16",
    "timesteps": "simulation timesteps T (paper: 1, 2, 4, 6; default 4)",
    "neuron_tau": "LIF membrane time constant τ (default 2.0)",
    "v_threshold": "LIF firing threshold (default 1.0)",
    "method": "distillation method: ce, kd, rkl, fixed, hta-kl (default), ckdsnn, seal, kdsnn, lasnn, bkdsnn",
    "temperature": "softmax temperature τ of the distillation terms (default 4)",
    "alpha": "weight α of the distillation term; CE gets 1-α (default 0.9)",
    "delta": "HTA-KL head threshold δ (default 0.5)",
    "head_weight": "`fixed` method: static FKL weight; RKL gets 1-w (default 0.5)",
    "tau_squared": "multiply distillation terms by τ² (default on)",
    "student_average": "student distribution over time: logits (mean logits, default) or probs",
    "nld_lambda": "ckdsnn: weight λ of the adaptive Gaussian noise added to the student logits (default 0.1)",
    "nld_temperature": "ckdsnn: temperature τ of the noise-smoothed logit KL, NLD (default 2)",
    "samd_temperature": "ckdsnn: temperature 𝒯 of the activation-map softmax, SAMD (default 2)",
    "ckdsnn_beta": "ckdsnn: weight β of SAMD; loss = CE + β·SAMD + γ·NLD (default 1)",
    "ckdsnn_gamma": "ckdsnn: weight γ of NLD (default 1)",
    "samd_cam_class": "ckdsnn: class of the teacher's Grad-CAM: label (default) or pred (teacher's prediction)",
    "seal_alpha": "seal: weight α of ELA; loss = per-step CE + α·ELA + β·STA (default 0.6)",
    "seal_beta": "seal: weight β of STA (default 0.15)",
    "seal_temperature": "seal: softmax temperature τ of ELA and STA (default 1; the seed gives none)",
    "seal_sta_detach": "seal: STA weights and source timesteps as constants (default on)",
    "kdsnn_feature_weight": "kdsnn: weight of the feature-map MSE added to the kd loss (default 1)",
    "kdsnn_stage": "kdsnn: feature stage for the MSE: last (default) or a stage name, e.g. stage1",
    "lasnn_beta": "lasnn: weight β of the attention-map distance; loss = kd + β/2·Σ_stages (default 100)",
    "lasnn_p": "lasnn: power p of the attention map mean_c |F|^p (default 2)",
    "bkdsnn_alpha": "bkdsnn: weight α of the blurred-feature distance added to the kd loss (default 2e-3)",
    "bkdsnn_mask_ratio": "bkdsnn: share λ of the student's feature channels masked out per sample (default 0.15)",
    "bkdsnn_stage": "bkdsnn: feature stage distilled: last (default) or a stage name, e.g. stage1",
    "epochs": "training epochs of the student (default depends on the data set)",
    "batch_size": "global batch size, split over torchrun processes (default 128)",
    "lr": "SGD learning rate (default 0.01)",
    "momentum": "SGD momentum (default 0.9)",
    "weight_decay": "SGD weight decay (default 5e-4)",
    "schedule": "learning-rate schedule: cosine (default) or constant",
    "teacher": "teacher checkpoint (or run directory); without it a teacher is trained first",
    "teacher_epochs": "epochs when training the teacher here (default depends on the data set)",
    "seed": "random seed of initialisation, data order and augmentation (default 0)",
    "deterministic": "deterministic algorithms: exact resume and repeatable runs (default on)",
    "device": "where the model trains: cpu (default), cuda, cuda:N, or auto (cuda if torch sees one); "
              "under torchrun, cuda means one GPU per process (cuda:LOCAL_RANK)",
    "out_dir": "folder that holds run directories (default runs)",
    "run_name": "name of this run's directory (default: data-model-method-T-seed-time)",
    "checkpoint_every": "also write last.pt every N optimizer steps (default 0: once per epoch)",
    "progress": "progress bars and per-epoch lines (default on)",
    "checkpoint_activations": "keep only each block's input during training and recompute its inside in the "
                              "backward pass (less memory, ~1.3x step time; same loss and gradients)",
}


class Refuse(argparse.Action):
    """A flag a subcommand does not offer (hidden from its ``--help``), given anyway: the usual
    one-line error, saying where the flag belongs (``hint``)."""

    def __init__(self, option_strings, dest, hint: str, **kwargs):
        super().__init__(option_strings, dest, nargs="?", help=argparse.SUPPRESS, **kwargs)
        self.hint = hint

    def __call__(self, parser, namespace, values, option_string=None):
        parser.error(self.hint.format(flag=option_string))


def _add_config_flags(parser, with_config: bool = True, teacher: bool = False) -> None:
    """One flag per ``DistillConfig`` field. For ``train-teacher`` (``teacher``): only
    ``TEACHER_FIELDS``, its ``--epochs`` setting ``teacher_epochs``; the student's flags and
    ``--teacher-epochs`` are refused with a hint, and not listed by ``--help``."""
    for f in fields(DistillConfig):
        kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
        common = {"dest": f.name, "default": None}
        flag, text = "--" + f.name.replace("_", "-"), HELP[f.name]
        if teacher and f.name == "epochs":
            continue  # train-teacher's --epochs is the teacher's (below)
        if teacher and f.name not in TEACHER_FIELDS:
            flags = [flag] + (["--no-" + flag[2:]] if kind == "bool" else [])
            parser.add_argument(*flags, action=Refuse, hint="{flag} is a setting of the student's training "
                                "(`htakl-deploy distill`, `run`); train-teacher trains only the ANN teacher", **common)
            continue
        if teacher and f.name == "teacher_epochs":
            parser.add_argument(flag, action=Refuse, dest="_teacher_epochs", hint="{flag} is distill's and run's "
                                "spelling; here the teacher's epochs are set with --epochs")
            flag, text = "--epochs", "training epochs of the teacher (default depends on the data set)"
        if kind == "bool":
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, help=text, **common)
        elif kind.startswith("int"):
            parser.add_argument(flag, type=int, metavar="N", help=text, **common)
        elif kind.startswith("float"):
            parser.add_argument(flag, type=float, metavar="X", help=text, **common)
        else:
            parser.add_argument(flag, type=str, help=text, **common)
    if with_config:
        parser.add_argument("--config", metavar="FILE", help="TOML or YAML file of settings (flags override it)")


def register(sub: argparse._SubParsersAction) -> None:
    for name, teacher_only, examples, summary in (
        ("distill", False, DISTILL_EXAMPLES, "train an SNN student from an ANN teacher (HTA-KL and baselines)"),
        ("train-teacher", True, TEACHER_EXAMPLES, "train only the ANN teacher (the student's ReLU twin)"),
    ):
        p = sub.add_parser(
            name, help=summary, description=summary, epilog=examples,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        _add_config_flags(p, teacher=teacher_only)
        p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run with its saved config")
        add_json_flags(p, "the run's summary")
        p.set_defaults(handler=run_command, teacher_only=teacher_only)


#: settings that do not change what is trained, so ``--resume`` accepts them (a GPU run may be
#: continued on CPUs and the other way round)
RESUME_MAY_CHANGE = ("progress", "device")


def set_determinism(on: bool, device) -> None:
    """Repeatable runs. On CPU, PyTorch's kernels are deterministic for a fixed thread count, and
    ``torch.use_deterministic_algorithms`` makes convolutions ~40x slower here (measured), so it
    is only switched on for CUDA; the exact-resume test checks the CPU claim bitwise."""
    if on and device.type == "cuda":
        import torch

        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS refuses determinism without it
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False


def config_from_args(args: argparse.Namespace) -> DistillConfig | None:
    """The config from defaults ← ``--config`` file ← flags; ``None`` with ``--resume`` (the saved
    config decides, and no other setting may be given)."""
    from htakl_deploy.errors import UserError

    flag_values = {f.name: getattr(args, f.name, None) for f in fields(DistillConfig)}
    if args.resume:
        given = [k for k, v in flag_values.items() if v is not None and k not in RESUME_MAY_CHANGE]
        if given or args.config:
            names = ", ".join("--" + k.replace("_", "-") for k in given) or "--config"
            raise UserError(f"--resume continues a run with its saved config; drop {names}")
        return None
    return build_config(read_config_file(args.config) if args.config else {}, flag_values,
                        source=f"--config: {args.config}")


def resumed_config(args: argparse.Namespace) -> tuple[DistillConfig, bool]:
    """``--resume RUN_DIR``: the run's saved config (and whether it trains only a teacher), with
    the flags of ``RESUME_MAY_CHANGE`` that were given applied."""
    from htakl_deploy.distill import recipe

    cfg, teacher_only = recipe.read_run(args.resume)
    return cfg.replace(**{k: getattr(args, k) for k in RESUME_MAY_CHANGE if getattr(args, k, None) is not None}), teacher_only


def run_command(args: argparse.Namespace) -> int:
    from htakl_deploy.distill import dist, recipe
    from htakl_deploy.distill.device import device_for

    check_json_out(args)
    cfg = config_from_args(args)
    if cfg is not None and args.teacher_only:
        cfg = cfg.replace(method="ce")

    teacher_only, resume_dir = args.teacher_only, None
    if cfg is None:
        (cfg, teacher_only), resume_dir = resumed_config(args), args.resume
    device = device_for(cfg.device)  # before the process group: CUDA runs add an NCCL backend
    env = dist.init_from_env(device)
    try:
        set_determinism(cfg.deterministic, device)
        summary = recipe.run(cfg, env, teacher_only=teacher_only, resume_dir=resume_dir)
    finally:
        dist.shutdown(env)
    if env.is_main:
        emit(summary, args, summary_lines(summary))
    return 0


def summary_lines(summary: dict) -> list[str]:
    """The human summary of a ``distill``/``train-teacher`` result (``--json`` prints it whole)."""
    lines = [f"run: {summary['run_dir']} ({summary['data']}, {summary['model']}, {summary['device']}, "
             f"{summary['wall_s']:.1f} s)"]
    if "train_samples" in summary:
        lines.append(f"data: {summary['train_samples']} training images (batch {summary['batch_size']}), "
                     f"{summary['test_samples']} test images")
    for role in ("teacher", "student"):
        stage = summary.get(role)
        if stage is None:
            continue
        if "epoch" not in stage:  # a given teacher checkpoint
            lines.append(f"{role}: {stage.get('checkpoint')} (given)")
            continue
        what = f"method {stage['method']}, T={stage['timesteps']}" if role == "student" else "ANN"
        lines.append(f"{role} ({what}): test accuracy {pct(stage.get('test_acc'), summary.get('test_samples'))}, best "
                     f"{pct(stage.get('best_test_acc'))} after {stage['epoch']} epoch{'s' * (stage['epoch'] != 1)}; checkpoint {stage['best']}")
    return lines
