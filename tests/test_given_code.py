"""Given code of the stages, which students call but do not write: tested by the course's self-test (against
PyTorch where there is a PyTorch twin), never graded (a passing test of given code would make an untouched
exercise read "failed", not "not started"). The pictures of attention are tested here too: the figures are
PNG files, the tables carry the right labels, and the weights are the ones the models use."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from stage1_autograd.tensor import Tensor
from stage3_transformer import functional as F
from tests.helpers import assert_close, assert_equal, assert_raises, run_backward
from tests.student_side import printed


def test_float32_gelu_and_its_slope_are_as_accurate_as_their_docstring_says():
    # gelu_and_slope_float32 (speedups.py) against the exact values in float64, on float32 inputs: every x from
    # -14 to 14 in steps of 1/1000, and small |x| down to 1e-8 on both sides.
    from stage3_transformer.speedups import gelu_and_slope_float32, in_blocks

    grid = np.linspace(-14, 14, 28_001, dtype=np.float32)
    small = np.geomspace(1e-8, 3, 2_000, dtype=np.float32)
    x = np.concatenate([grid, small, -small, np.float32([0.0, -0.0])])
    value, slope = np.empty_like(x), np.empty_like(x)
    in_blocks(gelu_and_slope_float32, (value, slope), x)
    xd = x.astype(np.float64)
    cdf = 0.5 * np.array([math.erfc(-v / math.sqrt(2)) for v in xd])  # erfc keeps the left tail's digits
    exact_value, exact_slope = xd * cdf, cdf + xd * np.exp(-xd * xd / 2) / math.sqrt(2 * math.pi)
    assert value.dtype == slope.dtype == np.float32
    assert np.abs(value - exact_value).max() < 5e-7, "GELU(x): absolute error"
    assert np.abs(slope - exact_slope).max() < 5e-7, "GELU'(x): absolute error"
    near = (np.abs(xd) < 3) & (xd != 0)
    relative = np.abs(value - exact_value)[near] / np.abs(exact_value[near])
    assert relative.max() < 1e-6, "GELU(x) for |x| < 3: relative error"
    assert value[-2] == 0 and slope[-2] == slope[-1] == np.float32(0.5), "GELU and its slope at +0 and -0"


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


# ---------------------------------------------------------------------- pictures of attention
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_recorded_attention_keeps_every_head_and_answers_callers_as_before():
    from stage3_transformer.nn import MultiheadAttention
    from stage3_transformer.plots import recorded_attention

    rng = np.random.default_rng(0)
    mha = MultiheadAttention(8, 2, rng=0, dtype=np.float64)
    query, memory = Tensor(rng.standard_normal((1, 3, 8))), Tensor(rng.standard_normal((1, 4, 8)))
    out, heads = mha(query, memory, memory, need_weights=True, average_attn_weights=False)  # (1, 2, 3, 4)
    with recorded_attention([mha]) as recorded:
        out_unasked, none = mha(query, memory, memory, need_weights=False)
        _, averaged = mha(query, memory, memory)
    assert_equal(len(recorded), 2, "recorded_attention: one array per call")
    assert_close(recorded[0], heads, "recorded_attention: the weights of every head, (B, heads, L, S)")
    assert_equal(none, None, "recorded_attention: a caller that asked need_weights=False still gets None")
    assert_close(out_unasked, out, "recorded_attention: the layer's output is unchanged")
    assert_close(averaged, heads.mean(axis=1), "recorded_attention: a caller that asked for weights gets them "
                 "averaged over the heads, as by default")
    assert_equal("forward" in vars(mha), False, "after recorded_attention: the class's forward again")


def test_attention_tables_put_the_heads_side_by_side():
    from stage3_transformer.plots import attention_tables

    weights = np.array([[[1.0, 0.0], [0.5, 0.5]], [[0.0, 1.0], [0.04, 0.96]]])  # (heads, rows, columns)
    assert_equal(attention_tables(weights, ["x", "yy"], ["a", "b"]).splitlines(),
                 ["head 0    head 1", "   a b       a b", " x # .     x . #", "yy 5 5    yy . #"],
                 "attention_tables of 2 heads: each head's attention_table under its name, side by side")


def test_attention_grid_writes_one_png_for_two_kinds_of_attention(tmp_path):
    from stage3_transformer.plots import AttentionMaps, attention_grid

    rng = np.random.default_rng(1)
    cross = AttentionMaps("cross", rng.dirichlet(np.ones(5), size=(2, 2, 3)), ["6", "8", "</s>"], list("23+45"))
    self_ = AttentionMaps("self", rng.dirichlet(np.ones(3), size=(2, 2, 3)), ["6", "8", "</s>"], ["<s>", "6", "8"])
    path = attention_grid([cross, self_], tmp_path / "grid.png", title="23+45 = 68")
    assert_equal(path.read_bytes()[:8], PNG_SIGNATURE, "attention_grid: a PNG file")
    assert_raises(ValueError, lambda: attention_grid(cross._replace(columns=["2"]), tmp_path / "bad.png"),
                  "attention_grid with 1 column label for 5 columns", match="column labels")


def test_positions_command_writes_its_figure(tmp_path):
    from stage3_transformer.plots import main

    path = tmp_path / "positions.png"
    status, out = printed(main, ["positions", "--out", str(path), "--length", "16", "--dim", "8", "--head-dim", "8"])
    assert_equal((status, path.read_bytes()[:8]), (0, PNG_SIGNATURE),
                 f"python -m stage3_transformer.plots positions --out PNG: exit status 0 and a PNG; it printed {out!r}")


def test_addition_attention_maps_have_a_row_per_written_token():
    from stage3_transformer.addition import AdditionConfig, AdditionModel, attention_maps, greedy_decode

    model = AdditionModel(AdditionConfig(d_model=16, nhead=2, layers=2, ff=32), dtype=np.float64)
    picture = attention_maps(model, "23+45")
    assert_equal(picture.answer, greedy_decode(model, ["23+45"])[0], "attention_maps: greedy_decode's answer")
    assert_equal("".join(t for t in picture.rows if t != "</s>"), picture.answer,
                 "attention_maps: the rows are the answer's tokens (and </s> if it wrote one)")
    assert_equal(picture.inputs[:1], ["<s>"], "attention_maps: the decoder input starts with <s>")
    T = len(picture.rows)
    assert_equal((picture.cross.shape, picture.self_.shape), ((2, 2, T, 5), (2, 2, T, T)),
                 "attention_maps: (layers, heads, rows, problem characters) and (layers, heads, rows, inputs)")
    assert_close(picture.cross.sum(axis=-1), np.ones((2, 2, T)), "attention_maps: each cross-attention row sums to 1")
    assert_close(np.triu(picture.self_, 1), np.zeros_like(picture.self_),
                 "attention_maps: no self-attention on later positions (the causal mask)")


@pytest.mark.parametrize("pos", ["learned", "rope"])
def test_gpt_attention_weights_are_those_its_attention_layers_use(pos):
    from stage4_gpt.model import GPT, GPTConfig
    from stage4_gpt.sample import attention_weights, causal_attention_weights

    config = GPTConfig(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=16, pos=pos)
    model = GPT(config, rng=0, dtype=np.float64)
    model.eval()
    attn = model.transformer.h[0].attn
    attn.c_attn.weight.data[...] *= 50  # sharp attention: near-uniform weights would agree with almost anything
    x, positions = Tensor(np.random.default_rng(2).standard_normal((1, 5, 16))), np.arange(5)
    weights = causal_attention_weights(attn, x, positions)  # (1, n_head, 5, 5)
    v = attn.c_attn(x).data[..., 32:].reshape(1, 5, 2, 8).transpose(0, 2, 1, 3)  # (1, n_head, 5, hd)
    mixed = Tensor((weights @ v).transpose(0, 2, 1, 3).reshape(1, 5, 16))
    assert_close(attn(x, positions), attn.c_proj(mixed), f"pos={pos}: c_proj(weights @ v) with the weights of "
                 "causal_attention_weights is what the attention layer computes")

    ids = [1, 2, 3, 4, 5]
    logits, _ = model(np.array([ids]))
    maps = attention_weights(model, ids)
    assert_equal(maps.shape, (2, 2, 5, 5), "attention_weights: (n_layer, n_head, T, T)")
    assert_close(maps.sum(axis=-1), np.ones((2, 2, 5)), "attention_weights: each row sums to 1")
    assert_close(np.triu(maps, 1), np.zeros_like(maps), "attention_weights: no weight on later positions")
    assert_equal("forward" in vars(attn), False, "after attention_weights: the class's forward again")
    assert_close(model(np.array([ids]))[0], logits, "after attention_weights: the model computes what it did")


def test_sample_draws_the_attention_of_a_prompt(tmp_path, capsys):
    # Given code on the GPT of exercise 4.3, graded nowhere: a passing test in 4.7's file would make an untouched
    # `complete` read "failed" instead of "not started".
    import json

    from stage4_gpt.model import GPT, GPTConfig
    from stage4_gpt.sample import main
    from stage4_gpt.tokenizer import CharTokenizer

    tokenizer = CharTokenizer.fit("abcdefgh .")
    model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, block_size=16, n_layer=2, n_head=2, n_embd=16), rng=5)
    checkpoint = tmp_path / "ckpt.npz"
    np.savez(checkpoint, model_config=np.array(json.dumps(model.config.to_dict())),
             tokenizer=np.array(tokenizer.to_json()),
             **{f"model.{name}": value for name, value in model.state_dict().items()})
    picture = tmp_path / "heads.png"
    code = main(["--checkpoint", str(checkpoint), "--prompt", "bad cafe", "--attention", str(picture)])
    out, err = capsys.readouterr()
    assert_equal(code, 0, f"python -m stage4_gpt.sample --prompt 'bad cafe' --attention PNG: exit code (stderr {err!r})")
    assert_equal(picture.read_bytes()[:8], PNG_SIGNATURE, f"--attention {picture}: a PNG file")
    lines = out.splitlines()
    assert_equal([line for line in lines if line.startswith("layer ")],
                 [f"layer {n}: each token (row) reads itself and the tokens before it (weights in tenths)" for n in (0, 1)],
                 f"--attention, 2 layers: a table of each; it printed:\n{out}")
    start = lines.index(next(line for line in lines if line.startswith("layer 0:")))
    tokens = list("bad␣cafe")  # one token per character, a space shown as ␣
    assert_equal(lines[start + 1].split(), ["head", "0", "head", "1"], f"--attention: the 2 heads side by side:\n{out}")
    assert_equal(lines[start + 2].split(), tokens * 2, f"--attention: the columns are the prompt's tokens:\n{out}")
    assert_equal([line.split()[0] for line in lines[start + 3:start + 3 + len(tokens)]], tokens,
                 f"--attention: the rows of layer 0's table are the prompt's tokens:\n{out}")

    for prompt, says in [("bad€", "€"), ("", "--prompt"), ("abcdefgh" * 3, "block_size")]:
        code = main(["--checkpoint", str(checkpoint), "--prompt", prompt, "--attention", str(picture)])
        out, err = capsys.readouterr()
        assert_equal((code, err.count("\n"), says in err), (2, 1, True),
                     f"--attention with the prompt {prompt!r}: exit code 2 and one line on stderr that mentions {says!r}; "
                     f"stderr was {err!r}")
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
