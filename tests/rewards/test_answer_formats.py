"""Answer formats: the math verifier reads <answer> blocks, \\boxed{}, GSM8K's ####, "the answer is",
or all of them (auto), and refuses every hack in every format with its reason code."""

import time

import pytest

from k15.config import apply_overrides, base
from k15.errors import ConfigError
from k15.rewards.answers import FORMATS, find_answer, gold_answer
from k15.rewards.math import MathConfig, verify_math
from k15.rewards.rule import extract_answer

R1 = ("<think>The chance is 3 out of 4? Maybe \\boxed{0.7}... no, recount: 3 of 4 cases.</think>\n\n"
      "There are 4 equally likely cases and 3 favour us, so the probability is \\boxed{\\frac{3}{4}}.")
# R1-distilled chat templates put the <think> in the prompt: the response only closes it
R1_OPENED_IN_PROMPT = ("Try 2: \\boxed{2}? No, it fails.\n</think>\n\n**Final Answer**\n"
                       "\\[\n\\boxed{\\dfrac{3}{4}}\n\\]")
MATH_SOLUTION = ("Squaring both sides gives $x^2 = 3/4$, and since $x > 0$ we have "
                 "$x = \\boxed{\\frac{\\sqrt{3}}{2}}$.")
GSM8K_SOLUTION = ("Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n"
                  "Natalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.\n#### 72")
LLAMA = "Each box holds 6, so 3 boxes hold 18.\nTherefore, the final answer is: $\\boxed{18}$. I hope it is correct."

