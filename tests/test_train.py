"""Training and evaluation CLIs: schedule, atomic writes, exact resume, DDP, clear errors."""
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import segformer_lite as sl
from segformer_lite.training.data import CLASSES, SyntheticShapes
from segformer_lite.training import evaluate, train
from segformer_lite.checkpoint import load_segformer, save_segformer
from segformer_lite.training.model_files import load_model
from hf_reference import free_port

# a tiny run: B0 widths at the smallest image B0 takes, a narrow decoder
TINY = ["--image-size", "32", "--batch-size", "2", "--decoder-dim", "16", "--eval-images", "2",
        "--warmup", "1", "--quiet", "--threads", "1"]


def test_poly_schedule_by_hand():
    assert train.poly_lr(0, 100, 1e-3, warmup=10) == pytest.approx(1e-4)
    assert train.poly_lr(9, 100, 1e-3, warmup=10) == pytest.approx(1e-3)
    assert train.poly_lr(10, 100, 1e-3, warmup=10) == pytest.approx(1e-3)
    assert train.poly_lr(55, 100, 1e-3, warmup=10) == pytest.approx(0.5e-3)  # halfway after warm-up
    assert train.poly_lr(100, 100, 1e-3, warmup=10) == pytest.approx(0.0)


def test_save_state_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "state.pt"
    train.save_state({"step": 1}, path)

    def crash(obj, f):  # write half a file, then die, as a killed process would
        Path(f).write_bytes(b"PK\x03\x04 half a zip")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        train.save_state({"step": 2}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True) == {"step": 1}  # the previous state survives
    assert [p.name for p in tmp_path.iterdir()] == ["state.pt"]  # and no temporary is left


def test_save_segformer_is_atomic(tiny_segformer, tmp_path, monkeypatch):
    import safetensors.torch

    model = tiny_segformer(4)
    path = save_segformer(model, tmp_path / "w.safetensors")
    before = path.read_bytes()

    def crash(sd, filename, metadata=None):
        Path(filename).write_bytes(b"\x10\x00 garbage")
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", crash)
    with pytest.raises(OSError, match="disk full"):
        save_segformer(model, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["w.safetensors"]


def _run(tmp_path, *extra):
    return train.train(train.parse_args(TINY + ["--output", str(tmp_path / "w.safetensors"), *extra]))


def test_resume_equals_uninterrupted_run(tiny_segformer, tmp_path, capsys):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    _run(straight, "--steps", "4", "--eval-every", "2", "--seed", "3")
    # stop after the checkpoint at step 2 (mIoU >= 0 always holds), then resume to step 4;
    # the first run asks to resume with no state yet: it says so and starts from scratch
    capsys.readouterr()
    first = _run(resumed, "--steps", "4", "--eval-every", "2", "--seed", "3", "--stop-at-miou", "0", "--resume")
    out = capsys.readouterr().out
    weights, state_file = resumed / "w.safetensors", resumed / "w.safetensors.state.pt"
    assert f"--resume: no training state at {state_file}, so starting from scratch" in out
    assert f"for 4 steps of 1 x 2 images of 32 px, 1 thread(s) per process; weights -> {weights}" in out
    assert f"wrote the weights of step 2 to {weights} (resumable state: {state_file})" in out
    assert first["step"] == 2
    state = train.load_state(state_file)
    assert state["step"] == 2 and state["optimizer"]["state"][0]["step"].item() == 2
    last = _run(resumed, "--steps", "4", "--eval-every", "2", "--seed", "3", "--resume")
    out = capsys.readouterr().out
    assert f"resuming from {state_file} at step 2" in out and "from scratch" not in out
    assert f"wrote the weights of step 4 to {weights}" in out
    assert last["step"] == 4
    # the schedule scales every group: the head's lr is 10x the encoder's at every step
    lrs = sorted(g["lr"] for g in train.load_state(state_file)["optimizer"]["param_groups"])
    assert lrs[-1] == pytest.approx(10 * lrs[0]) and lrs[0] > 0
    a, b = (load_segformer(d / "w.safetensors").state_dict() for d in (straight, resumed))
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)
    assert not torch.equal(a["decode_head.classifier.weight"],
                           tiny_segformer(4).state_dict()["decode_head.classifier.weight"])


