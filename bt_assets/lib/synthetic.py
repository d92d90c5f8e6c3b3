"""Synthetic multi-step word problems (the demo's problem set), deterministic for a seed.

Each of twelve templates (shopping, travel, baking, ...) draws its numbers from one ``random.Random(seed)``
and writes a GSM8K-style rationale as it computes: one line per step, ``text: expr = <<expr=value>>value``,
every value computed exactly (``calc``: integer ``+ - * /`` over fractions; a step that would not be a
non-negative integer raises), then ``#### <gold>``. Problems take 2-4 steps; templates are dealt as
shuffled decks so all appear. The same ``(n, seed)`` always gives the same problems (tests pin them).
"""

from __future__ import annotations

import ast
import random
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction

import polars as pl

from bt_assets.lib.problems import PROBLEM_SCHEMA


def calc(expr: str) -> int:
    """Exact value of an integer ``+ - * /`` expression; raises if it is not a non-negative integer."""

    def ev(node: ast.AST) -> Fraction:
        if isinstance(node, ast.Constant) and type(node.value) is int:
            return Fraction(node.value)
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](ev(node.left), ev(node.right))
        raise ValueError(f"unsupported expression {expr!r}")

    value = ev(ast.parse(expr, mode="eval").body)
    if value.denominator != 1 or value < 0:
        raise ValueError(f"{expr} = {value} is not a non-negative integer")
    return int(value)


_OPS: dict[type, Callable[[Fraction, Fraction], Fraction]] = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
    ast.Div: lambda a, b: a / b,
}


