"""Writes the tiny prompt and SFT sets next to this file (see README.md here).

    .venv/bin/python tests/data/prompt_sets/make_prompt_sets.py

The problems are written for k15, in the layout of GSM8K and of MATH; no row is taken from either.
Deterministic: a rerun gives the same JSONL and Parquet bytes and the same datasets directory.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.parquet as pq

from k15.data.tables import write_jsonl
from k15.tokenizer import CHARACTERS, STRUCTURE_TOKENS, WORD_TOKENS

HERE = Path(__file__).resolve().parent

# GSM8K layout: a worked solution, calculator annotations <<expr=value>> on some steps, and the
# final answer alone on the last line after "####" (an integer, written without commas).
GSM8K = [
    ("Maya has 48 stickers. She gives half of them to her brother and then buys 15 more. "
     "How many stickers does Maya have now?",
     "Maya gives away 48/2 = <<48/2=24>>24 stickers.\n"
     "She has 48 - 24 = <<48-24=24>>24 stickers left.\n"
     "After buying more she has 24 + 15 = <<24+15=39>>39 stickers.\n#### 39"),
    ("A school library has 1,200 books. This year it bought 350 new books and gave away 125 old ones. "
     "How many books does the library have now?",
     "After buying new books the library has 1,200 + 350 = <<1200+350=1550>>1,550 books.\n"
     "After giving some away it has 1,550 - 125 = <<1550-125=1425>>1,425 books.\n#### 1425"),
    ("Tom reads 12 pages every weekday and 20 pages on each day of the weekend. "
     "How many pages does he read in 3 weeks?",
     "On the 5 weekdays he reads 5 * 12 = 60 pages.\n"
     "On the 2 weekend days he reads 2 * 20 = 40 pages.\n"
     "In one week he reads 60 + 40 = 100 pages.\n"
     "In 3 weeks he reads 3 * 100 = 300 pages.\n#### 300"),
    ("A bakery sells muffins for $3 each and cookies for $2 each. On Monday it sold 45 muffins and "
     "60 cookies. How much money did the bakery make on Monday?",
     "The muffins made 45 * 3 = $<<45*3=135>>135.\n"
     "The cookies made 60 * 2 = $<<60*2=120>>120.\n"
     "In all the bakery made 135 + 120 = $<<135+120=255>>255.\n#### 255"),
    ("A farmer plants 8 rows of tomato plants with 14 plants in each row. Each plant gives 6 tomatoes. "
     "How many tomatoes does the farmer harvest?",
     "There are 8 * 14 = <<8*14=112>>112 plants.\n"
     "They give 112 * 6 = <<112*6=672>>672 tomatoes.\n#### 672"),
    ("Lena wants a bike that costs $240. She already has $40 and saves $25 every week. "
     "How many weeks does she need to save?",
     "She still needs 240 - 40 = $<<240-40=200>>200.\n"
     "At $25 a week that takes 200 / 25 = <<200/25=8>>8 weeks.\n#### 8"),
    ("A train travels at 60 miles per hour for 2 hours and then at 50 miles per hour for 3 hours. "
     "How many miles does it travel in total?",
     "First it travels 60 * 2 = <<60*2=120>>120 miles.\n"
     "Then it travels 50 * 3 = <<50*3=150>>150 miles.\n"
     "In total it travels 120 + 150 = <<120+150=270>>270 miles.\n#### 270"),
    ("A company pays each of its 15 workers $1,500 a month. How much does it pay its workers in a year?",
     "Each month the company pays 15 * 1,500 = $<<15*1500=22500>>22,500.\n"
     "In 12 months it pays 12 * 22,500 = $<<12*22500=270000>>270,000.\n#### 270000"),
    ("Jack has 3 times as many marbles as Sam. Together they have 64 marbles. How many marbles does Jack have?",
     "Together they have 3 + 1 = <<3+1=4>>4 equal shares of marbles.\n"
     "One share is 64 / 4 = <<64/4=16>>16 marbles.\n"
     "Jack has 3 shares, so 3 * 16 = <<3*16=48>>48 marbles.\n#### 48"),
    ("Four friends share two pizzas. Each pizza is cut into 8 slices, and each friend eats 3 slices. "
     "How many slices are left?",
     "Two pizzas have 2 x 8 = 16 slices.\n"
     "The friends eat 4 x 3 = 12 slices.\n"
     "There are 16 - 12 = 4 slices left.\n#### 4"),
    ("A shirt costs $40. It is on sale for 25% off. How much does the shirt cost on sale?",
     "The discount is 40 * 25 / 100 = $<<40*25/100=10>>10.\n"
     "The sale price is 40 - 10 = $<<40-10=30>>30.\n#### 30"),
    ("Emma is 4 years older than her sister. In 5 years the sum of their ages will be 32. "
     "How old is Emma now?",
     "Each of them will be 5 years older, so now their ages add up to 32 - 5 - 5 = <<32-5-5=22>>22.\n"
     "Taking away Emma's extra 4 years leaves 22 - 4 = <<22-4=18>>18, twice the sister's age, "
     "so the sister is 18 / 2 = <<18/2=9>>9.\n"
     "Emma is 9 + 4 = <<9+4=13>>13 years old.\n#### 13"),
]

# MATH layout: a LaTeX solution with the final answer in \boxed{...}, "Level N", and a subject.
MATH = [
    ("Solve for $x$: $3x + 5 = -16$.",
     "Subtracting 5 from both sides gives $3x = -21$, so $x = \\boxed{-7}$.",
     "Level 1", "Algebra"),
    ("What is $\\frac{1}{2} + \\frac{1}{4}$?",
     "Since $\\frac{1}{2} = \\frac{2}{4}$, the sum is $\\frac{2}{4} + \\frac{1}{4} = \\boxed{\\frac{3}{4}}$.",
     "Level 1", "Prealgebra"),
    ("A square has a diagonal of length 2. What is the length of one side of the square?",
     "If a side has length $s$, the Pythagorean theorem gives a diagonal of $s\\sqrt{2}$. "
     "So $s\\sqrt{2} = 2$ and $s = \\frac{2}{\\sqrt{2}} = \\boxed{\\sqrt{2}}$.",
     "Level 2", "Geometry"),
    ("At what point do the lines $y = 2x - 1$ and $y = -x + 5$ intersect? Enter your answer as an ordered pair.",
     "Setting $2x - 1 = -x + 5$ gives $3x = 6$, so $x = 2$ and $y = 2(2) - 1 = 3$. "
     "The lines meet at $\\boxed{(2,3)}$.",
     "Level 2", "Algebra"),
    ("Compute $\\sin 60^\\circ$.",
     "In a 30-60-90 triangle with hypotenuse 2, the side opposite the $60^\\circ$ angle is $\\sqrt{3}$, "
     "so $\\sin 60^\\circ = \\boxed{\\frac{\\sqrt{3}}{2}}$.",
     "Level 1", "Precalculus"),
    ("What is the greatest common divisor of $84$ and $126$?",
     "We have $84 = 2^2 \\cdot 3 \\cdot 7$ and $126 = 2 \\cdot 3^2 \\cdot 7$. "
     "The common prime factors are $2$, $3$ and $7$, so the greatest common divisor is "
     "$2 \\cdot 3 \\cdot 7 = \\boxed{42}$.",
     "Level 2", "Number Theory"),
    ("What is the remainder when $2^{10}$ is divided by $7$?",
     "Since $2^3 = 8 \\equiv 1 \\pmod{7}$, we get $2^{10} = (2^3)^3 \\cdot 2 \\equiv 1 \\cdot 2 \\pmod{7}$. "
     "The remainder is $\\boxed{2}$.",
     "Level 3", "Number Theory"),
    ("Two fair six-sided dice are rolled. What is the probability that the numbers shown add up to $7$? "
     "Express your answer as a common fraction.",
     "Of the $6 \\cdot 6 = 36$ equally likely outcomes, six add up to $7$: $(1,6)$, $(2,5)$, $(3,4)$, "
     "$(4,3)$, $(5,2)$ and $(6,1)$. The probability is $\\frac{6}{36} = \\boxed{\\frac{1}{6}}$.",
     "Level 2", "Counting & Probability"),
    ("In how many ways can a committee of $3$ people be chosen from a group of $8$ people?",
     "The order of choice does not matter, so the count is "
     "$\\binom{8}{3} = \\frac{8 \\cdot 7 \\cdot 6}{3 \\cdot 2 \\cdot 1} = \\boxed{56}$.",
     "Level 3", "Counting & Probability"),
    ("Let $a$ and $b$ be the roots of $x^2 - 6x + 4 = 0$. Find $a^2 + b^2$.",
     "By Vieta's formulas, $a + b = 6$ and $ab = 4$. "
     "Then $a^2 + b^2 = (a + b)^2 - 2ab = 36 - 8 = \\boxed{28}$.",
     "Level 3", "Intermediate Algebra"),
    ("Find all real numbers $x$ such that $\\sqrt{x + 7} = x - 5$.",
     "Squaring both sides gives $x + 7 = x^2 - 10x + 25$, that is $x^2 - 11x + 18 = 0$, "
     "which factors as $(x - 2)(x - 9) = 0$. A square root is never negative, so we need $x - 5 \\ge 0$; "
     "this rules out $x = 2$. Checking $x = 9$: $\\sqrt{16} = 4 = 9 - 5$. The only solution is $x = \\boxed{9}$.",
     "Level 4", "Intermediate Algebra"),
    ("Compute $\\displaystyle\\sum_{n=1}^{99} \\frac{1}{n(n+1)}$.",
     "Since $\\frac{1}{n(n+1)} = \\frac{1}{n} - \\frac{1}{n+1}$, the sum telescopes to "
     "$1 - \\frac{1}{100} = \\boxed{\\dfrac{99}{100}}$.",
     "Level 5", "Intermediate Algebra"),
]

# SFT pairs in the synthetic world's answer style, lowercase and within the synthetic tokenizer's
# characters so that they tokenize without <unk> under `load_tokenizer()` as well as a real one.
SFT = [
    ("maya has 48 stickers, gives half to her brother and buys 15 more. how many does she have?",
     "<think>48/2=24, 48-24=24, 24+15=39</think><answer>39</answer>"),
    ("a library has 1200 books, buys 350 and gives away 125. how many books does it have?",
     "<think>1200+350=1550, 1550-125=1425</think><answer>1425</answer>"),
    ("what is 7*8?", "<answer>56</answer>"),
    ("tom reads 12 pages on each of 5 weekdays and 20 pages on each of 2 weekend days. how many pages in a week?",
     "<think>5*12=60, 2*20=40, 60+40=100</think><answer>100</answer>"),
    ("solve for x: 3x+5=17.", "<think>3x=17-5=13 wait 17-5=12, x=12/3=4</think><answer>4</answer>"),
    ("what is the remainder when 100 is divided by 7?", "<think>7*14=98, 100-98=2</think><answer>2</answer>"),
    ("jack has 3 times as many marbles as sam; together they have 64. how many does jack have?",
     "<think>3+1=4 shares, 64/4=16, 3*16=48</think><answer>48</answer>"),
    ("what is 9-4+2?", "<answer>7</answer>"),
]


def check_tokenizable(text: str) -> None:
    for token in STRUCTURE_TOKENS + WORD_TOKENS:
        text = text.replace(token, "")
    unknown = sorted(set(text) - set(CHARACTERS))
    assert not unknown, f"characters outside the synthetic tokenizer: {unknown}"


def main(out: Path = HERE) -> None:
    gsm8k = [{"question": q, "answer": a} for q, a in GSM8K]
    math = [{"problem": p, "solution": s, "level": lv, "type": t} for p, s, lv, t in MATH]
    sft = [{"prompt": p, "response": r} for p, r in SFT]
    assert len(gsm8k) == len(math) == 12 and len(sft) == 8
    for row in sft:
        check_tokenizable(row["prompt"] + row["response"])

    write_jsonl(gsm8k, out / "gsm8k_tiny.jsonl")
    write_jsonl(sft, out / "sft_tiny.jsonl")

    schema = pa.schema([(name, pa.string()) for name in ("problem", "solution", "level", "type")])
    pq.write_table(pa.Table.from_pylist(math, schema=schema), out / "math_tiny.parquet")

    shutil.rmtree(out / "math_tiny_dataset", ignore_errors=True)
    dataset = datasets.Dataset.from_list(math, features=datasets.Features.from_arrow_schema(schema))
    # from_list draws a random fingerprint, which save_to_disk writes to state.json; a fixed one
    # keeps a rerun from changing the directory.
    dataset = datasets.Dataset(dataset.data, info=dataset.info, fingerprint="k15-math-tiny")
    datasets.disable_progress_bars()
    dataset.save_to_disk(str(out / "math_tiny_dataset"))


if __name__ == "__main__":
    main()
