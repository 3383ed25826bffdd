"""Customer messages, one per line as `date | user | text`, each with a hidden label (shared by aggregation, listing).

A label is never written in the record: it has to be read from the text. Each label has many templates with slot
fills; the slots (items, days, people, amounts) are shared by every label, and the label words themselves (and their
stems: "ship", "bill", ...) never occur, so no keyword search finds a label.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import NamedTuple

from rlm_local.eval.families.text import Context, Layout, cap, dates

SCHEMES: dict[str, tuple[str, ...]] = {
    "sentiment": ("positive", "negative", "neutral"),
    "topic": ("billing", "shipping", "account", "product question", "praise"),
}
# Stems that no record text may contain: the labels, and the words questions use for them.
FORBIDDEN_STEMS = (
    "positive", "negative", "neutral", "bill", "ship", "account", "product", "question", "prais", "complain",
    "compliment", "sentiment", "topic",
)  # fmt: skip

SLOTS: dict[str, tuple[str, ...]] = {
    "item": (
        "blender", "desk lamp", "pair of headphones", "rain jacket", "coffee grinder", "phone case", "backpack",
        "set of knives", "standing fan", "kettle", "yoga mat", "bike light", "printer", "wall clock", "garden hose",
        "air fryer", "electric toothbrush", "office chair",
    ),
    "when": (
        "yesterday", "last Tuesday", "on Monday", "this morning", "two weeks ago", "over the weekend", "last night",
        "on the 3rd", "last month", "earlier today",
    ),
    "n": ("two", "three", "four", "five", "six"),
    "amount": ("$12.99", "$48.00", "€23.50", "$7.25", "£19.99", "$129.00", "€64.10"),
    "days": ("five days", "two weeks", "ten days", "a month", "eight days"),
    "person": (
        "Dana", "the agent on chat", "Marcus from support", "the lady on the phone", "your rep Priya",
        "Tom at the help desk",
    ),
    "place": ("the porch", "my neighbour's house", "the wrong building", "the front desk", "the mailroom", "the shed"),
    "feature": ("the timer", "the night mode", "the second speed setting", "the auto-off", "Bluetooth pairing"),
    "store": ("Leeds", "high street", "riverside", "city centre", "airport"),
    "region": ("Northern Ireland", "the Scottish Highlands", "the Channel Islands", "rural Wales", "the Isle of Man"),
}  # fmt: skip

TEMPLATES: dict[str, tuple[str, ...]] = {
    "positive": (
        "The {item} turned up {when} and it's even better than the photos. Really glad I went for it.",
        "{person} sorted out my refund in about five minutes, what a star. Thank you!",
        "Loving the {item} so far, {feature} works like a charm and it looks great.",
        "Third order from you and once again everything was spot on. Happy customer here.",
        "Parcel came a day early and the {item} was packed so carefully. Great job, team.",
        "I was nervous about ordering online but the {item} is perfect. Would buy again.",
        "Had a small issue with the {item}, support fixed it {when} without any fuss. Brilliant.",
        "My daughter uses the {item} every day now, best purchase we've made this year.",
        "The new app update is lovely, checkout took seconds {when}.",
        "Swapped the {item} for a bigger size and the exchange was painless. Cheers!",
        "Quality of the {item} is superb for the price, really impressed.",
        "Quick reply from {person} {when}, answered everything clearly. Much appreciated.",
        "The {item} has survived {n} months of heavy use and still works like new.",
        "Delighted with the {item}, the colour is exactly what I hoped for.",
        "Thanks for the discount code, made my week. The {item} is fantastic.",
        "Everything arrived in one box {when}, neat and tidy. Top marks from me.",
        "Honestly the easiest return I've ever done. Refund landed {when}.",
        "Five stars for the {item}. Set it up in ten minutes and it runs beautifully.",
    ),
    "negative": (
        "The {item} arrived broken again, {n} times this month now. I'm done.",
        "Waited {days} for a reply from support and still nothing. Unacceptable.",
        "I can't believe the package arrived damaged again, third time this year.",
        "The {item} stopped working after {n} days. Really poor quality.",
        "You took {amount} twice for one order and nobody is answering the phone.",
        "{person} promised a call back {when}. It never happened. Very disappointing.",
        "The courier left my {item} at {place} in the rain. It's ruined.",
        "Your app logged me out {n} times today and lost my basket each time. Useless.",
        "Ordered the {item} {days} ago and it still hasn't shown up. Fed up.",
        "The {item} smells of burning plastic whenever I switch it on. Not happy at all.",
        "Refund was supposed to take three working days, it's been {days}. Where is my money?",
        "Terrible experience on chat {when}, I was passed around {n} times.",
        "The {item} looks nothing like the pictures. Cheap and flimsy.",
        "Half my order missing and the tracking says delivered. This is a joke.",
        "Why is {feature} on the {item} so flaky? It fails every other day.",
        "Cancelled my subscription {when} and you still took {amount}. Sort it out.",
        "Worst purchase this year, the {item} fell apart in a week. Total waste of money.",
        "Rude reply from {person} {when}. I won't be ordering from you again.",
    ),
    "neutral": (
        "Ordered the {item} {when}, tracking says it should be here by Friday.",
        "Can I change the delivery address on an order that's already been packed?",
        "What are your opening hours for the {store} store over the holidays?",
        "I'd like to update the phone number on my profile, where do I do that?",
        "Does the {item} come in a larger size, or only the one listed?",
        "Returning the {item} as it's the wrong colour, label printed {when}.",
        "Received the {item} {when}. Haven't tried it yet, will report back later.",
        "Is there a paper invoice in the box, or is it sent by email?",
        "Please cancel the second {item} on my order, I only need one.",
        "Just confirming that my order from {when} includes the charger for the {item}.",
        "Noticed the price of the {item} changed since {when}. Just checking which one applies.",
        "How long does {feature} usually take to set up on the {item}?",
        "Moving house next month, will update my address once I have the new one.",
        "My order reference is in the email from {when} if you need it.",
        "Can I collect the {item} from the {store} store instead of having it delivered?",
        "Just to check, the {item} I bought {when} is the 2023 model, right?",
        "Forwarding the receipt for the {item} as requested by {person} earlier.",
        "Do you deliver to {region}, and is it the same price as the mainland?",
    ),
    "billing": (
        "I was charged twice for the {item} {when}, please reverse one of them.",
        "Where can I download an invoice for my last order? I need it for expenses.",
        "My card statement shows {amount} but checkout said less. Which is right?",
        "Still waiting on the refund for the {item}, my bank says nothing has come in.",
        "Why did my monthly plan go up to {amount} without any notice at all?",
        "The discount code didn't come off the total {when}, can you credit the difference?",
        "Can I pay for the {item} in instalments, or is it full price upfront?",
        "You took {amount} from my card for an order I cancelled {when}.",
        "Please send a VAT receipt for the {item}, the one attached has the wrong address.",
        "Gift card balance shows zero but I've only used half of it so far.",
        "Was I charged for delivery on the {item}? It was meant to be free over {amount}.",
        "There's a pending payment of {amount} from {when} I don't recognise.",
        "Could you change the payment method on my subscription to PayPal?",
        "The {item} was on sale for {amount} but I paid the full price {when}.",
        "Received two invoices for the same order, which one should I pay?",
        "Great service as always, but the receipt for the {item} lists the wrong amount.",
    ),
    "shipping": (
        "The parcel with my {item} has been stuck at the depot for {days}.",
        "Courier left the box at {place} instead of my door {when}.",
        "Tracking hasn't updated since {when}, is my {item} lost somewhere?",
        "Can you send the {item} by express? I need it before the weekend.",
        "The driver said nobody was home {when}, but I was in all day.",
        "The box was crushed on arrival and the {item} inside is dented.",
        "Do you deliver to {region}? The checkout won't accept my postcode.",
        "Half my order came {when}, when will the {item} follow on?",
        "The delivery window says 8am to 8pm. Can I get a narrower slot?",
        "Parcel marked as delivered {when}, but it's not here and the neighbours haven't seen it.",
        "Lovely packaging, but the {item} took {days} to get here from you.",
        "Can the courier leave the {item} at {place} if I'm out at work?",
        "I got someone else's parcel, the label has a different name on it.",
        "How long does standard delivery to {region} usually take?",
        "The tracking link in the email from {when} just shows an error page.",
        "The van came {when} with my {item}, great, but the second box is missing.",
    ),
    "account": (
        "I can't log in since {when}, the reset link never arrives.",
        "How do I change the email address on my profile? The old one is closed.",
        "Someone changed my password without me knowing. Please lock it.",
        "Please delete my data and close my profile, I no longer need it.",
        "Two-factor codes stopped reaching my phone {when}, so I can't get in.",
        "I made two logins by mistake, can you merge the order history into one?",
        "The app keeps saying my username is taken, but it's mine already.",
        "Can I add my partner as a second user on the same plan as me?",
        "My saved addresses vanished from the profile page {when}.",
        "Locked out after {n} wrong password attempts, how long until I can try again?",
        "I'd like to unsubscribe from the newsletters but keep my login.",
        "Changed my surname recently, how do I update it on my profile?",
        "The sign-in page loops back to itself every time I enter my details.",
        "I got an email saying my login was used from another country {when}. Wasn't me.",
        "Love the {item}, but I can't see the order in my history when I sign in.",
        "My loyalty points disappeared from my profile after I reset my password.",
    ),
    "product question": (
        "Does the {item} come with a warranty card in the box or online only?",
        "Is the {item} dishwasher safe, or should I wash it by hand each time?",
        "Will the {item} work with a 110V outlet when I take it to the States?",
        "What's the difference between the small and the large {item}, apart from size?",
        "Can the {item} be used outdoors, or is it only for indoor use?",
        "Does {feature} on the {item} need an extra app on my phone to work?",
        "How heavy is the {item}? The listing doesn't say and I need to carry it.",
        "Are the replacement parts for the {item} sold separately, and where?",
        "Is the {item} suitable for a child of {n} years old, or too fiddly?",
        "What material is the {item} made of? I have a nickel allergy.",
        "Can I charge the {item} with a USB-C cable, or does it need its own plug?",
        "Is the black {item} the same model as the silver one, just a different colour?",
        "How noisy is the {item} at full power? I live in a small flat.",
        "Does the {item} fold flat for storage under a bed or in a cupboard?",
        "Bought the {item} {when} and love it. Does it also take the larger filters?",
        "Roughly how long does the battery in the {item} last on one charge?",
    ),
    "praise": (
        "Just wanted to say thanks, {person} was brilliant with me {when}.",
        "Your team is fantastic, keep it up! You always make it feel personal.",
        "Huge thanks to {person} for going above and beyond with my order.",
        "Every time I contact you it's a pleasure. Lovely, patient people.",
        "The handwritten note in the box made my day, such a nice touch.",
        "Shoutout to the staff at the {store} store, so friendly and patient.",
        "I've recommended you to all my friends, you've been wonderful.",
        "Thank you for being so kind when I was confused about my order {when}.",
        "Ten years as a customer and you still get it right. Well done.",
        "{person} on the phone {when} was a credit to the company, thank you.",
        "The {item} is gorgeous and the service was just as good. Thank you all.",
        "Really appreciate how quickly the team replied {when}, you're the best.",
        "Whoever packed my {item} deserves a raise, it was wrapped like a gift.",
        "Brilliant experience from start to finish, thank you so much.",
        "Kudos to your support staff, they made a stressful day much easier.",
        "Just a note to say the {store} team were lovely to my dad {when}.",
    ),
}


class Message(NamedTuple):
    user: str
    label: str
    text: str


RECORDS = Layout(str_sep="\n")  # str: one record a line; list: one record an item; dict: record id -> record


def record_text(rng: random.Random, label: str) -> str:
    """One message whose label is `label`, slots filled at random."""
    template = rng.choice(TEMPLATES[label])
    return cap(template.format(**{k: rng.choice(v) for k, v in SLOTS.items() if "{" + k + "}" in template}))


def line_cost(text: str, shape: str) -> int:
    """What one record adds to the context: `date | user_0000 | text`, plus its key or line break."""
    line = 10 + 3 + 9 + 3 + len(text)
    return line + (len("record-00000") if shape == "dict" else 1 if shape == "str" else 0)


def fill_messages(
    rng: random.Random,
    shape: str,
    target: int,
    draw: Callable[[], tuple[str, str]],
    fixed: Sequence[tuple[str, str]] = (),
) -> list[Message]:
    """Messages from `draw() -> (user, label)`, with the `fixed` (user, label) messages at random places among them,
    until the context reaches `target` characters."""
    placed = [Message(user, label, record_text(rng, label)) for user, label in fixed]
    size = sum(line_cost(m.text, shape) for m in placed)
    out: list[Message] = []
    while size < target:
        user, label = draw()
        out.append(Message(user, label, record_text(rng, label)))
        size += line_cost(out[-1].text, shape)
    for message in placed:
        out.insert(rng.randint(0, len(out)), message)
    return out


def render(rng: random.Random, messages: Sequence[Message], shape: str) -> Context:
    """The messages as the context: dated in order, `date | user | text`."""
    days = dates(rng, len(messages))
    pieces = [
        (f"record-{i:05d}", f"{day} | {m.user} | {m.text}")
        for i, (day, m) in enumerate(zip(days, messages, strict=True))
    ]
    return RECORDS.build(pieces, shape)
