"""The context task and its local baselines: no class in a pixel, measured receptive fields,
the train -> evaluate round trip for the baselines."""
import json
import re

import numpy as np
import pytest
import torch
from safetensors import safe_open

import segformer_lite as sl
from segformer_lite.training.data import CLASSES, SyntheticShapes
from segformer_lite.training.model_files import load_model, save_model
from segformer_lite.training import evaluate, train
from segformer_lite.training.baselines import LocalCNN, PixelMLP, receptive_field
from segformer_lite.training.data import render_shapes


def _pixels(seed, n, task):
    """RGB ``(N, 3)`` and class ``(N,)`` of every pixel of ``n`` images."""
    images, labels = zip(*(render_shapes(seed, i, 64, task) for i in range(n)))
    return np.stack(images).reshape(-1, 3), np.stack(labels).reshape(-1)


def _colour_lookup_ious(task, bins=6, n=40):
    """The best rule on a single pixel's colour, learned from data: the most frequent class of
    each of bins**3 colour cells in ``n`` images of seed 100, scored on ``n`` images of seed 101."""
    cell = lambda x: (np.minimum((x * bins).astype(int), bins - 1) * [bins * bins, bins, 1]).sum(1)
    x, y = _pixels(100, n, task)
    counts = np.zeros((bins ** 3, len(CLASSES)))
    np.add.at(counts, (cell(x), y), 1)
    x, y = _pixels(101, n, task)
    pred = counts.argmax(1)[cell(x)]
    ious = [((pred == c) & (y == c)).sum() / ((pred == c) | (y == c)).sum() for c in range(len(CLASSES))]
    return np.array(ious), (y == 0).mean()


def test_context_pixels_carry_no_class_but_hints_pixels_do():
    # per-class mean colour over 40 images: one law for every class under "context"
    # (measured spread 0.09), a hue per class under "hints" (the control: 0.49)
    spread = {}
    for task in ("context", "hints"):
        x, y = _pixels(100, 40, task)
        means = np.stack([x[y == c].mean(0) for c in range(len(CLASSES))])  # (K, 3)
        spread[task] = np.abs(means[:, None] - means[None]).max()
    assert spread["context"] < 0.15 and spread["hints"] > 0.35, spread
    # a colour lookup table, the best any per-pixel rule can learn: on "context" it does about as
    # well as "background everywhere" (mIoU = background share / 4; measured 0.185), on "hints" 0.89
    ious, background = _colour_lookup_ious("context")
    assert ious.mean() < background / len(CLASSES) + 0.05 and ious[1:].max() < 0.2, ious
    assert _colour_lookup_ious("hints")[0].mean() > 0.8