TABLE = [
    # answer_tag: today's format, read exactly as before
    ("<think>half of it</think><answer>\\frac{3}{4}</answer>", "0.75", "answer_tag", 1.0, "ok"),
    (MATH_SOLUTION, "\\frac{\\sqrt3}{2}", "answer_tag", 0.0, "missing"),  # a boxed answer is not an answer block
    ("<answer>3</answer><answer>3</answer>", "3", "answer_tag", 0.0, "multiple"),  # one block, even if repeated
    ("<think>so <answer>5</answer></think>", "5", "answer_tag", 0.0, "in_reasoning"),
    ("<answer>5</answer> probably", "5", "answer_tag", 0.0, "trailing"),
    # boxed: MATH solutions and R1-style responses
    (R1, "0.75", "boxed", 1.0, "ok"),  # the box in the reasoning does not count
    (R1_OPENED_IN_PROMPT, "\\frac{3}{4}", "boxed", 1.0, "ok"),
    (MATH_SOLUTION, "\\frac{\\sqrt3}{2}", "boxed", 1.0, "ok"),  # nested braces
    ("so $\\boxed{\\{2, 1\\}}$", "\\{1,2\\}", "boxed", 1.0, "ok"),  # escaped braces are not the box's
    ("It is \\fbox{7}.", "7", "boxed", 1.0, "ok"),
    ("\\boxed{\\frac{3}{4}}, as checked: \\boxed{\\frac{3}{4}}", "0.75", "boxed", 1.0, "ok"),  # repeated: one answer
    ("\\boxed{3} or maybe \\boxed{5}", "5", "boxed", 0.0, "multiple"),
    ("\\boxed{$3$ or $5$}", "5", "boxed", 0.0, "multiple"),
    ("\\boxed{3 \\text{ or } 5}", "5", "boxed", 0.0, "wrong"),  # a hedge inside one box is one expression
    ("The answer is \\boxed{}", "5", "boxed", 0.0, "empty"),
    ("<think>it is \\boxed{5}</think> I am not sure.", "5", "boxed", 0.0, "in_reasoning"),
    ("<think>it is \\boxed{5}", "5", "boxed", 0.0, "in_reasoning"),  # the think never closed
    ("it is \\boxed{5}\n</think> I am not sure.", "5", "boxed", 0.0, "in_reasoning"),  # opened in the prompt
    ("So x is \\boxed{5", "5", "boxed", 0.0, "missing"),  # cut off before the box closed: no answer
    ("The answer is 5.", "5", "boxed", 0.0, "missing"),
    ("\\boxed{6}", "5", "boxed", 0.0, "wrong"),
    # gsm8k
    (GSM8K_SOLUTION, "72", "gsm8k", 1.0, "ok"),
    ("So she has 1234.\n#### 1,234", "1234", "gsm8k", 1.0, "ok"),
    ("#### $1,234", "1234", "gsm8k", 1.0, "ok"),
    ("#### 72.", "72", "gsm8k", 1.0, "ok"),
    ("#### -3", "-3", "gsm8k", 1.0, "ok"),
    ("<answer>#### 72</answer>", "72", "gsm8k", 1.0, "ok"),
    ("#### 72\nchecking: 48 + 24 = 72\n#### 72", "72", "gsm8k", 1.0, "ok"),  # the same value again
    ("#### 27\n#### 72", "72", "gsm8k", 0.0, "multiple"),
    ("#### 3 or 5", "5", "gsm8k", 0.0, "wrong"),
    ("#### $3$ or $5$", "5", "gsm8k", 0.0, "multiple"),
    ("####", "72", "gsm8k", 0.0, "empty"),
    ("#### $\n", "72", "gsm8k", 0.0, "empty"),
    ("#### 72\nI hope it is correct.", "72", "gsm8k", 0.0, "trailing"),
    ("<think>#### 72</think>I am not sure.", "72", "gsm8k", 0.0, "in_reasoning"),
    ("She has 72 clips.", "72", "gsm8k", 0.0, "missing"),
    ("#### 27", "72", "gsm8k", 0.0, "wrong"),
    # answer_is
    ("48 + 24 = 72, so the answer is 72.", "72", "answer_is", 1.0, "ok"),
    ("THE ANSWER IS 72\nbecause 48 + 24 = 72", "72", "answer_is", 1.0, "ok"),  # any case; to the end of the line
    ("The final answer is $\\frac{3}{4}$. Done.", "0.75", "answer_is", 1.0, "ok"),
    ("The answer is 3.5.", "3.5", "answer_is", 1.0, "ok"),  # a decimal point does not end the sentence
    ("The answer is $18. She pays $5 more.", "18", "answer_is", 1.0, "ok"),  # a price, not math
    ("The answer is **7**.", "7", "answer_is", 1.0, "ok"),
    (LLAMA, "18", "answer_is", 1.0, "ok"),
    ("Thus, the final answer is:\n\\[\n\\boxed{5}\n\\]", "5", "answer_is", 1.0, "ok"),
    ("The answer is 5. Checking again, the answer is 5.", "5", "answer_is", 1.0, "ok"),
    ("The answer is 3. No wait, the answer is 5.", "5", "answer_is", 0.0, "multiple"),
    ("The answer is $3$ or $5$.", "5", "answer_is", 0.0, "multiple"),
    ("The answer is 3 or 5.", "5", "answer_is", 0.0, "wrong"),
    ("<think>the answer is 5</think>Done.", "5", "answer_is", 0.0, "in_reasoning"),
    ("I wonder what the answer is.", "5", "answer_is", 0.0, "missing"),  # no X: not an answer
    ("The answer is 6.", "5", "answer_is", 0.0, "wrong"),
    # auto (the default): every format, and they must agree
    (R1, "0.75", "auto", 1.0, "ok"),
    (R1_OPENED_IN_PROMPT, "0.75", "auto", 1.0, "ok"),
    (MATH_SOLUTION, "\\frac{\\sqrt{3}}{2}", "auto", 1.0, "ok"),
    (GSM8K_SOLUTION, "72", "auto", 1.0, "ok"),
    (LLAMA, "18", "auto", 1.0, "ok"),  # answer_is and boxed agree
    ("<think>w</think><answer>\\boxed{0.75}</answer>", "\\frac{3}{4}", "auto", 1.0, "ok"),
    ("### Step 1: count\n48 + 24 = 72\n#### Step 2: answer\n\\boxed{72}", "72", "auto", 1.0, "ok"),  # headings
    ("So \\boxed{1,234}.\n#### 1234", "1234", "auto", 1.0, "ok"),
    # auto: the first format in the order answer_tag, boxed, gsm8k, answer_is that finds anything decides;
    # the others are not read, so an answer written in a second format gains nothing and costs nothing
    ("\\boxed{72}\n#### 27", "72", "auto", 1.0, "ok"),
    ("\\boxed{3}\n#### 5", "5", "auto", 0.0, "wrong"),
    ("\\boxed{3}\n<answer>5</answer>", "5", "auto", 1.0, "ok"),
    ("<answer>3</answer> \\boxed{5}", "5", "auto", 0.0, "trailing"),
    ("The answer is 3.\n\\boxed{5}", "5", "auto", 1.0, "ok"),
    ("I'm not sure the answer is right. Actually \\boxed{7}", "7", "auto", 1.0, "ok"),
    ("Therefore, the answer is $x = 5$.\n\n\\boxed{5}", "5", "auto", 1.0, "ok"),
    ("So the answer is $5$ apples.\n\n\\boxed{5}", "5", "auto", 1.0, "ok"),
    ("The answer is 5 cm. \\boxed{5}", "5", "auto", 1.0, "ok"),
    ("The answer is $\\frac{1}{2}$.\n\\boxed{\\dfrac{1}{2}}", "\\frac{1}{2}", "auto", 1.0, "ok"),
    ("\\boxed{3} or maybe \\boxed{5}", "5", "auto", 0.0, "multiple"),
    ("The answer is \\boxed{}.", "5", "auto", 0.0, "empty"),
    ("#### 72\nI hope it is correct.", "72", "auto", 0.0, "trailing"),
    ("<think>\\boxed{5}</think>I am not sure.", "5", "auto", 0.0, "in_reasoning"),
    ("<think>#### 5", "5", "auto", 0.0, "in_reasoning"),
    ("I do not know.", "5", "auto", 0.0, "missing"),
]


