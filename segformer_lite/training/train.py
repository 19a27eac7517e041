"""Train a SegFormer on the synthetic shapes: ``segformer-lite train --help``.

``--task`` picks the shapes' law (``context``, the default and the shipped checkpoint's task: only
a shape's outline tells its class; ``hints``: colour and texture hint at it, see ``data.py``), ``--model`` the
network: SegFormer, or a local baseline (``pixel-mlp``, ``local-cnn``, see ``baselines.py``)
trained by the same loop, loss and schedule.

Runs as one process, or unchanged under ``torchrun --nproc_per_node=2`` (DDP over gloo on
CPU: each process draws its own images, gradients are averaged, and the decoder's BatchNorm
takes its statistics over the global batch, as the official code's SyncBN does; see
``distributed.py``). Without dropout, two processes of batch ``b`` train the same weights as
one process of batch ``2b``.

Optimiser as in the official SegFormer config: AdamW, weight decay 0.01, parameter groups as its
``paramwise_cfg`` (decode head at 10x the learning rate, LayerNorms without weight decay; see
:func:`param_groups`), "poly" learning-rate decay ``lr * (1 - step / steps) ** 1.0``. The paper
fine-tunes an ImageNet-pretrained encoder with lr 6e-5 for 160k steps; we start from random
weights and have minutes, so the default lr is higher (1.5e-3) with a short linear warm-up,
which is what makes a from-scratch run converge fast.

Training image ``k`` of step ``s`` on rank ``r`` is item ``(s * world + r) * batch + k`` of
``SyntheticShapes(seed)``: the data are a function of the step, so a resumed run sees exactly
the images an uninterrupted run would have seen.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from ..config import VARIANTS, mit_config
from .baselines import BASELINES
from .data import CLASSES, TASKS, SyntheticShapes
from .distributed import sync_batchnorm
from ..checkpoint import atomic_write, why_unreadable
from ..decoder import SegFormer
from .evaluate import evaluate_model, mean_iou
from .model_files import save_model

__all__ = ["Recipe", "poly_lr", "param_groups", "train_step", "train", "main", "save_state", "load_state",
           "parse_args", "build_parser", "OFFICIAL_PARAMWISE"]

# The official config's paramwise_cfg custom_keys, matched as mmcv does: a key applies to every
# parameter whose full name contains it, the longest key first (ties alphabetical), first match
# wins; so the decode head's BatchNorm gets the head's 10x lr and keeps its weight decay. (The
# official dict also has 'pos_block': decay 0, a key that names no MiT parameter.)
OFFICIAL_PARAMWISE = {"head": {"lr_mult": 10.0}, "norm": {"decay_mult": 0.0}}


@dataclasses.dataclass(frozen=True)
class Recipe:
    """What one training run's schedule needs, ``train_step``'s and the command's alike. The defaults
    are the context recipe the experiments train every design with; the command's own defaults
    (``--help``) are the shipped checkpoint's run."""

    steps: int = 1500
    batch_size: int = 16  # images per step, per process
    lr: float = 2e-3  # peak learning rate
    warmup: int = 200  # linear warm-up steps, then poly decay to 0 at ``steps``
    weight_decay: float = 0.01
    image_size: int = 64

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Recipe:
        """The recipe the command line :func:`parse_args` parsed asks for."""
        return cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cls)})


def poly_lr(step: int, steps: int, lr: float, warmup: int, power: float = 1.0) -> float:
    """Linear warm-up for ``warmup`` steps, then SegFormer's poly decay to 0 at ``steps``."""
    if step < warmup:
        return lr * (step + 1) / warmup
    return lr * (1.0 - (step - warmup) / max(1, steps - warmup)) ** power


def param_groups(model: torch.nn.Module, weight_decay: float, paramwise: dict | None = None) -> list[dict]:
    """AdamW parameter groups: ``paramwise`` maps a name fragment to ``lr_mult`` / ``decay_mult``
    (mmcv's ``custom_keys``, default :data:`OFFICIAL_PARAMWISE`); every group carries its
    ``lr_mult`` so the schedule can scale it. ``{}`` gives one group, every parameter decayed."""
    paramwise = OFFICIAL_PARAMWISE if paramwise is None else paramwise
    keys = sorted(sorted(paramwise), key=len, reverse=True)  # mmcv's order: longest first, then a-z
    groups: dict[tuple[float, float], list] = {}
    for name, p in model.named_parameters():
        rule = next((paramwise[k] for k in keys if k in name), {})
        mults = (rule.get("lr_mult", 1.0), rule.get("decay_mult", 1.0))
        groups.setdefault(mults, []).append(p)
    return [{"params": ps, "lr_mult": lr_mult, "weight_decay": weight_decay * decay_mult}
            for (lr_mult, decay_mult), ps in groups.items()]