def _reach(model, offset, size=21):
    """Whether a change of one input pixel ``offset`` columns right of the centre changes the
    centre output (finite difference, no autograd)."""
    torch.manual_seed(0)
    x = torch.rand(1, 3, size, size)
    y = x.clone()
    y[0, :, size // 2, size // 2 + offset] += 1.0
    with torch.no_grad():
        centre = lambda z: model(z)[0, :, size // 2, size // 2]
        return not torch.equal(centre(x), centre(y))


@pytest.mark.parametrize("model_class, side", [(PixelMLP, 1), (LocalCNN, 7)])
def test_receptive_field_is_measured(model_class, side):
    torch.manual_seed(0)
    model = model_class(4)
    half = side // 2
    assert all(_reach(model, d) for d in range(half + 1)) and not _reach(model, half + 1)
    assert receptive_field(model) == side


def test_baselines_have_segformers_loss_contract():
    torch.manual_seed(0)
    model = LocalCNN(4)
    images, labels = SyntheticShapes(2, 64, seed=3, task="context").batch(range(2))
    labels[0, :8] = 255  # ignored pixels
    loss, logits = model(images, labels)
    assert logits.shape == (2, 4, 64, 64) and torch.equal(model(images), logits)
    keep = labels != 255
    want = torch.nn.functional.cross_entropy(logits.permute(0, 2, 3, 1)[keep], labels[keep])
    torch.testing.assert_close(loss, want)
    with pytest.raises(TypeError, match="integer tensor"):
        model(images, labels.float())
    with pytest.raises(ValueError, match="num_classes must be a positive int"):
        PixelMLP(0)


@pytest.mark.parametrize("kind, model_class", [("pixel-mlp", PixelMLP), ("local-cnn", LocalCNN)])
def test_train_then_evaluate_a_baseline_on_the_context_task(kind, model_class, tmp_path, capsys, one_thread):
    path = tmp_path / f"{kind}.safetensors"
    train.main(["--task", "context", "--model", kind, "--steps", "2", "--batch-size", "2",
                "--eval-images", "2", "--output", str(path), "--quiet"])
    assert f"training {model_class.__name__} ({kind}" in capsys.readouterr().out
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    assert meta["model"] == kind and meta["task"] == "context"
    model, task = load_model(path)
    assert isinstance(model, model_class) and task == "context" and not model.training
    with pytest.raises(ValueError, match=f"holds a {kind} baseline, not a SegFormer"):
        sl.load_segformer(path)
    for argv, scored_on in (([], "context"), (["--task", "hints"], "hints")):
        miou = evaluate.main(["--checkpoint", str(path), "--images", "3", "--seed", "9", "--quiet", *argv])
        assert capsys.readouterr().out.strip().splitlines()[-1] == f"mIoU {miou:.4f}"
        # independently: the loaded model's argmax on the task's images, IoU counted with numpy
        images, labels = SyntheticShapes(3, 64, seed=9, task=scored_on).batch(range(3))
        with torch.no_grad():
            pred = model(images).argmax(1).numpy()
        labels = labels.numpy()
        ious = [((pred == c) & (labels == c)).sum() / u for c in range(4) if (u := ((pred == c) | (labels == c)).sum())]
        assert miou == pytest.approx(np.mean(ious), abs=1e-9), scored_on


def test_save_model_records_kind_and_task(tiny_segformer, tmp_path):
    segformer = tiny_segformer(4)
    path = save_model(segformer, tmp_path / "s.safetensors", task="context")
    model, task = load_model(path)
    assert isinstance(model, sl.SegFormer) and task == "context"
    with safe_open(str(path), framework="pt") as f:
        assert json.loads(f.metadata()["config"])["embed_dims"] == [32, 64, 160, 256]
    # a file of save_segformer records no task
    assert load_model(sl.save_segformer(segformer, tmp_path / "plain.safetensors"))[1] is None
    with pytest.raises(ValueError, match="task must be one of 'hints', 'context', got 'shapes'"):
        save_model(PixelMLP(4), tmp_path / "p.safetensors", task="shapes")
    with pytest.raises(TypeError, match="expected a SegFormer or a baseline"):
        save_model(segformer.encoder, tmp_path / "e.safetensors")


def test_context_differs_from_hints_and_is_deterministic():
    for index in range(3):
        image, label = render_shapes(7, index, 64, "context")
        again = render_shapes(7, index, 64, "context")
        assert np.array_equal(image, again[0]) and np.array_equal(label, again[1])
        hints = render_shapes(7, index, 64, "hints")
        assert not np.array_equal(image, hints[0]) and not np.array_equal(label, hints[1])


def test_resume_refuses_a_state_of_another_model_or_task(tmp_path, capsys, one_thread):
    out = tmp_path / "w.safetensors"
    common = ["--steps", "1", "--batch-size", "1", "--eval-images", "1", "--output", str(out), "--quiet"]
    train.main(["--model", "pixel-mlp", "--task", "context", *common])
    for other in (["--model", "local-cnn", "--task", "context"], ["--model", "pixel-mlp", "--task", "hints"]):
        with pytest.raises(SystemExit) as exit_:
            train.main([*other, *common, "--steps", "2", "--resume"])
        assert exit_.value.code == 2
        assert "is a run with --" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["pixel-mlp", "local-cnn"])
def test_shipped_baselines_score_what_the_results_state(kind, one_thread):
    """The shipped baselines' ``evaluate`` printout in docs/results.md, recomputed: per-class IoU
    counted with numpy on the images it names, equal to its printout to the printed 4 decimals."""
    from pathlib import Path

    from segformer_lite.training.model_files import SHIPPED_BASELINES

    readme = (Path(__file__).resolve().parents[1] / "docs" / "results.md").read_text(encoding="utf-8")
    m = re.search(rf"evaluate --checkpoint segformer_lite/checkpoints/{kind}_context\.safetensors "
                  r"--seed (\d+) --images (\d+)`? prints:\s*```\n(IoU .*?mIoU [0-9.]+)\n```", readme, re.S)
    assert m, f"docs/results.md no longer shows the shipped {kind}'s evaluate printout"
    seed, n, printed = int(m.group(1)), int(m.group(2)), m.group(3).splitlines()
    model, task = load_model(SHIPPED_BASELINES[kind])
    assert task == "context"
    images, labels = SyntheticShapes(n, 64, seed=seed, task=task).batch(range(n))
    with torch.no_grad():
        pred = torch.cat([model(images[i:i + 50]).argmax(1) for i in range(0, n, 50)]).numpy()
    labels = labels.numpy()
    ious = [((pred == c) & (labels == c)).sum() / ((pred == c) | (labels == c)).sum() for c in range(len(CLASSES))]
    assert [line.split()[1] for line in printed[:-1]] == list(CLASSES)
    for line, iou in zip(printed, ious):
        assert float(line.split()[-1]) == pytest.approx(iou, abs=0.5e-4), line
    assert float(printed[-1].split()[-1]) == pytest.approx(np.mean(ious), abs=0.5e-4)
