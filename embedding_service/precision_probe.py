"""auto's built-in probe: times one batch of short texts at fp32 and at bf16 on the loaded model, and compares
bf16's vectors to fp32's on those texts and a few long ones. It costs about a second (docs/precision.md)."""

import time

import numpy as np

from embedding_service.encoder import Encoder, FloatArray, sentence_vectors
from embedding_service.precision import Measurement
from embedding_service.tokenizer import Tokenizer

# One batch of 32 short texts, the shape of the busiest workload; none of them is a benchmark or test text.
SHORT = (
    "Where is the nearest pharmacy?",
    "The printer jammed again.",
    "I loved the ending of that film.",
    "Our flight was delayed by four hours.",
    "Can you recommend a good Italian restaurant nearby?",
    "The update broke the login page.",
    "Thanks, that fixed it!",
    "Tomorrow will be sunny with a light breeze.",
    "Unfortunately the parcel never arrived.",
    "How do I cancel my subscription?",
    "The keynote speaker ran out of time.",
    "Prices went up again this month.",
    "She plays the violin in a local orchestra.",
    "The new bridge opens to traffic next spring.",
    "A refund was issued to your card.",
    "My laptop fan is unusually loud.",
    "The goalkeeper was injured in the warm-up.",
    "Vaccination rates rose across the region.",
    "Is breakfast included in the room rate?",
    "The server returned an unexpected error.",
    "We adopted a rescue dog last week.",
    "The lecture notes are online now.",
    "That was the worst coffee I have ever had.",
    "The museum is free on the first Sunday.",
    "Traffic was light on the motorway.",
    "Please confirm your email address.",
    "The harvest was smaller than expected.",
    "He learned to code at fifty.",
    "The battery charges in under an hour.",
    "Rain is forecast for the weekend.",
    "The contract renews automatically each year.",
    "Ok.",
)
# Long texts, where reduced precision has more arithmetic to lose accuracy in.
LONG = (
    "The first time we visited the valley the river was low and we could walk across the stones to the far "
    "bank, where an old mill stood half hidden by alders; years later, after the dam upstream was removed, "
    "the water ran fast and deep, the mill had been turned into a small museum, and the path we used to take "
    "had become a cycle route busy with families every weekend.",
    "When the service started timing out under load, the team first suspected the database, but the slow "
    "query log was empty; profiling showed that each request rebuilt a large configuration object from disk, "
    "so caching it once at start-up cut the median latency by two thirds and removed the timeouts entirely.",
    "I bought this vacuum after reading dozens of reviews, and for the first month it was excellent, quiet "
    "and powerful with a battery that lasted the whole flat; then the brush roll began to squeal, the app lost "
    "the floor map twice, and support took eleven days to answer a simple question about spare parts.",
    "The report concludes that investment in early childhood education returns more to society than almost "
    "any other public spending, through better health, higher earnings and lower crime, but it warns that "
    "the benefits depend on well-trained staff, small groups and programmes that last more than one year.",
)
ROUNDS = 3  # timed calls at each precision, alternated so that a busy moment hurts both alike


def measure(fp32: Encoder, bf16: Encoder, tokenizer: Tokenizer) -> Measurement:
    """Each encoder's best time for the short batch, after one untimed call; bf16's cosine to fp32 on every
    probe text."""
    short = [t.ids for t in tokenizer(list(SHORT))]
    long = [t.ids for t in tokenizer(list(LONG))]
    best = {"fp32": np.inf, "bf16": np.inf}
    vectors: dict[str, FloatArray] = {}
    for round_ in range(ROUNDS + 1):
        for name, encoder in (("fp32", fp32), ("bf16", bf16)):
            started = time.perf_counter()
            vectors[name] = sentence_vectors(encoder, short)
            if round_:  # the first call of each is a warm-up
                best[name] = min(best[name], time.perf_counter() - started)
    fp32_all = np.concatenate([vectors["fp32"], sentence_vectors(fp32, long)])
    bf16_all = np.concatenate([vectors["bf16"], sentence_vectors(bf16, long)])
    cosines = (fp32_all * bf16_all).sum(1) / (np.linalg.norm(fp32_all, axis=1) * np.linalg.norm(bf16_all, axis=1))
    return Measurement(
        fp32_ms=round(float(best["fp32"]) * 1e3, 3),
        bf16_ms=round(float(best["bf16"]) * 1e3, 3),
        min_cosine=float(cosines.min()),
        mean_cosine=float(cosines.mean()),
        texts=len(cosines),
    )