@pytest.mark.parametrize("response, gold, fmt, reward, reason", TABLE)
def test_formats_and_hacks(response, gold, fmt, reward, reason):
    verdict = verify_math(response, gold, answer_format=fmt)
    assert (verdict.reward, verdict.reason) == (reward, reason)


@pytest.mark.parametrize(
    "response, fmt, answer, used",
    [
        (R1, "auto", "\\frac{3}{4}", "boxed"),
        (GSM8K_SOLUTION, "auto", "72", "gsm8k"),
        ("So the answer is 1,234.", "auto", "1234", "answer_is"),
        ("<think>w</think><answer>\\boxed{0.75}</answer>", "auto", "0.75", "answer_tag"),  # the box is the block's
        ("\\boxed{72}\n#### 27", "auto", "72", "boxed"),  # the boxed answer decides; #### is not read
        ("I do not know.", "auto", None, "auto"),
        ("#### 72", "boxed", None, "boxed"),
    ],
)
def test_the_answer_found_and_the_format_used(response, fmt, answer, used):
    found = find_answer(response, fmt)
    assert (found.answer, found.format) == (answer, used)


def test_auto_is_the_default_and_answer_tag_reads_as_before():
    assert MathConfig().answer_format == "auto"
    assert verify_math(R1, "0.75").reward == 1.0
    assert verify_math(MATH_SOLUTION, "\\frac{\\sqrt3}{2}").reward == 1.0
    assert verify_math(MATH_SOLUTION, "\\frac{\\sqrt3}{2}", MathConfig(answer_format="answer_tag")).reason == "missing"
    # the call's format (a prompt set's own) wins over the config's
    assert verify_math(R1, "0.75", MathConfig(answer_format="answer_tag"), "boxed").reward == 1.0


@pytest.mark.parametrize(
    "response",
    ["<answer>5</answer>", "<answer>5</answer><answer>5</answer>", "<answer> </answer>", "x <answer>5</answer> y",
     "<answer>5", "5</answer>", "<answer><answer>5</answer>", "<answer>a</answer>\n\n", "none at all"],
)
def test_answer_tag_keeps_the_rule_verifiers_block_rule(response):
    expected = extract_answer(response)
    found = find_answer(response, "answer_tag")
    assert (found.answer, found.reason) == expected


