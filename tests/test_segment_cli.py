"""``beyondgd segment train | predict`` as a user meets them: the summary explains its numbers,
prediction says when it runs at another size, bad files get errors that say what they are, and
every option's help shows its default."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

from beyondgd.cli import build_parser, main
from beyondgd.data.scenes import make_scribbles, make_texture_scenes, save_label_png

pytest.importorskip("gco")

SMALL = [
    "--steps", "2", "--pretrain-steps", "2", "--width", "4", "--batch-size", "4",
    "--n-jobs", "1", "--no-progress",
]  # fmt: skip


def _user_folder(root, n=6, masks=True):
    from PIL import Image

    data = make_texture_scenes(n, size=20, n_classes=3, seed=3)
    scribbles = make_scribbles(data.masks, seed=3)
    for sub in ("images", "scribbles", "masks"):
        (root / sub).mkdir(parents=True)
    for i in range(n):
        rgb = (data.images[i].permute(1, 2, 0).numpy() * 255).round().astype("uint8")
        Image.fromarray(rgb).save(root / "images" / f"img{i}.png")
        save_label_png(root / "scribbles" / f"img{i}.png", scribbles[i])
        if masks:
            save_label_png(root / "masks" / f"img{i}.png", data.masks[i])
    return root


def _train(tmp_path, folder, *extra, progress=False):
    args = ["--images", str(folder / "images"), "--scribbles", str(folder / "scribbles")]
    out = tmp_path / "model"
    small = SMALL if not progress else [a for a in SMALL if a != "--no-progress"]
    code = main(["segment", "train", *args, "--method", "adm", "--out", str(out), *small, *extra])
    return code, out


def test_train_summary_explains_its_fields_and_reports_seed_accuracy(tmp_path, capsys):
    folder = _user_folder(tmp_path / "user", masks=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code, out = _train(tmp_path, folder, progress=True)
        with_warnings = [str(w.message) for w in caught if "requires_grad" in str(w.message)]
    assert code == 0 and not with_warnings  # no library warning in the progress bar
    text = capsys.readouterr().out
    assert "seed accuracy" in text and "share of scribbled pixels" in text
    assert "Potts (hard labels)" in text and "neighbouring pixel pairs" in text
    assert "epochs = passes over the 6 images" in text
    assert "no --masks" in text and "mIoU" in text
    assert "train_potts_hard" not in text  # field names are explained, not dumped
    assert (out / "model.pt").exists()


def test_predict_states_a_size_other_than_training_and_rejects_foreign_files(tmp_path, capsys):
    folder = _user_folder(tmp_path / "user")
    code, out = _train(tmp_path, folder)
    assert code == 0
    capsys.readouterr()
    base = ["segment", "predict", "--model", str(out / "model.pt")]
    base += ["--images", str(folder / "images")]
    assert main([*base, "--out", str(tmp_path / "same")]) == 0
    assert "note: predicting at" not in capsys.readouterr().out
    assert main([*base, "--size", "32", "--out", str(tmp_path / "big")]) == 0
    said = capsys.readouterr().out
    assert "predicting at 32 x 32; the model was trained at 20 x 20" in said
    from PIL import Image

    mask = torch.tensor(np.array(Image.open(tmp_path / "big" / "img0.png")))
    assert mask.shape == (32, 32) and int(mask.max()) < 3
    not_a_model = tmp_path / "notes.txt"
    not_a_model.write_text('"hello"\n')
    code = main(
        [
            "segment", "predict", "--model", str(not_a_model),
            "--images", str(folder / "images"), "--out", str(tmp_path / "o"),
        ]
    )  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "is not a model written by beyondgd" in err
    assert "Unsupported operand" not in err


def test_train_accepts_class_names_for_sparse_ids(tmp_path, capsys):
    folder = _user_folder(tmp_path / "user", masks=False)
    # class 1 never scribbled: ids {0, 2} are refused unless the classes are named
    from PIL import Image

    for file in (folder / "scribbles").iterdir():
        labels = np.array(Image.open(file)).astype(np.int64)
        labels[labels == 1] = 255
        save_label_png(file, labels)
    code, _ = _train(tmp_path, folder)
    assert code == 2 and "class ids {1} are never seen" in capsys.readouterr().err
    code, out = _train(tmp_path, folder, "--class-names", "sky", "grass", "road")
    assert code == 0


@pytest.mark.parametrize(
    "command", [["reproduce"], ["list"], ["report"], ["segment", "train"], ["segment", "predict"]]
)
def test_help_shows_every_default(command, capsys):
    parser = build_parser()
    with pytest.raises(SystemExit):
        parser.parse_args([*command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    actions = parser._subparsers._group_actions[0].choices  # noqa: SLF001 - walk to the parser
    sub = actions[command[0]]
    if len(command) == 2:
        sub = sub._subparsers._group_actions[0].choices[command[1]]  # noqa: SLF001
    for action in sub._actions:  # noqa: SLF001
        if action.required or action.default in (None, False, "==SUPPRESS=="):
            continue
        assert f"default: {action.default}" in text or "default:" in (action.help or ""), (
            action.dest
        )
    if command == ["reproduce"]:
        assert "size of the run" in text and "(default: quick)" in text


def test_segment_cli_train_predict_and_compare(tmp_path, capsys):
    folder = _user_folder(tmp_path / "user")
    args = ["--images", str(folder / "images"), "--scribbles", str(folder / "scribbles")]
    small = SMALL
    assert (
        main(
            [
                "segment",
                "train",
                *args,
                "--method",
                "adm",
                "--lam",
                "3",
                "--out",
                str(tmp_path / "model"),
                *small,
            ]
        )
        == 0
    )
    assert (tmp_path / "model" / "model.pt").exists()
    history = json.loads((tmp_path / "model" / "history.json").read_text())
    assert history["finetune"][-1]["step"] == 2
    assert (
        main(
            [
                "segment",
                "predict",
                "--model",
                str(tmp_path / "model" / "model.pt"),
                "--images",
                str(folder / "images"),
                "--out",
                str(tmp_path / "pred"),
            ]
        )
        == 0
    )
    from PIL import Image

    mask = torch.tensor(np.array(Image.open(tmp_path / "pred" / "img0.png")))
    assert mask.shape == (20, 20) and int(mask.max()) < 3
    assert (
        main(
            [
                "segment",
                "compare",
                *args,
                "--masks",
                str(folder / "masks"),
                "--lams",
                "1",
                "10",
                "--out",
                str(tmp_path / "cmp"),
                *small,
            ]
        )
        == 0
    )
    text = (tmp_path / "cmp" / "adm" / "report.md").read_text()
    assert "folder" in text and "ADM" in text


def test_segment_cli_errors_are_clear(tmp_path, capsys):
    folder = _user_folder(tmp_path / "user", n=3)
    code = main(
        [
            "segment",
            "compare",
            "--images",
            str(folder / "images"),
            "--scribbles",
            str(folder / "scribbles"),
            "--masks",
            str(tmp_path / "nope"),
            "--out",
            str(tmp_path / "o"),
        ]
    )
    assert code == 2 and "masks" in capsys.readouterr().err
    code = main(
        [
            "segment",
            "train",
            "--images",
            str(tmp_path / "none"),
            "--scribbles",
            str(folder / "scribbles"),
            "--out",
            str(tmp_path / "o"),
        ]
    )
    assert code == 2 and "images" in capsys.readouterr().err
    code = main(
        [
            "segment",
            "predict",
            "--model",
            str(tmp_path / "missing.pt"),
            "--images",
            str(folder / "images"),
            "--out",
            str(tmp_path / "o"),
        ]
    )
    assert code == 2 and "does not exist" in capsys.readouterr().err


def test_train_under_torchrun_on_two_ranks_matches_one_process(tmp_path, capsys):
    """``torchrun --nproc_per_node 2 -m beyondgd segment train``: two gloo ranks, rank 0 writes
    the model and prints once, and with ``--norm group`` the numbers are those of one process
    (rtol 1e-4: only the float32 summation order differs, see tests/segmentation)."""
    import os
    import subprocess
    import sys

    folder = _user_folder(tmp_path / "user")
    args = ["segment", "train", "--images", str(folder / "images")]
    args += ["--scribbles", str(folder / "scribbles"), "--masks", str(folder / "masks")]
    args += ["--method", "adm", *SMALL, "--steps", "3", "--norm", "group"]
    assert main([*args, "--out", str(tmp_path / "one")]) == 0
    capsys.readouterr()
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    run = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    done = subprocess.run(
        [*run, "-m", "beyondgd", *args, "--out", str(tmp_path / "two")],
        capture_output=True,
        text=True,
        timeout=240,  # a hang fails; a loaded machine is slow but far from this
        env=env,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("model: ") == 1  # rank 0 alone prints and writes
    assert "data-parallel training on 2 ranks" in done.stdout
    one = json.loads((tmp_path / "one" / "history.json").read_text())
    two = json.loads((tmp_path / "two" / "history.json").read_text())
    for phase in ("pretrain", "finetune"):
        for a, b in zip(one[phase], two[phase], strict=True):
            assert a.keys() == b.keys()
            for key, value in a.items():
                if not key.endswith("seconds"):
                    assert value == pytest.approx(b[key], rel=1e-4, abs=1e-6), (phase, key)
    assert (tmp_path / "two" / "model.pt").exists()
