"""Multi-hop over a folder of reports: who won (or came second in) one event, asked in other words than the report's.

The question says "the sailing race held in the harbour town in 2021"; the report says "the 2021 regatta at Port
Elling", and Port Elling is only described (fishing boats, a quay). The same event in other years, other events of
that year, the same event elsewhere and the runner-up are the distractors; notices pad the folder to size.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from itertools import product

from rlm_local.eval.families.text import MONTHS, OBJECTS, Draft, Layout, cap, fill, piece_size, prose, scatter, slug

VARIANTS = ("winner", "runner_up")
YEARS = tuple(range(2001, 2025))


@dataclass(frozen=True)
class Kind:
    asked: str  # how a question names the event
    written: str  # how a report names it
    scenes: tuple[str, ...]
    wins: tuple[str, ...]  # clauses with {w}
    seconds: tuple[str, ...]  # clauses with {r}
    win_queries: tuple[str, ...] = ()
    second_queries: tuple[str, ...] = ()


@dataclass(frozen=True)
class Venue:
    name: str
    where: str  # how a question places it
    scenes: tuple[str, ...]  # how a report shows it, without the question's words


WIN_QUERIES = (
    "Who won the {asked} held {where} in {year}?",
    "In {year}, who came out on top at the {asked} {where}?",
    "Which competitor won the {year} {asked} {where}?",
)
SECOND_QUERIES = (
    "Who finished second in the {asked} held {where} in {year}?",
    "Who was the runner-up at the {year} {asked} {where}?",
    "In {year}, who came second at the {asked} {where}?",
)
KINDS = (
    Kind(
        "sailing race",
        "regatta",
        (
            "A stiff breeze kept the fleet heeled over for most of the afternoon.",
            "Spinnakers went up as the boats rounded the last buoy.",
            "Several crews were caught out by the turning tide.",
        ),
        ("first across the line was {w}", "{w} took line honours", "{w} led the fleet home"),
        ("{r} finished second", "{r} trailed by a boat length in second", "{r} was second to the gun"),
    ),
    Kind(
        "42-kilometre run",
        "marathon",
        (
            "Runners set off in a chilly dawn, with water stations along the way.",
            "The course climbed twice before the final descent to the finish.",
            "Crowds cheered the leading group through the final mile.",
        ),
        ("{w} broke the tape first", "{w} crossed the finish ahead of everyone", "victory went to {w}"),
        ("{r} was second home", "{r} finished second, a few strides back", "{r} took the runner-up spot"),
    ),
    Kind(
        "chess tournament",
        "rapid-play open",
        (
            "Players sat hunched over sixty-four squares while the clocks ticked.",
            "More than one game ended in a surprise checkmate.",
            "Two visiting grandmasters drew a crowd around the front boards.",
        ),
        ("{w} finished first in the standings", "the title went to {w}", "{w} was crowned champion after round nine"),
        ("{r} ended half a point back in second", "{r} was the runner-up", "{r} finished second on tie-break"),
    ),
    Kind(
        "baking competition",
        "bake-off",
        (
            "The judges tasted sponges, tarts and sourdough loaves.",
            "Ovens were running from first light.",
            "One entrant's sugar sculpture collapsed minutes before judging.",
        ),
        ("the judges named {w} champion", "{w} lifted the golden whisk", "first prize went to {w}"),
        ("{r} was runner-up", "{r} came a close second", "{r} took second prize"),
    ),
    Kind(
        "science fair",
        "young researchers' exhibition",
        (
            "Tables were covered in posters, circuit boards and jars of pond water.",
            "One project measured how fast ice melts under different lids.",
            "Visitors queued to see a working model of a water wheel.",
        ),
        ("first prize went to {w}", "{w} was named best young researcher", "the jury picked {w} as overall winner"),
        ("{r} was highly commended in second", "{r} took the silver medal", "second prize went to {r}"),
    ),
    Kind(
        "poetry award",
        "Verse Prize",
        (
            "The shortlist ranged from sonnets to lengthy prose pieces.",
            "Readings filled the upstairs room of the old inn.",
            "One slim collection about winter birds charmed the audience.",
        ),
        ("the jury chose {w}", "{w} received the prize", "{w} was announced as the winner"),
        ("{r} was runner-up", "{r} came second", "second place went to {r}"),
    ),
    Kind(
        "bicycle race",
        "cyclo-sportive",
        (
            "Riders in the peloton stayed together until the final climb.",
            "A puncture on the descent cost one favourite several minutes.",
            "The sprint to the line was decided by a wheel's width.",
        ),
        ("{w} won the sprint to the line", "{w} was fastest over the course", "{w} took the overall title"),
        ("{r} was second", "{r} finished a wheel behind in second", "{r} crossed in second"),
    ),
    Kind(
        "rowing club",
        "Oar Society ballot",
        (
            "The annual meeting was held in the boathouse after an outing on the water.",
            "Members debated the cost of a new eight before the ballot.",
            "The outgoing captain thanked the crews for a busy season.",
        ),
        ("members voted {w} in as captain", "{w} was elected captain", "the ballot went to {w}"),
        ("{r} was the other nominee", "{r} lost by a handful of votes", "{r} finished second in the count"),
        (
            "Who was chosen to lead the rowing club {where} in {year}?",
            "In {year}, whom did the rowing club {where} pick to lead it?",
        ),
        ("Who was the defeated candidate when the rowing club {where} chose who would lead it in {year}?",),
    ),
)
VENUES = (
    Venue(
        "Port Elling",
        "in the harbour town",
        ("Fishing boats lined the quay at Port Elling.", "Gulls wheeled over the moorings of Port Elling."),
    ),
    Venue(
        "Highcombe",
        "in the mountain village",
        (
            "Highcombe sits up among the fells, at the head of a steep pass.",
            "Snow still lay on the peaks above Highcombe.",
        ),
    ),
    Venue(
        "Caddow",
        "in the university city",
        (
            "Lecturers and students from the colleges of Caddow turned out.",
            "Caddow's college quads emptied for the day.",
        ),
    ),
    Venue(
        "Oldmarsh",
        "in the market town",
        ("In Oldmarsh the cattle ring and the Saturday stalls were busier than usual.", "Oldmarsh's traders did well."),
    ),
    Venue(
        "Brennick",
        "on the island",
        (
            "The ferry brought spectators over the sound to Brennick.",
            "Brennick is cut off from the mainland at high tide.",
        ),
    ),
    Venue(
        "Varnmere",
        "at the lakeside resort",
        ("Hotels along the shore of the mere at Varnmere were full.", "Pleasure boats bobbed on the mere at Varnmere."),
    ),
    Venue(
        "Stanmoor",
        "in the mining town",
        ("Stanmoor still lives in the shadow of its pit headframe.", "The slag heaps of Stanmoor made a grandstand."),
    ),
    Venue(
        "Kelby",
        "in the cathedral city",
        (
            "Crowds gathered in the close beneath the twin spires of Kelby.",
            "The minster bells of Kelby rang all morning.",
        ),
    ),
)
FIRST = (
    "Mira", "Tomas", "Ines", "Oskar", "Lena", "Felix", "Nadia", "Rafael", "Greta", "Jonah", "Alma", "Viktor", "Esme",
    "Hugo", "Maren", "Silas", "Petra", "Leon", "Ada", "Bruno", "Clara", "Dmitri", "Elin", "Farid", "Hana", "Ivo",
    "Juno", "Kasper", "Lotte", "Milo", "Nora", "Otto", "Priya", "Quentin", "Rosa", "Stellan", "Tilde", "Ulrich",
    "Vera", "Wim",
)  # fmt: skip
LAST = (
    "Kessel", "Vey", "Arden", "Brask", "Corran", "Dahl", "Ember", "Falk", "Gorse", "Hallam", "Iver", "Jessop",
    "Kirrin", "Lorne", "Nyberg", "Orme", "Penhale", "Quill", "Roskel", "Sable", "Tarrant", "Ulven", "Voss", "Wray",
    "Yarrow", "Zell", "Ashby", "Castell", "Dunlin", "Everard", "Fenwick", "Garrow", "Holt", "Ibsen", "Jarvis",
    "Lindqvist", "Morrow", "Brook", "Teague", "Sorrel",
)  # fmt: skip
ORGANISERS = ("Councillor Pennick", "Dr Ashdown", "Mrs Thorne", "Mr Cobb", "Canon Mallory", "Ms Pryce", "Mr Whitlow")
QUOTES = (
    "We could not have asked for more",
    "It was a real community effort",
    "The standard gets higher every season",
    "Next time will be even bigger",
    "Everyone who took part should be proud",
)
OPENINGS = (
    "The {year} {written} at {venue} drew {n} entrants and a large crowd.",
    "{n} entrants signed up for the {year} {written} at {venue}, a record for the organisers.",
    "The {written} at {venue} came round again in {month} {year}, with {n} entrants.",
)
HEADLINES = (
    "{venue} {written}, {year}: the full report",
    "Report: the {year} {written} at {venue}",
    "{year} {written}",
)
NOTICES = (
    "Parish notice: {thing}",
    "Weather summary for {month} {year}",
    "Minutes of the {month} meeting",
    "Library opening hours, {month} {year}",
    "Letters: {thing}",
)
REPORTS = Layout(str_header="### {name}\n", str_sep="\n\n")  # str: files under headers; list: texts; dict: path -> text


@dataclass(frozen=True)
class Event:
    kind: Kind
    venue: Venue
    year: int
    winner: str
    second: str


def draft(rng: random.Random, target: int, shape: str, variant: str) -> Draft:
    kind = rng.choice(KINDS)
    venue, elsewhere = rng.sample(VENUES, 2)
    year = rng.choice(YEARS)
    names = iter(" ".join(p) for p in rng.sample(list(product(FIRST, LAST)), len(FIRST) * len(LAST)))
    scale = 1 + target // 400_000  # more distractors in bigger folders
    other_years = rng.sample([y for y in YEARS if y != year], min(len(YEARS) - 1, rng.randint(2, 3) * scale))
    other_kinds = rng.sample([k for k in KINDS if k is not kind], rng.randint(2, 3))
    wanted = [(kind, venue, year), (kind, elsewhere, year)]
    wanted += [(kind, venue, y) for y in other_years] + [(k, rng.choice(VENUES), year) for k in other_kinds]
    taken = set(wanted)
    while len(wanted) < min(60, 6 + target // 25_000):  # unrelated events, as noise
        key = (rng.choice(KINDS), rng.choice(VENUES), rng.choice(YEARS))
        if key not in taken:
            taken.add(key)
            wanted.append(key)
    events = [Event(k, v, y, next(names), next(names)) for k, v, y in wanted]
    low, high = piece_size(target, 600, 3_500)
    reports = [(_path(e), _report(rng, e, rng.randint(low, high))) for e in events]
    serial = iter(range(1_000_000))

    def notice(wanted: int) -> tuple[str, str]:
        y, m = rng.choice(YEARS), rng.randrange(12)
        title = rng.choice(NOTICES).format(thing=rng.choice(OBJECTS), month=MONTHS[m], year=y)
        body = prose(rng, min(wanted, rng.randint(low, high)) - len(title))
        return f"notices/{y}-{m + 1:02d}-{next(serial):04d}.md", f"# {title}\n\n{body}"

    notices = fill(REPORTS, shape, target, reports, notice)[len(reports) :]
    folder = scatter(rng, notices, reports)
    asked, runner_up = events[0], variant == "runner_up"
    gold = asked.second if runner_up else asked.winner
    templates = (kind.second_queries or SECOND_QUERIES) if runner_up else (kind.win_queries or WIN_QUERIES)
    query = rng.choice(templates).format(asked=kind.asked, where=venue.where, year=year)
    related = [e for e in events[1:] if e.kind is kind or e.year == year]
    wrong = [asked.winner if runner_up else asked.second]
    wrong += [e.second if runner_up else e.winner for e in related]
    return Draft(query, REPORTS.build(folder, shape), gold, "contains", tuple(wrong))


def _path(e: Event) -> str:
    return f"reports/{e.year}-{slug(e.venue.name)}-{slug(e.kind.written)}.md"


def _report(rng: random.Random, e: Event, size: int) -> str:
    """A news report of one event: opening, the place, the scene, the result, a quote, then ordinary prose."""
    fields = {"year": e.year, "written": e.kind.written, "venue": e.venue.name, "month": rng.choice(MONTHS)}
    fields["n"] = rng.randint(12, 140)
    result = (
        f"{cap(rng.choice(e.kind.wins).format(w=e.winner))}, while {rng.choice(e.kind.seconds).format(r=e.second)}."
    )
    quote = f'"{rng.choice(QUOTES)}," said {rng.choice(ORGANISERS)}, who helped to organise the day.'
    body = [
        rng.choice(OPENINGS).format(**fields),
        rng.choice(e.venue.scenes),
        *rng.sample(e.kind.scenes, 2),
        result,
        quote,
    ]
    head = f"# {cap(rng.choice(HEADLINES).format(**fields))}\n\n{' '.join(body[:4])}\n\n{' '.join(body[4:])}"
    rest = size - len(head)
    return head if rest < 80 else f"{head}\n\n{prose(rng, rest)}"
