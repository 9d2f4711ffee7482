"""Exercise 4.7, the command line: ``complete`` (prompt -> text with GPT.generate) and
``python -m stage4_gpt.sample`` with a checkpoint, a prompt, an interactive mode and clear messages for
settings that define no distribution or prompts the tokenizer cannot encode.

The checkpoints here are written by the test itself in the documented format (train.py's save_checkpoint
docstring: model.<name>, model_config, tokenizer), so these tests do not depend on exercise 4.6. They sample
without the KV cache (``use_cache=False``, ``--no-cache``), which is exercise 4.8.
"""

import json

import numpy as np
import pytest

from stage4_gpt.model import GPT, GPTConfig
from stage4_gpt.sample import complete, main
from stage4_gpt.tokenizer import CharTokenizer
from tests.helpers import StudentPath, assert_equal, assert_raises
from tests.stage4.student_side import Output, always_predicts, working_directory
from tests.student_side import reraise_not_implemented, run_module

pytestmark = [pytest.mark.exercise("4.7"), pytest.mark.under_test("complete")]

TEXT = "abcdefgh ."


def tokenizer_and_model(seed: int = 0, **fields):
    tokenizer = CharTokenizer.fit(TEXT)  # 10 characters, then <|endoftext|> = id 10
    config = GPTConfig(**{**dict(vocab_size=tokenizer.vocab_size, block_size=16, n_layer=1, n_head=2, n_embd=16),
                          **fields})
    return tokenizer, GPT(config, rng=seed)


def write_checkpoint(path: StudentPath, model: GPT, tokenizer) -> None:
    """np.savez(path, ...), the file written beside the code under test (``student_tmp``)."""
    arrays = {f"model.{name}": value for name, value in model.state_dict().items()}
    arrays["model_config"] = np.array(json.dumps(model.config.to_dict()))
    arrays["tokenizer"] = np.array(tokenizer.to_json())
    path.save_npz(**arrays)


# ---------------------------------------------------------------------- complete
def test_complete_returns_only_the_new_text_and_stops_at_endoftext():
    tokenizer, model = tokenizer_and_model(tie_weights=False)
    a = tokenizer.encode("a")[0]
    always_predicts(model, a)
    assert_equal(complete(model, tokenizer, "hg", 4, temperature=0.0, use_cache=False), "aaaa",
                 "complete(model whose likeliest next token is always 'a', 'hg', max_new_tokens=4, temperature=0): "
                 "the new text only, without the prompt")
    always_predicts(model, tokenizer.special_token_id("<|endoftext|>"))
    assert_equal(complete(model, tokenizer, "hg", 4, temperature=0.0, use_cache=False), "",
                 "complete(model whose likeliest next token is always <|endoftext|>, temperature=0): generation stops "
                 "at <|endoftext|>, which is not part of the text")


def test_complete_equals_decoding_generate():
    tokenizer, model = tokenizer_and_model(seed=3)
    prompt = "bad cafe"
    ids = np.array([tokenizer.encode(prompt)])
    eot = tokenizer.special_token_id("<|endoftext|>")
    for settings in (dict(temperature=1.0), dict(temperature=0.7, top_k=4), dict(temperature=1.3, top_p=0.8)):
        out = model.generate(ids, 12, rng=np.random.default_rng(5), stop_token=eot, use_cache=False, **settings)
        new = out[0, ids.shape[1]:].tolist()
        expected = tokenizer.decode(new[:new.index(eot)] if eot in new else new)
        got = complete(model, tokenizer, prompt, 12, rng=np.random.default_rng(5), use_cache=False, **settings)
        assert_equal(got, expected, f"complete(model, tokenizer, {prompt!r}, 12, rng=default_rng(5), {settings}) vs "
                                    "decoding model.generate's new ids up to <|endoftext|>")


def test_complete_starts_an_empty_prompt_from_endoftext_and_rejects_unknown_characters():
    tokenizer, model = tokenizer_and_model(seed=4)
    eot = tokenizer.special_token_id("<|endoftext|>")
    out = model.generate(np.array([[eot]]), 6, temperature=0.0, use_cache=False)
    new = out[0, 1:].tolist()
    expected = tokenizer.decode(new[:new.index(eot)] if eot in new else new)
    assert_equal(complete(model, tokenizer, "", 6, temperature=0.0, use_cache=False), expected,
                 "complete(model, tokenizer, '', 6, temperature=0): greedy text that starts from <|endoftext|>")
    assert_raises(ValueError, lambda: complete(model, tokenizer, "café", 6, use_cache=False), "complete with the prompt 'café', whose "
                  "'é' the tokenizer (characters a-h, space, '.') cannot encode")


# ---------------------------------------------------------------------- the command line
def run_main(output: Output, argv: list[str]) -> int:
    """``main(argv)``, printing into ``output`` (its SystemExit, if any, propagates)."""
    return output.run(main, argv)