def test_official_parameter_groups(tiny_segformer):
    """As the official config's paramwise_cfg: decode head (its BatchNorm included) at 10x lr with
    weight decay, every encoder LayerNorm without decay, everything else plain. Checked by module
    type, independently of the name matching the groups are built with."""
    model = tiny_segformer(4)
    groups = train.param_groups(model, weight_decay=0.01)
    got = {id(p): (g["lr_mult"], g["weight_decay"]) for g in groups for p in g["params"]}
    assert sum(len(g["params"]) for g in groups) == len(got) == len(list(model.parameters()))
    expected, counts = {}, {"head": 0, "norm": 0, "rest": 0}
    for name, module in model.named_modules():
        for p in module.parameters(recurse=False):
            kind = ("head" if name.startswith("decode_head.") else
                    "norm" if isinstance(module, torch.nn.LayerNorm) else "rest")
            counts[kind] += 1
            expected[id(p)] = {"head": (10.0, 0.01), "norm": (1.0, 0.0), "rest": (1.0, 0.01)}[kind]
    assert got == expected
    # B0: 8 blocks x (norm1, norm2) + 6 sequence-reduction norms (stage 4 has sr 1, none) + 4
    # patch-embedding norms + 4 stage norms, weight and bias each; the head: 4 Linear + fuse conv
    # + BatchNorm + classifier
    assert counts["norm"] == 2 * (8 * 2 + 6 + 4 + 4) and counts["head"] == 8 + 1 + 2 + 2
    one = train.param_groups(model, 0.01, paramwise={})  # --param-groups none
    assert len(one) == 1 and one[0]["weight_decay"] == 0.01 and one[0]["lr_mult"] == 1.0


def test_training_lowers_the_held_out_loss(tiny_segformer, tmp_path):
    _run(tmp_path, "--task", "hints", "--steps", "30", "--eval-every", "15", "--lr", "2e-3", "--seed", "0")
    state = train.load_state(tmp_path / "w.safetensors.state.pt")
    assert [h["step"] for h in state["history"]] == [15, 30]
    torch.manual_seed(0)  # the initial weights, as train() draws them
    before = tiny_segformer(len(CLASSES)).eval()
    after = load_segformer(tmp_path / "w.safetensors")
    images, labels = SyntheticShapes(16, 32, seed=77).batch(range(16))

    def loss(model):
        with torch.no_grad():
            logits = torch.nn.functional.interpolate(model(images), size=(32, 32), mode="bilinear")
        return torch.nn.functional.cross_entropy(logits, labels).item()

    assert loss(after) < 0.85 * loss(before)  # measured: 1.43 -> 1.05