def test_a_refused_answer_keeps_its_text_for_the_record():
    assert verify_math("<answer>$3$ or $5$</answer>", "5").answer == "$3$ or $5$"
    assert verify_math("The answer is $3$ or $5$.", "5", answer_format="answer_is").answer == "$3$ or $5$"


@pytest.mark.parametrize("fmt", FORMATS)
def test_too_long_in_every_format(fmt):
    long_sum = "1+" * 600 + "1"
    response = {"answer_tag": f"<answer>{long_sum}</answer>", "boxed": f"\\boxed{{{long_sum}}}",
                "gsm8k": f"#### {long_sum}", "answer_is": f"The answer is {long_sum}.", "auto": f"\\boxed{{{long_sum}}}"}
    assert verify_math(response[fmt], "601", answer_format=fmt).reason == "too_long"
    assert verify_math(response[fmt], "601", MathConfig(max_answer_chars=2000), answer_format=fmt).reason == "ok"


@pytest.mark.parametrize(
    "response",
    ["\\boxed{" * 6000, "<answer>" * 5000, "the answer is " + "\\(" * 20000, "the answer is " * 3000,
     "\\boxed{" + "{" * 40000, "#### 1\n" * 6000],
)
def test_degenerate_responses_are_read_in_linear_time(response):
    """RL samples can repeat one token thousands of times; finding the answer must not go quadratic."""
    start = time.perf_counter()
    for fmt in FORMATS:
        find_answer(response, fmt, max_chars=1000)
    assert time.perf_counter() - start < 2.0


@pytest.mark.parametrize(
    "text, answer_from, gold",
    [
        ("  \\frac{1}{2} \n", "none", "\\frac{1}{2}"),
        ("   ", "none", None),
        (GSM8K_SOLUTION, "gsm8k", "72"),
        ("Total: 1,234 pages.\n#### 1,234", "gsm8k", "1234"),
        ("#### 5 apples\n#### 6", "gsm8k", "6"),  # the last ####
        ("She has 72 clips.", "gsm8k", None),
        ("#### ", "gsm8k", None),
        (MATH_SOLUTION, "boxed", "\\frac{\\sqrt{3}}{2}"),
        ("First $\\boxed{2}$, then in all $\\boxed{\\{1, 2\\}}$.", "boxed", "\\{1, 2\\}"),  # the last box
        ("So $x = 3$.", "boxed", None),
        ("So $x = \\boxed{}$.", "boxed", None),
    ],
)
def test_gold_answer(text, answer_from, gold):
    assert gold_answer(text, answer_from) == gold


def test_gold_answers_verify_against_their_solutions():
    assert verify_math(GSM8K_SOLUTION, gold_answer(GSM8K_SOLUTION, "gsm8k"), answer_format="gsm8k").reward == 1.0
    assert verify_math(MATH_SOLUTION, gold_answer(MATH_SOLUTION, "boxed"), answer_format="boxed").reward == 1.0


def test_unknown_names_are_one_line_config_errors():
    with pytest.raises(ConfigError, match="answer_from must be one of none, gsm8k, boxed, got 'latex'"):
        gold_answer("5", "latex")
    with pytest.raises(ConfigError, match="answer_format must be one of auto, answer_tag, boxed, gsm8k, answer_is"):
        MathConfig(answer_format="latex")
    with pytest.raises(ConfigError, match="answer_format must be one of"):
        verify_math("\\boxed{5}", "5", answer_format="latex")
    with pytest.raises(ConfigError, match="^rewards.math.answer_format must be one of .*got 'latex'$"):
        apply_overrides(base(), ["rewards.math.answer_format=latex"])
    assert apply_overrides(base(), ["rewards.math.answer_format=gsm8k"]).rewards.math.answer_format == "gsm8k"
