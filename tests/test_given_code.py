"""Given code of the stages, which students call but do not write: tested by the course's self-test against
PyTorch, never graded (a passing test of given code would make an untouched exercise read "failed", not
"not started")."""

from __future__ import annotations

import numpy as np
import torch

from stage1_autograd.tensor import Tensor
from stage3_transformer import functional as F
from tests.helpers import assert_close, assert_raises, run_backward


def test_index_add_adds_rows_into_their_places_like_torch():
    rng = np.random.default_rng(0)
    index = np.array([3, 0, 3, 1, 3])  # row 3 three times: its rows add up; row 2 none: it stays zero
    source = rng.standard_normal((5, 4))
    ours = Tensor(source.copy(), requires_grad=True)
    theirs = torch.tensor(source, requires_grad=True)
    out = F.index_add(4, index, ours)
    expected = torch.zeros(4, 4, dtype=torch.float64).index_add(0, torch.tensor(index), theirs)
    assert_close(out, expected, "index_add(4, [3, 0, 3, 1, 3], source): values")
    upstream = rng.standard_normal((4, 4))
    run_backward(out, upstream)
    expected.backward(torch.tensor(upstream))
    assert_close(ours.grad, theirs.grad, "index_add: the gradient of source (g's rows gathered at index)")


def test_index_add_names_a_wrong_index():
    assert_raises(ValueError, lambda: F.index_add(4, np.array([0, 1]), Tensor(np.ones((3, 2)))),
                  "index_add with 2 ids for 3 rows of source", match="one id per row of source")


# ---------------------------------------------------------------------- stage 4: the lesson's experiments
def test_gpt_config_takes_the_experiments_switches_and_checks_them():
    from stage4_gpt.model import GPTConfig  # noqa: PLC0415

    config = GPTConfig(pos="none", norm="none", residual=False, norm_position="post")
    assert config.ablations() == ["norm='none'", "pos='none'", "residual=False", "norm_position='post'"]
    assert GPTConfig().ablations() == [] and GPTConfig(norm="rmsnorm", pos="rope", mlp="swiglu").ablations() == []
    for fields, named in [(dict(norm_position="middle"), "norm_position"), (dict(residual="no"), "residual"),
                          (dict(pos="sinusoidal"), "pos"), (dict(norm="batchnorm"), "norm")]:
        assert_raises(ValueError, lambda: GPTConfig(**fields), f"GPTConfig({fields})", match=named)


def test_gpt_config_from_an_older_checkpoint_takes_the_defaults():
    from stage4_gpt.model import GPTConfig  # noqa: PLC0415

    saved = GPTConfig(n_layer=2).to_dict()
    del saved["residual"], saved["norm_position"]  # a checkpoint written before the experiments existed
    config = GPTConfig.from_dict(saved)
    assert (config.residual, config.norm_position, config.n_layer) == (True, "pre", 2)


def test_the_pytorch_port_refuses_the_experiments_in_one_line():
    from stage4_gpt.model import GPT, GPTConfig  # noqa: PLC0415
    from stage4_gpt.torch_gpt import main, to_torch  # noqa: PLC0415

    small = dict(vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=8)
    for fields in (dict(pos="none"), dict(norm="none"), dict(residual=False), dict(norm_position="post")):
        error = assert_raises(ValueError, lambda: to_torch(GPT(GPTConfig(**small, **fields), rng=0)),
                              f"to_torch of a GPT with {fields}", match="PyTorch port")
        assert "\n" not in str(error)
    to_torch(GPT(GPTConfig(**small), rng=0))  # the default design still ports
    assert_raises(SystemExit, lambda: main(["--pos", "none", "--max-steps", "1"]),
                  "python -m stage4_gpt.torch_gpt --pos none")


def write_curve_folder(folder, rows):
    folder.mkdir()
    lines = ["step,train_loss,val_loss,elapsed_seconds"] + [",".join(map(str, row)) for row in rows]
    (folder / "curve.csv").write_text("\n".join(lines) + "\n")


def test_compare_prints_a_table_and_draws_the_curves(tmp_path, capsys):
    from stage4_gpt.compare import main  # noqa: PLC0415

    write_curve_folder(tmp_path / "base", [(200, 2.1, 2.2, 50.0), (400, 1.8, 1.9, 100.0), (800, 1.5, 1.6, 205.4)])
    write_curve_folder(tmp_path / "no-pos", [(200, 2.3, 2.4, 40.0), (800, 2.0, 2.35, 190.0)])
    image = tmp_path / "plots" / "compare.png"
    assert main([str(tmp_path / "base"), str(tmp_path / "no-pos"), "--out", str(image)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["run", "final", "val", "best", "val", "steps", "time"]
    assert lines[1].split() == ["base", "1.6000", "1.6000", "800", "3m25s"]
    assert lines[2].split() == ["no-pos", "2.3500", "2.3500", "800", "3m10s"]
    assert image.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_compare_names_a_folder_without_a_curve_in_one_line(tmp_path, capsys):
    from stage4_gpt.compare import main  # noqa: PLC0415

    write_curve_folder(tmp_path / "base", [(200, 2.1, 2.2, 50.0)])
    (tmp_path / "empty").mkdir()
    assert main([str(tmp_path / "base"), str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "empty has no curve.csv" in err


# ---------------------------------------------------------------------- stage 3: the addition experiments
def test_addition_takes_the_experiments_flags():
    from stage3_transformer.addition import AdditionConfig, AdditionModel, build_parser  # noqa: PLC0415

    args = build_parser().parse_args(["train", "--pos", "none", "--layers", "1"])
    assert (args.pos, args.layers) == ("none", 1)
    model = AdditionModel(AdditionConfig(pos="none", layers=1, d_model=8, nhead=2, ff=8))
    assert not model.positions.data.any() and len(model.transformer.encoder.layers) == 1