@pytest.mark.integration
def test_command_line_prints_prompt_and_sample(student_tmp):
    tokenizer, model = tokenizer_and_model(seed=1)
    path = student_tmp / "ckpt.npz"
    write_checkpoint(path, model, tokenizer)
    output = Output()  # what main prints where it runs (capsys would see only this process's output)
    code = run_main(output, ["--checkpoint", str(path), "--prompt", "fade", "--max-new-tokens", "9", "--seed", "7",
                             "--temperature", "0.9", "--top-k", "5", "--no-cache"])
    expected = "fade" + complete(model, tokenizer, "fade", 9, temperature=0.9, top_k=5, rng=np.random.default_rng(7),
                               use_cache=False)
    assert_equal(code, 0, "exit code of python -m stage4_gpt.sample --checkpoint ... --prompt fade")
    assert_equal(output.readouterr()[0], expected + "\n", "what the sampler prints: the prompt and its continuation "
                                                          "(--seed 7, --temperature 0.9, --top-k 5)")


@pytest.mark.integration
def test_command_line_reads_the_training_default_checkpoint(student_tmp):
    """With no --checkpoint, the sampler reads runs/gpt/ckpt.npz, where python -m stage4_gpt.train writes; if
    there is none yet, it says how to make one."""
    with working_directory(str(student_tmp)):  # that of the process that runs main (monkeypatch.chdir changes only ours)
        output = Output()
        error = assert_raises(SystemExit, lambda: run_main(output, ["--prompt", "ab"]),
                              "python -m stage4_gpt.sample without --checkpoint, before any training")
        message = output.readouterr()[1]
        assert_equal(("runs/gpt/ckpt.npz" in message, "python -m stage4_gpt.train" in message), (True, True),
                     f"the message names the default checkpoint and how to train one; it was {message.strip()!r}")
        assert_equal(error.code, 2, "exit code without a checkpoint (a usage error)")
        tokenizer, model = tokenizer_and_model(seed=2)
        (student_tmp / "runs" / "gpt").mkdir()  # with its parents
        write_checkpoint(student_tmp / "runs" / "gpt" / "ckpt.npz", model, tokenizer)
        code = run_main(output, ["--prompt", "bead", "--max-new-tokens", "5", "--seed", "3", "--no-cache"])
        expected = "bead" + complete(model, tokenizer, "bead", 5, temperature=0.8, rng=np.random.default_rng(3),
                                     use_cache=False)
        assert_equal(code, 0, "exit code of python -m stage4_gpt.sample --prompt bead (no --checkpoint)")
        assert_equal(output.readouterr()[0], expected + "\n", "what the sampler prints from runs/gpt/ckpt.npz")


@pytest.mark.parametrize("flags, named", [(["--top-p", "0"], "top-p"), (["--top-p", "1.5"], "top-p"),
                                          (["--temperature", "-0.5"], "temperature"), (["--top-k", "0"], "top-k")])
@pytest.mark.integration
def test_command_line_rejects_settings_without_a_distribution(student_tmp, flags, named):
    tokenizer, model = tokenizer_and_model()
    path = student_tmp / "ckpt.npz"
    write_checkpoint(path, model, tokenizer)
    output = Output()
    assert_equal(run_main(output, ["--checkpoint", str(path), "--prompt", "ab", "--max-new-tokens", "2", "--no-cache"]),
                 0, "exit code with good settings")
    output.readouterr()
    error = assert_raises(SystemExit,
                          lambda: run_main(output, ["--checkpoint", str(path), "--prompt", "ab", "--no-cache", *flags]),
                          f"python -m stage4_gpt.sample ... {' '.join(flags)}")
    assert_equal(error.code, 2, f"exit code of python -m stage4_gpt.sample ... {' '.join(flags)} (a usage error)")
    message = output.readouterr()[1]
    assert_equal(named in message, True, f"the message for {' '.join(flags)} names the flag --{named}; it was "
                                         f"{message.strip()!r}")


@pytest.mark.integration
def test_command_line_names_characters_the_tokenizer_lacks(student_tmp):
    tokenizer, model = tokenizer_and_model()
    path = student_tmp / "ckpt.npz"
    write_checkpoint(path, model, tokenizer)
    output = Output()
    code = run_main(output, ["--checkpoint", str(path), "--prompt", "bad€", "--max-new-tokens", "2", "--no-cache"])
    assert_equal(code, 2, "exit code for a prompt with a character the tokenizer does not know ('€')")
    out, err = output.readouterr()
    assert_equal("€" in err, True, f"the message names the unknown character '€'; it was {err!r}")
    assert_equal(out, "", "what is printed to stdout when the prompt cannot be encoded")


@pytest.mark.integration
def test_interactive_mode_answers_each_line(student_tmp):
    tokenizer, model = tokenizer_and_model(seed=2, tie_weights=False)
    always_predicts(model, tokenizer.encode("h")[0])
    path = student_tmp / "ckpt.npz"
    write_checkpoint(path, model, tokenizer)
    result = run_module("stage4_gpt.sample", "--checkpoint", str(path), "--interactive", "--max-new-tokens", "3",
                        "--temperature", "0", "--no-cache", cwd=str(student_tmp), stdin="ab\nc€\nca\n\nnever read\n")
    if result.returncode:
        reraise_not_implemented(result.stderr)
    assert_equal(result.returncode, 0, f"exit code of python -m stage4_gpt.sample --interactive after an empty line "
                                       f"(stderr: {result.stderr[-300:]!r})")
    assert_equal(result.stdout.splitlines(), ["abhhh", "cahhh"],
                 "the answers to the prompts 'ab', 'c€' (not encodable: a message on stderr, no answer) and 'ca' "
                 "with a model that always predicts 'h' (the input ends at the empty line)")
    assert_equal("€" in result.stderr, True, "stderr names the character '€' of the prompt it could not encode")