def train_step(net: torch.nn.Module, opt: torch.optim.Optimizer, data: SyntheticShapes, step: int,
               recipe: Recipe, rank: int = 0, world: int = 1) -> torch.Tensor:
    """One optimizer step of ``recipe``'s schedule on this rank's images of ``step``; returns the loss."""
    for group in opt.param_groups:
        group["lr"] = group["lr_mult"] * poly_lr(step, recipe.steps, recipe.lr, recipe.warmup)
    first = (step * world + rank) * recipe.batch_size
    images, labels = data.batch(range(first, first + recipe.batch_size))
    net.train()
    loss, _ = net(images, labels)  # on logits upsampled to the labels, as transformers does
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss


def save_state(state: dict, path) -> None:
    """``torch.save`` the training state atomically (see :func:`~segformer_lite.checkpoint.atomic_write`)."""
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_state(path) -> dict:
    """A training state written by :func:`save_state` (loaded with ``weights_only=True``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no training state at {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch's diagnosis only, without its advice (see why_unreadable)
        raise ValueError(f"{path} is not a readable training state ({type(e).__name__}: "
                         f"{why_unreadable(e)})") from None
    missing = {"model", "optimizer", "step", "args", "rng"} - set(state if isinstance(state, dict) else ())
    if missing:
        raise ValueError(f"{path} is not a segformer_lite training state (missing {sorted(missing)})")
    return state


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``segformer-lite train``; every option shows its default once."""
    p = argparse.ArgumentParser(prog="segformer-lite train", description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--task", default="context", choices=TASKS,
                   help="context: only a shape's outline tells its class (the shipped checkpoint's task); "
                        "hints: colour and texture hint at the class")
    p.add_argument("--model", default="segformer", choices=("segformer", *BASELINES),
                   help="segformer, or a local baseline: pixel-mlp (1x1 convs), local-cnn (receptive field 7 px)")
    p.add_argument("--variant", default="b0", choices=list(VARIANTS), help="MiT encoder widths/depths (segformer)")
    p.add_argument("--decoder-dim", type=int, default=128, help="all-MLP decoder width (segformer)")
    p.add_argument("--image-size", type=int, default=64, help="side of the square training images in pixels")
    p.add_argument("--steps", type=int, default=3000, help="optimizer steps (the shipped checkpoint's run)")
    p.add_argument("--batch-size", type=int, default=8, help="images per step, per process")
    p.add_argument("--lr", type=float, default=1.5e-3, help="peak learning rate (the decode head's is "
                                                               "10x with --param-groups official)")
    p.add_argument("--warmup", type=int, default=100, help="linear warm-up steps")
    p.add_argument("--weight-decay", type=float, default=0.01, help="AdamW weight decay")
    p.add_argument("--param-groups", choices=("official", "none"), default="official",
                   help="official: decode head at 10x lr, LayerNorms without weight decay, as the "
                        "official config; none: one group, every parameter decayed")
    p.add_argument("--dropout", type=float, default=0.1, help="decoder dropout before the classifier (segformer)")
    p.add_argument("--drop-path", type=float, default=0.1, help="encoder stochastic-depth rate, last block (segformer)")
    p.add_argument("--seed", type=int, default=0, help="model init and training images")
    p.add_argument("--output", type=Path, default=Path("runs/segformer_shapes.safetensors"),
                   help="weights (safetensors); the resumable state goes to OUTPUT.state.pt")
    p.add_argument("--resume", action="store_true", help="continue from OUTPUT.state.pt if it exists")
    p.add_argument("--eval-every", type=int, default=250, help="steps between evaluations (0: only at the end)")
    p.add_argument("--eval-images", type=int, default=100, help="held-out images per evaluation")
    p.add_argument("--eval-seed", type=int, default=1000, help="held-out images: never a training seed")
    p.add_argument("--stop-at-miou", type=float, default=None, help="stop early once eval mIoU reaches this")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads per process (0: torch's choice)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--rank-weights", action="store_true",
                   help="every process also writes its final weights to OUTPUT with .rank<r> before "
                        "the suffix (to check that DDP keeps the processes identical)")
    return p


