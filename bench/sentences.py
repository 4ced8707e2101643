"""Short texts the job benchmarks send: the kind of sentences an embedding job carries
(search queries, support messages, reviews, headlines), 2 to 30 words, drawn with a fixed
seed so that every run sends the same jobs."""

from __future__ import annotations

import random

SENTENCES = (
    "reset password",
    "cheap flights to Lisbon",
    "How do I cancel my subscription?",
    "Where is my order?",
    "The battery lasts all day.",
    "refund not received after two weeks",
    "A man is eating a piece of bread.",
    "A woman is playing the violin on a stage.",
    "Two dogs are running through a snowy field.",
    "best noise cancelling headphones 2026",
    "Can I change the delivery address after the order has shipped?",
    "The app crashes every time I open the camera.",
    "Central bank holds interest rates steady for a third month",
    "Great value for the price, would buy again.",
    "The screen cracked after one week of normal use.",
    "Is this jacket waterproof or only water resistant?",
    "python read csv skip first row",
    "Heavy rain expected across the north on Thursday",
    "I was charged twice for the same invoice last month and nobody has answered my emails.",
    "The hotel room was clean, quiet and close to the station, but breakfast was overpriced.",
    "Our team needs an export of all user activity for the audit before Friday.",
    "Local council approves plans for a new cycling bridge over the river",
    "The children are building a sandcastle on the beach.",
    "A chef is slicing onions in a busy kitchen.",
    "How long does shipping to Canada usually take?",
    "Love it!",
    "Stopped working after the latest firmware update.",
    "Customer service was friendly and solved the problem in five minutes.",
    "What is the difference between the standard and the pro plan?",
    "A cyclist rides along a mountain road at sunset.",
    "Scientists report a new method for recycling lithium batteries",
    "The delivery driver left the parcel in the rain and the box was soaked.",
    "vegetarian lasagna recipe",
    "Please add two-factor authentication to the mobile app.",
    "The meeting has been moved to Tuesday at ten.",
    "Shares of the chipmaker fell sharply after weaker than expected guidance",
    "A group of friends is hiking through a pine forest.",
    "The sound quality is fine, but the ear cushions get uncomfortable after an hour.",
    "Does the warranty cover accidental damage?",
    "Train services disrupted by signal failure near the city centre",
    "error 403 when uploading files larger than 10 MB",
    "The package arrived a day early and everything was well packed.",
    "A cat is sleeping on a sunny windowsill.",
    "I would like to upgrade my account but the payment page keeps timing out, can someone help?",
    "The museum reopens next month after a two-year renovation",
    "Too small, returning it.",
    "How do I export my contacts to a spreadsheet?",
    "Two men are playing chess in a park while a crowd watches.",
)


def texts_per_job(seed: int, jobs: int, smallest: int, largest: int) -> list[list[str]]:
    """`jobs` lists of `smallest` to `largest` sentences each, the same for the same seed."""
    draw = random.Random(seed)
    return [
        [draw.choice(SENTENCES) for _ in range(draw.randint(smallest, largest))]
        for _ in range(jobs)
    ]