def test_bad_cli_arguments(tmp_path, capsys):
    with pytest.raises(SystemExit):
        train.parse_args(["--seed", "5", "--eval-seed", "5"])
    with pytest.raises(SystemExit):
        train.parse_args(["--steps", "0"])
    with pytest.raises(SystemExit):
        train.parse_args(["--drop-path", "1"])
    corrupt = tmp_path / "w.safetensors.state.pt"
    corrupt.write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="not a readable training state"):
        _run(tmp_path, "--steps", "2", "--resume")
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:  # the command: one line, no traceback, status 2
        train.main(TINY + ["--output", str(tmp_path / "w.safetensors"), "--steps", "2", "--resume"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1 and "not a readable training state" in err
    assert "weights_only" not in err  # torch's unsafe advice is dropped
    with pytest.raises(FileNotFoundError):
        train.load_state(tmp_path / "nothing.pt")


def _torchrun(out, *args):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--nnodes=1",
           "--master_addr=127.0.0.1", f"--master_port={free_port()}",
           "-m", "segformer_lite", "train", *TINY, "--output", str(out), *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=280, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_torchrun_two_processes_ddp(tmp_path):
    out = tmp_path / "w.safetensors"
    _torchrun(out, "--steps", "3", "--eval-every", "3")
    state = train.load_state(out.with_name(out.name + ".state.pt"))
    assert state["step"] == 3
    assert len(state["rng"]) == 2  # both ranks' RNG states, gathered over gloo
    assert not torch.equal(state["rng"][0], state["rng"][1])
    assert load_segformer(out).num_classes == len(CLASSES)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_ddp_two_processes_equal_one_process_on_the_global_batch(tiny_segformer, tmp_path):
    # Without dropout/drop-path (their masks are drawn per process) training is deterministic, and
    # at step s rank r reads items (2s + r) * 2 and the next: the two ranks' batches of 2 together
    # are the batch of 4 one process reads. With DDP averaging the gradients and the decoder's
    # BatchNorm taking its statistics over both ranks (distributed.SyncBatchNorm2d), both runs
    # compute the same updates up to float summation order.
    run = ["--steps", "4", "--eval-every", "0", "--seed", "5", "--dropout", "0", "--drop-path", "0"]
    ddp, single = tmp_path / "ddp" / "w.safetensors", tmp_path / "single" / "w.safetensors"
    _torchrun(ddp, *run, "--rank-weights")
    train.train(train.parse_args(TINY + ["--output", str(single), *run, "--batch-size", "4"]))

    rank0, rank1 = (load_segformer(ddp.with_name(f"w.rank{r}.safetensors")) for r in (0, 1))
    for key, value in rank0.state_dict().items():  # all-reduced: the ranks agree to the last bit
        torch.testing.assert_close(value, rank1.state_dict()[key], rtol=0, atol=0, msg=key)
    # Compare what the weights compute, not the weights: where a gradient is zero up to rounding
    # (the per-stage Linear biases, which the fuse BatchNorm cancels exactly; near-uniform
    # attention's q), Adam's normalised first step turns that rounding into a +-lr step, so such
    # weights differ by ~1e-3 while not changing the output. Forward in training mode (batch
    # statistics, as in training) with dropout off.
    one = load_segformer(single)
    torch.manual_seed(5)  # the initial weights, as train() draws them
    init = tiny_segformer(len(CLASSES), dropout=0.0)
    images, _ = SyntheticShapes(16, 32, seed=77).batch(range(16))
    logits = []
    for model in (rank0, one, init):
        model.decode_head.dropout.p = 0.0
        with torch.no_grad():
            logits.append(model.train()(images))
    # measured: max |ddp - single| 9e-6 while training moved the logits by 2.2; without
    # SyncBatchNorm2d the gap is 0.93, with each rank training alone (no DDP) 1.7
    torch.testing.assert_close(logits[0], logits[1], rtol=0, atol=1e-4)
    assert (logits[1] - logits[2]).abs().max() > 1.0


def _printed_ious(text):
    """{class: IoU} and the mIoU from evaluate's printout (``IoU <class> <x>`` lines, ``mIoU <x>``)."""
    lines = [line.split() for line in text.strip().splitlines()]
    assert [line[0] for line in lines] == ["IoU"] * len(CLASSES) + ["mIoU"], text
    return {name: float(x) for _, name, x in lines[:-1]}, float(lines[-1][1])


def _numpy_ious(pred, labels, k):
    """IoU per class counted with numpy masks: |pred == c and label == c| / |pred == c or label == c|."""
    pred, labels = np.asarray(pred), np.asarray(labels)
    return np.array([((pred == c) & (labels == c)).sum() / ((pred == c) | (labels == c)).sum() for c in range(k)])


def test_evaluate_cli_prints_per_class_iou_and_miou(capsys, one_thread):
    # the shipped checkpoint, so every class is predicted somewhere; 30 images = two batches of 25 and 5
    n, seed = 30, 9
    evaluate.main(["--images", str(n), "--seed", str(seed)])
    per_class, miou = _printed_ious(capsys.readouterr().out)
    assert list(per_class) == list(CLASSES)
    # independently: the model's logits, upsampled and argmaxed here, counted with numpy
    model = load_segformer(None).eval()
    images, labels = SyntheticShapes(n, 64, seed=seed, task="context").batch(range(n))  # the checkpoint's task
    with torch.no_grad():
        logits = torch.nn.functional.interpolate(model(images), size=(64, 64), mode="bilinear")
    expected = _numpy_ious(logits.argmax(1), labels, len(CLASSES))
    assert 0.5 < expected.min() < expected.max() < 1  # a real test: neither trivial nor perfect
    for (name, printed), want in zip(per_class.items(), expected):
        assert printed == pytest.approx(want, abs=0.5e-4), name  # printed to 4 decimals
    assert miou == pytest.approx(expected.mean(), abs=0.5e-4)


def _stated_evaluation():
    """From docs/results.md: the held-out images and seed ``segformer-lite evaluate``
    uses, and the printout it shows for the shipped checkpoint."""
    readme = (Path(__file__).resolve().parents[1] / "docs" / "results.md").read_text(encoding="utf-8")
    m = re.search(r"`(?:\.venv/bin/)?segformer-lite evaluate`\s*\((\d+) held-out images of seed (\d+)"
                  r".*?```\n(IoU .*?mIoU [0-9.]+)\n```", readme, re.S)
    assert m, "docs/results.md no longer shows the shipped checkpoint's evaluate printout"
    return int(m.group(1)), int(m.group(2)), m.group(3)


@pytest.mark.slow
def test_shipped_checkpoint_scores_what_the_results_state(one_thread):
    """The shipped checkpoint's IoUs equal docs/results.md's to its printed precision (half a unit in
    the last printed digit), on the images it names (200 of seed 2026): 3.5 s on one thread on
    the 2-core machine when quiet, 31 s beside the browser suite."""
    images, seed, stated = _stated_evaluation()
    want_classes, want_miou = _printed_ious(stated)
    tol = 0.5 * 10.0 ** -len(stated.split()[-1].split(".")[1])
    model, task = load_model()
    assert task == "context"
    ious = evaluate.evaluate_model(model, SyntheticShapes(images, 64, seed, task), progress=False)
    assert list(want_classes) == list(CLASSES)
    for (name, want), got in zip(want_classes.items(), ious.tolist()):
        assert abs(got - want) <= tol, f"IoU {name}: {got:.6f}, docs/results.md states {want}"
    assert abs(ious.mean().item() - want_miou) <= tol, f"mIoU {ious.mean().item():.6f}, docs/results.md states {want_miou}"


def test_evaluate_cli_progress_on_stderr_quiet_silences_it(tiny_segformer, tmp_path, capsys):
    path = save_segformer(tiny_segformer(len(CLASSES)), tmp_path / "w.safetensors")
    miou = evaluate.main(["--checkpoint", str(path), "--images", "3", "--seed", "9"])
    captured = capsys.readouterr()
    lines = captured.out.strip().splitlines()
    assert [line.split()[1] for line in lines[:-1]] == list(CLASSES)
    assert lines[-1] == f"mIoU {miou:.4f}"
    assert "evaluate" in captured.err  # the progress bar, on stderr
    evaluate.main(["--checkpoint", str(path), "--images", "3", "--seed", "9", "--quiet"])
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("module", [train, evaluate])
def test_cli_help_documents_every_default_once(module, monkeypatch):
    monkeypatch.setenv("COLUMNS", "300")  # one line per option
    parser = module.build_parser()
    text = parser.format_help().split("options:")[1]
    # one entry per option, keyed by its flag, whitespace collapsed
    entries = {e.split()[0]: " ".join(e.split()) for e in re.split(r"\n  (?=-)", text) if e.strip()}
    for action in parser._actions:
        if action.dest == "help":
            continue
        entry = entries[action.option_strings[0]]
        assert entry.count("default") == 1, entry
        assert f"(default: {action.default})" in entry, entry


def test_miou_skips_a_class_absent_from_labels_and_predictions():
    pred = torch.tensor([[0, 0, 1, 1], [3, 3, 0, 0]])
    target = torch.tensor([[0, 1, 1, 1], [0, 0, 0, 0]])
    # class 0: TP 3, FN 2 (labelled 0, predicted 3), FP 1 (labelled 1): IoU 3/6;  class 1: TP 2, FN 1: 2/3
    # class 2: in neither, no IoU;  class 3: predicted only (2 pixels), IoU 0, and it counts
    iou = evaluate.iou_per_class(evaluate.confusion_matrix(pred, target, 4))
    assert iou[2].isnan()
    torch.testing.assert_close(iou[[0, 1, 3]], torch.tensor([3 / 6, 2 / 3, 0.0], dtype=torch.float64))
    assert evaluate.mean_iou(iou) == pytest.approx((3 / 6 + 2 / 3 + 0.0) / 3)


def test_expected_cli_failures_are_one_line_with_exit_status_2(tmp_path):
    missing = tmp_path / "missing.safetensors"
    proc = subprocess.run([sys.executable, "-m", "segformer_lite", "evaluate", "--checkpoint", str(missing)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == f"segformer-lite evaluate: error: no SegFormer checkpoint at {missing}\n"


def test_iou_by_hand():
    pred = torch.tensor([[0, 0, 1, 1], [2, 2, 2, 0]])
    target = torch.tensor([[0, 1, 1, 1], [2, 2, 0, 0]])
    # class 0: TP 2, FN 1 (labelled 0, predicted 2), FP 1 (labelled 1, predicted 0): IoU 2/4
    # class 1: TP 2, FN 1, FP 0: 2/3;  class 2: TP 2, FN 0, FP 1: 2/3
    cm = evaluate.confusion_matrix(pred, target, 3)
    assert cm.tolist() == [[2, 0, 1], [1, 2, 0], [0, 0, 2]]
    iou = evaluate.iou_per_class(cm)
    torch.testing.assert_close(iou, torch.tensor([2 / 4, 2 / 3, 2 / 3], dtype=torch.float64))


def test_evaluate_bad_input(tiny_segformer, tmp_path, capsys):
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"garbage" * 10)
    with pytest.raises(SystemExit) as exit_:
        evaluate.main(["--checkpoint", str(corrupt)])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1 and "not a SegFormer checkpoint" in err
    wrong_k = tiny_segformer(7)
    with pytest.raises(ValueError, match="7 classes but the data set has 4"):
        evaluate.evaluate_model(wrong_k, SyntheticShapes(2, 64))
    model = tiny_segformer(4)
    with pytest.raises(ValueError, match="input channels"):
        model.predict(torch.rand(1, 64, 64, 3))  # channels last
    with pytest.raises(TypeError, match="SegFormer"):
        evaluate.evaluate_model(model.encoder, SyntheticShapes(2, 64))


def test_the_package_command_dispatches_and_exits_with_a_status(capsys):
    """``python -m segformer_lite COMMAND``: the command's own exit status (evaluate returns its mIoU,
    which is no status: 0), 2 for an unknown command, the list of commands without one."""
    from segformer_lite.__main__ import main

    assert main(["evaluate", "--images", "2", "--quiet"]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("mIoU ")
    assert main(["bogus"]) == 2 and "choose from train, evaluate, experiments, homework" in capsys.readouterr().err
    assert main([]) == 2 and "evaluate" in capsys.readouterr().out