def parse_args(argv=None) -> argparse.Namespace:
    p = build_parser()
    args = p.parse_args(argv)
    for name in ("dropout", "drop_path"):
        if not 0.0 <= getattr(args, name) < 1.0:
            p.error(f"--{name.replace('_', '-')} must be in [0, 1), got {getattr(args, name)}")
    if args.eval_seed == args.seed:
        p.error(f"--eval-seed must differ from --seed (both {args.seed}): evaluate on unseen images")
    for name in ("steps", "batch_size", "image_size", "decoder_dim", "eval_images"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.threads < 0:
        p.error(f"--threads must be >= 0, got {args.threads}")
    return args


def train(args: argparse.Namespace) -> dict:
    """Run training as configured by :func:`parse_args`; returns the last evaluation."""
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if distributed:
        dist.init_process_group("gloo")
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    if args.threads:
        torch.set_num_threads(args.threads)
    state_path = args.output.with_name(args.output.name + ".state.pt")
    recipe = Recipe.from_args(args)

    torch.manual_seed(args.seed)  # same init on every rank (DDP also broadcasts rank 0's weights)
    if args.model == "segformer":
        config = dataclasses.replace(mit_config(args.variant), drop_path_rate=args.drop_path)
        model = SegFormer(config, len(CLASSES), args.decoder_dim, args.dropout)
        name = f"SegFormer (MiT-{args.variant.upper()}, decoder {args.decoder_dim})"
    else:
        model = BASELINES[args.model](len(CLASSES))
        name = f"{type(model).__name__} ({args.model}, width {model.width})"
    if distributed:
        sync_batchnorm(model)
    groups = param_groups(model, args.weight_decay, None if args.param_groups == "official" else {})
    opt = torch.optim.AdamW(groups, lr=args.lr)
    say = print if rank == 0 else lambda *a: None
    start, history = 0, []
    if args.resume and state_path.is_file():
        state = load_state(state_path)
        for key, unrecorded in (("model", "segformer"), ("task", "hints")):  # a state without the key ran these
            was = state["args"].get(key, unrecorded)
            if was != getattr(args, key):
                raise ValueError(f"{state_path} is a run with --{key} {was}, not {getattr(args, key)}: "
                                 "pass the same option, or another --output")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        start, history = state["step"], list(state.get("history", []))
        torch.set_rng_state(state["rng"][rank] if rank < len(state["rng"]) else state["rng"][0])
        say(f"resuming from {state_path} at step {start}")
    else:
        if args.resume:
            say(f"--resume: no training state at {state_path}, so starting from scratch")
        torch.manual_seed(args.seed + rank)  # dropout / drop-path differ per rank
    say(f"training {name} on the {args.task} task for {args.steps} steps "
        f"of {world} x {args.batch_size} images of {args.image_size} px, {torch.get_num_threads()} thread(s) "
        f"per process; weights -> {args.output}, resumable state -> {state_path}")
    net = torch.nn.parallel.DistributedDataParallel(model) if distributed else model
    data = SyntheticShapes(args.steps * args.batch_size * world, args.image_size, args.seed, args.task)
    held_out = SyntheticShapes(args.eval_images, args.image_size, args.eval_seed, args.task)

    saved = None  # the step whose weights this run wrote

    def checkpoint(step: int) -> None:
        nonlocal saved
        saved = step
        rngs = [torch.get_rng_state()]
        if distributed:  # every rank's dropout RNG, so a resumed DDP run continues exactly
            rngs = [torch.empty_like(rngs[0]) for _ in range(world)]
            dist.all_gather(rngs, torch.get_rng_state())
        if rank == 0:
            save_state({"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step,
                        "args": {k: str(v) for k, v in vars(args).items()}, "rng": rngs,
                        "history": history}, state_path)
            save_model(model, args.output, args.task)

    result = history[-1] if history else {}
    bar = tqdm(range(start, args.steps), initial=start, total=args.steps, desc="train",
               disable=rank != 0 or args.quiet, file=sys.stdout, dynamic_ncols=True)
    t0 = time.perf_counter()
    for step in bar:
        loss = train_step(net, opt, data, step, recipe, rank, world)
        bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
        done = step + 1
        if done == args.steps or (args.eval_every and done % args.eval_every == 0):
            if rank == 0:
                ious = evaluate_model(model, held_out, progress=False)
                result = {"step": done, "miou": mean_iou(ious), "seconds": time.perf_counter() - t0,
                          "loss": float(loss.item())}
                history.append(result)
                bar.write(f"step {done}: loss {loss.item():.4f}  held-out mIoU {result['miou']:.4f}  "
                          f"({result['seconds']:.0f} s)")
            stop = torch.tensor([float(rank == 0 and args.stop_at_miou is not None
                                       and result.get("miou", 0.0) >= args.stop_at_miou)])
            if distributed:
                dist.broadcast(stop, 0)
            checkpoint(done)
            if stop.item():
                bar.write(f"reached mIoU >= {args.stop_at_miou} at step {done}; stopping")
                break
    bar.close()
    if saved is None:
        say(f"nothing to do: {state_path} is at step {start} of {args.steps}")
    else:
        say(f"wrote the weights of step {saved} to {args.output} (resumable state: {state_path})")
    if args.rank_weights:
        save_model(model, args.output.with_name(f"{args.output.stem}.rank{rank}{args.output.suffix}"), args.task)
    if distributed:
        dist.barrier()  # no rank tears gloo down while another is still at work (it can abort)
        dist.destroy_process_group()
    return result


def main(argv=None) -> None:
    args = parse_args(argv)
    try:
        train(args)
    except (OSError, ValueError) as e:  # expected failures (unreadable state, unwritable output): one line
        build_parser().exit(2, f"segformer-lite train: error: {e}\n")


if __name__ == "__main__":
    main()
