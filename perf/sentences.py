"""The benchmark texts: short (one 8-20 word English sentence), long (six consecutive ones, about 86
tokens), or mixed (three short to one long); and batches cut from them."""

import itertools
import math
from collections.abc import Iterator, Sequence
from typing import Literal, TypeVar, get_args

T = TypeVar("T")
TextMix = Literal["short", "mixed", "long"]
TEXT_MIXES: tuple[TextMix, ...] = get_args(TextMix)
SENTENCES_PER_LONG_TEXT = 6

SENTENCES = (
    "The river flooded the lower fields after three days of heavy autumn rain.",
    "She replaced the laptop battery herself and saved almost a hundred dollars.",
    "Our team shipped the new billing dashboard two weeks ahead of schedule.",
    "Honeybees communicate the location of flowers to each other by dancing.",
    "The central bank raised interest rates by a quarter of a percentage point.",
    "He forgot his umbrella on the train again this morning.",
    "Fresh basil, ripe tomatoes and good olive oil make a simple summer salad.",
    "The telescope captured faint light from a galaxy billions of years old.",
    "Please restart the router if the wireless connection keeps dropping out.",
    "The museum reopened its ancient Egypt wing after a long renovation.",
    "Marathon runners often struggle most between the thirtieth and thirty-fifth kilometre.",
    "A small bakery on the corner sells the best croissants in town.",
    "The committee postponed its vote until more safety data becomes available.",
    "Children learn languages faster when they hear them spoken at home every day.",
    "Volcanic ash grounded hundreds of flights across northern Europe for a week.",
    "The database migration failed because an index was missing on the orders table.",
    "My grandmother still writes letters by hand to her friends abroad.",
    "Electric buses are quieter and cheaper to run than their diesel predecessors.",
    "The orchestra rehearsed the symphony's final movement late into the night.",
    "Sea turtles return to the same beach where they hatched to lay eggs.",
    "A sudden frost damaged most of the vineyard's grapes before the harvest.",
    "The startup raised its first round of funding from two angel investors.",
    "Regular stretching can reduce back pain for people who sit all day.",
    "Thick fog delayed the ferry crossing for more than two hours.",
    "The novel follows three generations of a family living in coastal Maine.",
    "Customers complained that the updated mobile app drains their phone batteries quickly.",
    "Solar panels on the school roof now cover most of its electricity needs.",
    "The referee stopped the match when lightning appeared over the stadium.",
    "Our neighbour's dog barks at every delivery van that passes the house.",
    "Researchers found microplastics in snow samples taken from remote mountain peaks.",
    "The recipe calls for two cups of flour and a pinch of salt.",
    "Train tickets are cheaper if you book them at least a month in advance.",
    "The city council approved a new bicycle lane along the main avenue.",
    "A cracked pipe under the kitchen sink slowly flooded the basement.",
    "Quantum computers could one day break encryption schemes that protect online banking.",
    "The hikers reached the summit just before the clouds rolled in.",
    "Many small farms now sell their vegetables directly to customers through weekly boxes.",
    "The printer on the third floor has been jammed since Monday.",
    "Her documentary about urban foxes won an award at the film festival.",
    "Inflation eased slightly last month as fuel and food prices fell.",
    "The software update fixes a bug that caused occasional crashes on startup.",
    "Penguins huddle together in tight groups to survive the Antarctic winter.",
    "The library extended its opening hours during the exam period.",
    "A well-written error message tells the user what went wrong and how to fix it.",
    "Wildfires spread quickly through the dry forest after weeks without rain.",
    "The chess champion defended her title in a tense final game.",
    "Drinking enough water helps the body regulate its temperature on hot days.",
    "The warehouse robots sort thousands of parcels every hour without rest.",
    "He learned to play the guitar by watching videos online.",
    "The bridge will be closed to traffic for repairs over the holiday weekend.",
    "Scientists sequenced the genome of a rare orchid found only on one island.",
    "Our quarterly report shows steady growth in subscriptions across all regions.",
    "The old lighthouse keeper kept a detailed log of every passing ship.",
    "Noise-cancelling headphones make long flights far more bearable for many travellers.",
    "The kitten fell asleep in a cardboard box next to the radiator.",
    "Local elections saw the highest turnout in more than twenty years.",
    "The compiler rejected the program because two functions shared the same name.",
    "Coral reefs are bleaching as ocean temperatures keep rising year after year.",
    "She painted the fence bright blue to match the front door.",
    "Public transport was free for one day to celebrate the new metro line.",
    "The surgeon explained the risks of the operation in plain language.",
    "Autumn leaves blocked the gutters and caused water to overflow the roof.",
    "The language model summarised the long contract into five clear bullet points.",
    "A quiet walk in the park is sometimes the best cure for a headache.",
)


def distinct_batches(items: Sequence[T], batch: int) -> list[list[T]]:
    """Consecutive batches of `batch` items, cycling through `items`, until they would repeat."""
    cycled = itertools.cycle(items)
    return [list(itertools.islice(cycled, batch)) for _ in range(len(items) // math.gcd(len(items), batch))]


def texts(mix: TextMix) -> tuple[str, ...]:
    """As many texts as SENTENCES, in a fixed order, so every scheme gets the same ones."""
    count = len(SENTENCES)
    long = tuple(" ".join(SENTENCES[(i + k) % count] for k in range(SENTENCES_PER_LONG_TEXT)) for i in range(count))
    if mix == "short":
        return SENTENCES
    if mix == "long":
        return long
    return tuple(long[i] if i % 4 == 3 else SENTENCES[i] for i in range(count))


def new_texts(sentences_each: int = 1) -> Iterator[str]:
    """Texts never sent before in this run (the cache answers none): `sentences_each` consecutive
    sentences with a counter appended."""
    n = len(SENTENCES)
    return (" ".join(SENTENCES[(i + k) % n] for k in range(sentences_each)) + f" #{i}" for i in itertools.count())


def distinct_texts(count: int) -> list[str]:
    """`count` (up to 64 x 63) distinct short texts: the first half of one sentence and the second half
    of another, as long as the benchmark's short texts."""
    halves = [(s.split()[: len(s.split()) // 2], s.split()[len(s.split()) // 2 :]) for s in SENTENCES]
    n = len(SENTENCES)
    found = [" ".join([*halves[i % n][0], *halves[(i % n + 1 + i // n) % n][1]]) for i in range(count)]
    if len(set(found)) != count:
        raise ValueError(f"only {len(set(found))} of {count} texts are distinct")
    return found