class _Work:
    """Collects GSM8K-style rationale lines: ``text: expr = <<expr=value>>value``."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def step(self, text: str, expr: str) -> int:
        value = calc(expr)
        self.lines.append(f"{text}: {expr} = <<{expr}={value}>>{value}")
        return value


@dataclass(frozen=True)
class Person:
    name: str
    subj: str  # she / he
    poss: str  # her / his


PEOPLE = (
    Person("Amara", "she", "her"),
    Person("Diego", "he", "his"),
    Person("Priya", "she", "her"),
    Person("Kenji", "he", "his"),
    Person("Fatima", "she", "her"),
    Person("Lars", "he", "his"),
    Person("Mei", "she", "her"),
    Person("Tomasz", "he", "his"),
    Person("Zanele", "she", "her"),
    Person("Omar", "he", "his"),
    Person("Ines", "she", "her"),
    Person("Rafael", "he", "his"),
    Person("Yuki", "she", "her"),
    Person("Kwame", "he", "his"),
    Person("Sofia", "she", "her"),
    Person("Arjun", "he", "his"),
    Person("Noor", "she", "her"),
    Person("Elif", "she", "her"),
)

Template = Callable[[random.Random, Person, _Work], str]


def _shopping(r: random.Random, p: Person, w: _Work) -> str:
    items = r.sample(["notebooks", "pens", "apples", "candles", "mugs", "socks", "batteries"], 2)
    (i1, a, pa), (i2, b, pb) = [(item, r.randint(2, 9), r.randint(2, 15)) for item in items]
    c1 = w.step(f"The {i1} cost", f"{a}*{pa}")
    c2 = w.step(f"The {i2} cost", f"{b}*{pb}")
    total = w.step("Altogether that is", f"{c1}+{c2}")
    denom = r.choice([20, 50, 100])
    bill = (total // denom + 1) * denom
    w.step("The change is", f"{bill}-{total}")
    return (
        f"{p.name} buys {a} {i1} for ${pa} each and {b} {i2} for ${pb} each. {p.subj.capitalize()} pays "
        f"with ${bill}. How many dollars of change does {p.name} get back?"
    )


def _travel(r: random.Random, p: Person, w: _Work) -> str:
    verb, unit, lo, hi = r.choice(
        [
            ("drives", "miles", 35, 65),
            ("cycles", "kilometers", 10, 24),
            ("rides a train", "kilometers", 60, 120),
            ("walks", "kilometers", 3, 6),
        ]
    )
    s1, h1, s2, h2 = r.randint(lo, hi), r.randint(2, 5), r.randint(lo, hi), r.randint(1, 4)
    d1 = w.step("First leg", f"{s1}*{h1}")
    d2 = w.step("Second leg", f"{s2}*{h2}")
    done = w.step("Distance covered", f"{d1}+{d2}")
    goal = done + r.randint(5, 120)
    w.step("Distance left", f"{goal}-{done}")
    return (
        f"{p.name} {verb} at {s1} {unit} per hour for {h1} hours, takes a break, then continues at {s2} "
        f"{unit} per hour for {h2} hours. {p.poss.capitalize()} destination is {goal} {unit} from the "
        f"start. How many {unit} are still left to go?"
    )


def _baking(r: random.Random, p: Person, w: _Work) -> str:
    while True:
        trays, per = r.randint(2, 6), r.choice([6, 8, 10, 12, 16, 20, 24])
        pct, k = r.choice([10, 20, 25, 50]), r.randint(2, 8)
        total = trays * per
        rest = total - total * pct // 100
        if total * pct % 100 == 0 and rest % k == 0:
            break
    goods = r.choice(["muffins", "cookies", "rolls", "scones", "tarts", "bagels"])
    total = w.step(f"{p.name} bakes", f"{trays}*{per}")
    sold = w.step("Sold at the market", f"{total}*{pct}/100")
    rest = w.step("Left over", f"{total}-{sold}")
    w.step("Each friend gets", f"{rest}/{k}")
    return (
        f"{p.name} bakes {trays} trays of {goods} with {per} on each tray. {p.subj.capitalize()} sells "
        f"{pct}% of them at the market and shares the rest equally among {k} friends. How many {goods} "
        f"does each friend get?"
    )


def _savings(r: random.Random, p: Person, w: _Work) -> str:
    start, earn, weeks = r.randint(0, 60), r.randint(12, 40), r.randint(3, 12)
    spend = r.randint(2, earn - 5)
    chore, treat = (
        r.choice(["walking dogs", "mowing lawns", "tutoring", "washing cars"]),
        r.choice(["snacks", "bus fares", "comics", "music"]),
    )
    net = w.step("Saved per week", f"{earn}-{spend}")
    saved = w.step(f"Saved in {weeks} weeks", f"{net}*{weeks}")
    have = w.step("Money before the purchase", f"{start}+{saved}")
    cost = r.randint(10, have)
    thing = r.choice(["bike helmet", "guitar", "skateboard", "camera", "tent"])
    w.step("Money left", f"{have}-{cost}")
    return (
        f"{p.name} has ${start} saved. Each week {p.subj} earns ${earn} {chore} and spends ${spend} "
        f"of it on {treat}. After {weeks} weeks {p.subj} buys a {thing} for ${cost}. How many dollars "
        f"does {p.name} have left?"
    )


def _classroom(r: random.Random, p: Person, w: _Work) -> str:
    while True:
        classes, size, pct = r.randint(3, 8), r.randint(18, 32), r.choice([20, 25, 40, 50, 60, 75, 80])
        going, rem = divmod(classes * size * pct, 100)
        caps = [c for c in range(8, 41) if going % c == 0 and going // c >= 2]
        if rem == 0 and caps:
            break
    cap = r.choice(caps)
    total = w.step("Students in the school", f"{classes}*{size}")
    trip = w.step("Students on the trip", f"{total}*{pct}/100")
    w.step("Vans needed", f"{trip}/{cap}")
    return (
        f"A school has {classes} classes with {size} students in each. {pct}% of the students sign up "
        f"for a museum trip organised by {p.name}. Each van carries exactly {cap} students and every van "
        f"is full. How many vans are needed?"
    )


def _garden(r: random.Random, p: Person, w: _Work) -> str:
    while True:
        rows, per, yld = r.randint(3, 9), r.randint(4, 12), r.randint(3, 10)
        bag = r.choice([4, 5, 6, 8, 10, 12])
        total = rows * per * yld
        gift = r.randint(1, total // 3)
        if (total - gift) % bag == 0:
            break
    plant, crop = r.choice(
        [
            ("tomato plants", "tomatoes"),
            ("pepper plants", "peppers"),
            ("bean plants", "pods"),
            ("strawberry plants", "strawberries"),
        ]
    )
    plants = w.step("Number of plants", f"{rows}*{per}")
    crop_n = w.step(f"Number of {crop}", f"{plants}*{yld}")
    rest = w.step("Kept after the gift", f"{crop_n}-{gift}")
    w.step("Bags filled", f"{rest}/{bag}")
    return (
        f"{p.name} plants {rows} rows of {per} {plant}. Each plant gives {yld} {crop}. "
        f"{p.subj.capitalize()} gives {gift} {crop} to a neighbour and packs the rest into bags of "
        f"{bag}. How many bags does {p.subj} fill?"
    )


def _factory(r: random.Random, p: Person, w: _Work) -> str:
    while True:
        machines, rate, hours = r.randint(2, 9), r.randint(10, 60), r.randint(6, 12)
        pct = r.choice([2, 4, 5, 10])
        if machines * rate * hours * pct % 100 == 0:
            break
    product = r.choice(["bottles", "bolts", "boxes", "gears", "toy cars"])
    hourly = w.step("Made per hour", f"{machines}*{rate}")
    daily = w.step("Made per day", f"{hourly}*{hours}")
    bad = w.step("Defective", f"{daily}*{pct}/100")
    w.step("Good items", f"{daily}-{bad}")
    return (
        f"A factory managed by {p.name} has {machines} machines that each make {rate} {product} per "
        f"hour. The factory runs {hours} hours a day and {pct}% of the {product} are defective. How many "
        f"good {product} does it make in one day?"
    )


def _tickets(r: random.Random, p: Person, w: _Work) -> str:
    venue = r.choice(["theater", "museum", "zoo", "aquarium", "planetarium", "concert hall"])
    price, adults, kids = 2 * r.randint(4, 15), r.randint(20, 200), r.randint(10, 150)
    from_adults = w.step("Adult tickets bring in", f"{adults}*{price}")
    half = w.step("A child ticket costs", f"{price}/2")
    from_kids = w.step("Child tickets bring in", f"{kids}*{half}")
    w.step("Total sales", f"{from_adults}+{from_kids}")
    return (
        f"On Saturday the {venue} where {p.name} works sells {adults} adult tickets at ${price} each and "
        f"{kids} child tickets at half the adult price. How many dollars do the ticket sales bring in?"
    )


def _unit_price(r: random.Random, p: Person, w: _Work) -> str:
    item, k, unit = (
        r.choice(["markers", "batteries", "light bulbs", "seed packets"]),
        r.randint(3, 12),
        r.randint(1, 9),
    )
    need, fee = r.randint(5, 60), r.choice([0, 0, 3, 5, 8])
    each = w.step(f"One of the {item} costs", f"{k * unit}/{k}")
    cost = w.step(f"{need} {item} cost", f"{each}*{need}")
    q = (
        f"A shop sells {item} in packs of {k} for ${k * unit}, and also sells them one at a time at the "
        f"same price per item. {p.name} buys {need} {item}"
    )
    if fee:
        w.step("With delivery", f"{cost}+{fee}")
        return q + f" and pays ${fee} for delivery. How many dollars does {p.subj} spend in total?"
    return q + f". How many dollars does {p.subj} spend?"


def _reading(r: random.Random, p: Person, w: _Work) -> str:
    weekday, weekend, weeks = r.randint(5, 30), r.randint(10, 60), r.randint(2, 6)
    pages = weeks * (5 * weekday + 2 * weekend)
    wd = w.step("Weekday pages per week", f"5*{weekday}")
    we = w.step("Weekend pages per week", f"2*{weekend}")
    per_week = w.step("Pages per week", f"{wd}+{we}")
    w.step("Weeks to finish", f"{pages}/{per_week}")
    return (
        f"{p.name} reads {weekday} pages every weekday and {weekend} pages on each day of the weekend. "
        f"How many weeks does it take {p.poss} to read a {pages}-page book?"
    )


def _fuel(r: random.Random, p: Person, w: _Work) -> str:
    mpg, price = r.choice([20, 25, 30, 40]), r.randint(3, 5)
    miles = mpg * r.randint(2, 12)
    there = w.step("Round trip", f"2*{miles}")
    gallons = w.step("Gallons used", f"{there}/{mpg}")
    w.step("Fuel cost", f"{gallons}*{price}")
    return (
        f"{p.name}'s van goes {mpg} miles on one gallon of fuel, and fuel costs ${price} per gallon. "
        f"{p.subj.capitalize()} drives to a lake {miles} miles away and back. How many dollars does the "
        f"fuel for the trip cost?"
    )


def _discount(r: random.Random, p: Person, w: _Work) -> str:
    while True:
        price, pct, qty = 5 * r.randint(8, 60), r.choice([10, 15, 20, 25, 30, 40, 50]), r.randint(2, 5)
        if price * pct % 100 == 0:
            break
    thing = r.choice(["jackets", "lamps", "backpacks", "chairs", "board games"])
    off = w.step("The discount per item", f"{price}*{pct}/100")
    sale = w.step("Sale price", f"{price}-{off}")
    w.step(f"{qty} {thing} cost", f"{qty}*{sale}")
    return (
        f"A store sells {thing} for ${price} each. This week they are {pct}% off. {p.name} buys {qty} "
        f"{thing}. How many dollars does {p.subj} pay?"
    )


TEMPLATES: dict[str, Template] = {
    "shopping": _shopping,
    "travel": _travel,
    "baking": _baking,
    "savings": _savings,
    "classroom": _classroom,
    "garden": _garden,
    "factory": _factory,
    "tickets": _tickets,
    "unit_price": _unit_price,
    "reading": _reading,
    "fuel": _fuel,
    "discount": _discount,
}


@dataclass(frozen=True)
class SyntheticProblem:
    template: str
    question: str
    answer: str
    answer_value: str


def synthetic_rows(n: int, seed: int) -> list[SyntheticProblem]:
    """``n`` problems from ``random.Random(seed)``; templates are dealt as shuffled decks (all appear)."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    rng, out, deck = random.Random(seed), [], []
    while len(out) < n:
        if not deck:
            deck = rng.sample(sorted(TEMPLATES), len(TEMPLATES))
        name, work = deck.pop(), _Work()
        question = TEMPLATES[name](rng, rng.choice(PEOPLE), work)
        gold = work.lines[-1].rsplit(">>", 1)[1]
        out.append(SyntheticProblem(name, question, "\n".join([*work.lines, f"#### {gold}"]), gold))
    return out


def synthetic_problems(n: int, seed: int) -> pl.DataFrame:
    """Deterministic synthetic word problems (2-4 steps) with GSM8K-style rationales; ids 0..n-1."""
    rows = [
        {"id": i, "question": p.question, "answer": p.answer, "answer_value": p.answer_value}
        for i, p in enumerate(synthetic_rows(n, seed))
    ]
    return pl.DataFrame(rows, schema=PROBLEM_SCHEMA)
