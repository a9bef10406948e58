"""Write a small SYNTHETIC data set in GSM8K's file format (it is not GSM8K).

Multi-step arithmetic word problems, generated from templates by a seeded random generator, with
GSM8K-style worked answers: one line per step with a ``<<a*b=c>>`` calculator annotation, and a
final ``#### N`` line. Two or three steps (three only with numbers under 100), whole numbers
under 1,000 (no thousands commas): a completion is short (about 50 of SmolLM2's tokens, at most
70), so a CPU can train on and generate it. The files are those of the ``gsm8k`` task's local
folder (``train.jsonl``, ``test.jsonl``), so a sweep runs the task offline
with ``data_dirs: {gsm8k: examples/data/arith-gsm8k}``::

    python examples/make_arith_gsm8k.py            # rewrites examples/data/arith-gsm8k/

The same arguments always write the same bytes.
"""

from __future__ import annotations

import argparse
import json
import random
from collections.abc import Callable
from pathlib import Path

NAMES = ("Ava", "Ben", "Chloe", "Dev", "Elena", "Farid", "Grace", "Hugo", "Ines", "Jon", "Kira")
ITEMS = ("apples", "stickers", "marbles", "pencils", "cookies", "stamps", "shells", "cards")
Problem = tuple[str, list[str], int]
"""A question, the solution's step lines, and the final answer."""


def step(left: int, op: str, right: int, text: str) -> tuple[int, str]:
    """The value of ``left op right`` and its solution line: ``text`` with ``{}`` replaced by
    the annotated calculation (``3*5=<<3*5=15>>15``)."""
    value = {"+": left + right, "-": left - right, "*": left * right, "/": left // right}[op]
    calc = f"{left}{op}{right}"
    return value, text.format(f"{calc}=<<{calc}={value}>>{value}")


def buy_and_give(rng: random.Random) -> Problem:
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    start, bags, per_bag = rng.randint(5, 40), rng.randint(2, 6), rng.randint(2, 9)
    bought, line1 = step(bags, "*", per_bag, "The bags hold {} " + item + ".")
    total, line2 = step(start, "+", bought, "Then {} " + item + ".")
    given = rng.randint(1, total - 1)
    left, line3 = step(total, "-", given, "{} are left.")
    question = (
        f"{name} has {start} {item}. {name} buys {bags} bags with {per_bag} {item} each, then "
        f"gives {given} {item} to a friend. How many {item} does {name} have now?"
    )
    return question, [line1, line2, line3], left


def share_equally(rng: random.Random) -> Problem:
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    friends, each, extra = rng.randint(2, 8), rng.randint(3, 15), rng.randint(1, 20)
    total = friends * each + extra
    shared, line1 = step(total, "-", extra, "{} are shared.")
    per_friend, line2 = step(shared, "/", friends, "Each gets {}.")
    question = (
        f"{name} has {total} {item} and keeps {extra} of them. The rest are shared equally "
        f"among {friends} friends. How many {item} does each friend get?"
    )
    return question, [line1, line2], per_friend


def weekly_savings(rng: random.Random) -> Problem:
    name = rng.choice(NAMES)
    per_day, days, weeks = rng.randint(2, 9), rng.randint(3, 7), rng.randint(2, 4)
    week, line1 = step(per_day, "*", days, "{} dollars a week.")
    saved, line2 = step(week, "*", weeks, "{} dollars saved.")
    question = (
        f"{name} saves ${per_day} a day, {days} days a week. How many dollars does {name} save "
        f"in {weeks} weeks?"
    )
    return question, [line1, line2], saved


def two_shops(rng: random.Random) -> Problem:
    item = rng.choice(ITEMS)
    first, more = rng.randint(10, 90), rng.randint(5, 40)
    second, line1 = step(first, "+", more, "The second has {}.")
    total, line2 = step(first, "+", second, "Together: {}.")
    question = (
        f"One shop has {first} {item}. A second shop has {more} more {item} than the first. "
        f"How many {item} do the two shops have together?"
    )
    return question, [line1, line2], total


def rows_of_seats(rng: random.Random) -> Problem:
    rows, seats, empty = rng.randint(3, 12), rng.randint(4, 15), rng.randint(1, 30)
    capacity, line1 = step(rows, "*", seats, "{} seats.")
    empty = min(empty, capacity - 1)
    taken, line2 = step(capacity, "-", empty, "{} are taken.")
    question = (
        f"A hall has {rows} rows of {seats} seats. At a concert, {empty} seats are empty. "
        "How many seats are taken?"
    )
    return question, [line1, line2], taken


TEMPLATES: tuple[Callable[[random.Random], Problem], ...] = (
    buy_and_give,
    share_equally,
    weekly_savings,
    two_shops,
    rows_of_seats,
)


def problems(count: int, seed: int) -> list[dict[str, str]]:
    """``count`` distinct problems as GSM8K rows (``question``, ``answer``)."""
    rng = random.Random(seed)
    rows: dict[str, str] = {}
    while len(rows) < count:
        question, lines, answer = rng.choice(TEMPLATES)(rng)
        rows.setdefault(question, "\n".join([*lines, f"#### {answer}"]))
    return [{"question": q, "answer": a} for q, a in rows.items()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "data" / "arith-gsm8k")
    parser.add_argument("--train", type=int, default=400, help="training rows (default 400)")
    parser.add_argument("--test", type=int, default=100, help="test rows (default 100)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rows = problems(args.train + args.test, args.seed)  # distinct: no test question is trained on
    args.out.mkdir(parents=True, exist_ok=True)
    for name, part in (("train", rows[: args.train]), ("test", rows[args.train :])):
        lines = "".join(json.dumps(row) + "\n" for row in part)
        (args.out / f"{name}.jsonl").write_text(lines, encoding="utf-8")
    print(f"wrote {args.train} train and {args.test} test rows to {args.out}")


if __name__ == "__main__":
    main()
