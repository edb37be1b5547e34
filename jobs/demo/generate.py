"""Writes the templated classification sets next to this file: ``python -m jobs.demo.generate``.

Two tasks, seeded, so the files are reproducible and the distillation defaults are checked on
more than one set (bench/distill_defaults.py runs both):

- ``topics``: a news headline -> one of 4 topics; 64 train rows and 32 held-out dev rows
  (``topics.jsonl``, ``topics_dev.jsonl``, ``topics_program.json``), 16 + 8 per label.
- ``intents``: a customer message -> one of 3 support intents; 48 train and 24 dev rows
  (``intents.jsonl``, ``intents_dev.jsonl``, ``intents_program.json``), 16 + 8 per label.

The sentences are templates filled from word lists; a row's label is the template family it
came from. The dev rows never appear in the train file (no duplicate sentences at all).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Task:
    name: str
    input_field: str
    label_field: str
    per_label_train: int
    per_label_dev: int
    # label -> (templates, {slot: words})
    families: dict[str, tuple[tuple[str, ...], dict[str, tuple[str, ...]]]]
    program: dict[str, object]


TOPICS = Task(
    name="topics",
    input_field="headline",
    label_field="topic",
    per_label_train=16,
    per_label_dev=8,
    families={
        "sports": (
            (
                "{team} beat {rival} {score} in a tense {event}",
                "{player} signs a new contract with {team}",
                "{team} coach praises defence after {event} win",
                "Injury rules {player} out of the {event}",
                "{team} fans celebrate as the {event} goes to extra time",
            ),
            {
                "team": ("City", "the Rovers", "United", "the Hawks", "the Tigers", "Athletic"),
                "rival": ("the Lions", "Rangers", "the Eagles", "Wanderers", "the Sharks"),
                "score": ("2-1", "3-0", "1-0", "4-2", "88-79"),
                "player": (
                    "the striker",
                    "the star goalkeeper",
                    "the veteran forward",
                    "the captain",
                ),
                "event": ("derby", "cup final", "semi-final", "league match", "playoff game"),
            },
        ),
        "business": (
            (
                "{company} shares {move} after {report}",
                "{company} to cut {number} jobs as {market} slows",
                "{company} agrees takeover of {other} in {deal}",
                "Investors cheer {company}'s {report}",
                "Oil prices {move} as {company} expands",
            ),
            {
                "company": ("Acme Corp", "Northwind", "Globex", "the retailer", "the carmaker"),
                "other": ("a rival bank", "a logistics startup", "a chip maker", "a grocery chain"),
                "move": ("jump", "slide", "tumble", "climb", "rise sharply"),
                "report": (
                    "quarterly earnings",
                    "a profit warning",
                    "record revenue",
                    "weak sales figures",
                ),
                "number": ("2,000", "500", "1,200", "300"),
                "market": ("the housing market", "consumer spending", "the oil market", "retail"),
                "deal": ("a $2bn deal", "an all-share deal", "a surprise deal", "a cash deal"),
            },
        ),
        "science": (
            (
                "Researchers discover {finding} in {place}",
                "{agency} launches probe to study {object}",
                "New study links {cause} to {effect}",
                "Scientists map {object} using {tool}",
                "{agency} telescope spots {finding}",
            ),
            {
                "finding": (
                    "a new species of frog",
                    "water ice",
                    "an ancient fossil",
                    "a distant exoplanet",
                    "a rare mineral",
                ),
                "place": ("the deep ocean", "Antarctica", "a cave in Borneo", "the Amazon"),
                "agency": ("NASA", "the European Space Agency", "a university lab", "JAXA"),
                "object": ("Jupiter's moons", "the sun's corona", "a comet", "the human genome"),
                "cause": ("poor sleep", "air pollution", "gut bacteria", "a gene mutation"),
                "effect": ("memory loss", "heart disease", "longer life", "faster healing"),
                "tool": (
                    "gene sequencing",
                    "a particle accelerator",
                    "satellite data",
                    "AI models",
                ),
            },
        ),
        "entertainment": (
            (
                "{artist} announces a {thing} for next year",
                "{film} tops the box office on opening weekend",
                "{artist} wins best {category} at the {show}",
                "Tickets sell out in minutes for {artist}'s {thing}",
                "Streaming hit {film} renewed for another season",
            ),
            {
                "artist": ("the pop star", "the band", "the rapper", "the actress", "the comedian"),
                "thing": ("world tour", "new album", "memoir", "farewell concert"),
                "film": (
                    "the sequel",
                    "the animated musical",
                    "the spy thriller",
                    "the period drama",
                ),
                "category": ("album", "actress", "director", "new artist"),
                "show": ("Grammys", "Oscars", "film festival", "music awards"),
            },
        ),
    },
    program={
        "name": "topics",
        "modules": [
            {
                "name": "classify",
                "type": "ChainOfThought",
                "signature": "headline -> topic",
                "instructions": "Classify the topic of a news headline.",
                "fields": {
                    "headline": "a news headline",
                    "topic": "exactly one word: sports, business, science or entertainment",
                },
            }
        ],
    },
)

INTENTS = Task(
    name="intents",
    input_field="message",
    label_field="intent",
    per_label_train=16,
    per_label_dev=8,
    families={
        "billing": (
            (
                "I was charged {amount} twice for {item}",
                "Why is my {period} invoice higher than usual?",
                "Please refund the {amount} you took from my {card}",
                "My {card} was declined when paying for {item}",
                "Can I change the {card} you bill every {period}?",
            ),
            {
                "amount": ("$20", "$49.99", "$5", "$120", "the fee"),
                "item": ("my subscription", "the upgrade", "one order", "the premium plan"),
                "period": ("monthly", "yearly", "weekly", "last month's"),
                "card": ("credit card", "debit card", "bank account", "PayPal account"),
            },
        ),
        "shipping": (
            (
                "My {parcel} still has not arrived after {days}",
                "The tracking number for my {parcel} does not work",
                "Can you deliver my {parcel} to {place} instead?",
                "The courier left my {parcel} at {place} and it is gone",
                "How long does delivery to {country} take?",
            ),
            {
                "parcel": ("package", "order", "parcel", "box of books", "new phone"),
                "days": ("two weeks", "ten days", "a month", "five working days"),
                "place": ("my office", "the neighbour's house", "a pickup point", "my old address"),
                "country": ("Canada", "Germany", "Japan", "Brazil"),
            },
        ),
        "account": (
            (
                "I cannot log in to my account since {time}",
                "How do I change the {detail} on my profile?",
                "Please delete my account and all my {data}",
                "Someone {action} my account without permission",
                "I never got the email to reset my {detail}",
            ),
            {
                "time": (
                    "yesterday",
                    "this morning",
                    "the last update",
                    "Monday",
                    "I moved abroad",
                ),
                "detail": (
                    "password",
                    "email address",
                    "username",
                    "phone number",
                    "security question",
                ),
                "data": ("personal data", "saved addresses", "order history", "messages", "photos"),
                "action": ("logged into", "changed the password of", "took over", "used"),
            },
        ),
    },
    program={
        "name": "intents",
        "modules": [
            {
                "name": "route",
                "type": "ChainOfThought",
                "signature": "message -> intent",
                "instructions": "Route a customer support message to the team that handles it.",
                "fields": {
                    "message": "a customer's message",
                    "intent": "exactly one word: billing, shipping or account",
                },
            }
        ],
    },
)

TASKS = (TOPICS, INTENTS)


def _sentences(task: Task, label: str, rng: random.Random, count: int) -> list[str]:
    """``count`` distinct sentences of one label, drawn round-robin over its templates."""
    templates, slots = task.families[label]
    out: list[str] = []
    seen: set[str] = set()
    attempts = 0
    while len(out) < count:
        attempts += 1
        if attempts > 10_000:
            raise ValueError(f"{task.name}/{label}: templates too few for {count} sentences")
        template = templates[attempts % len(templates)]
        filled = template.format(**{slot: rng.choice(words) for slot, words in slots.items()})
        sentence = filled[0].upper() + filled[1:]
        if sentence not in seen:
            seen.add(sentence)
            out.append(sentence)
    return out


def make_task(task: Task, seed: int = 0) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """(train rows, dev rows), balanced per label, shuffled with ``seed``."""
    rng = random.Random(seed)
    train: list[dict[str, str]] = []
    dev: list[dict[str, str]] = []
    for label in task.families:
        n_train, n_dev = task.per_label_train, task.per_label_dev
        sentences = _sentences(task, label, rng, n_train + n_dev)
        rng.shuffle(sentences)
        rows = [{task.input_field: s, task.label_field: label} for s in sentences]
        train += rows[:n_train]
        dev += rows[n_train:]
    rng.shuffle(train)
    rng.shuffle(dev)
    return train, dev


def write_task(task: Task, directory: Path = HERE, seed: int = 0) -> list[Path]:
    train, dev = make_task(task, seed)
    paths = []
    for suffix, rows in (("", train), ("_dev", dev)):
        path = directory / f"{task.name}{suffix}.jsonl"
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
        paths.append(path)
    program = directory / f"{task.name}_program.json"
    program.write_text(json.dumps(task.program, indent=2) + "\n")
    return [*paths, program]


def main() -> None:
    for task in TASKS:
        for path in write_task(task):
            print(path)


if __name__ == "__main__":
    main()
