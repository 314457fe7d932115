"""Captions for the embedded MNIST digits, so a text-to-image teacher can be trained and measured on them.

Each caption names the digit ("a handwritten 7", "the digit seven", "number 7, thick strokes"); about
half also state the stroke width when the image's ink is in the thinnest or thickest third of the
training set. Training captions come from a small grammar (``training_phrasing``): a quarter are the
fixed ``TRAIN_PHRASINGS``, the rest are composed from a frame, a determiner, an adjective and a noun
around the digit, so the digit sits at many positions among many other words and a model learns to find
it rather than memorise a dozen sentences (with the twelve sentences alone the mini SD's UNet drew the
prompted digit for 1.00 of training wordings and 0.68 of new ones). ``HELD_OUT_PHRASINGS`` measure
prompt adherence on wording the models never saw: the grammar never produces them, nor their new words
("picture", "scanned", "by hand", "one" as a count).

The digit a caption asks for is known by construction, so "prompt adherence" is the shipped MNIST
classifier's accuracy against it (docs/benchmarks.md).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

RESOLUTION = 32  # the mini SD's images (pipelines/mini_sd.py): MNIST's 28x28 padded by 2 on every side
PAD = 2

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")

# {d}: the numeral, {w}: the word. Kept short: the text encoder reads at most MAX_CAPTION_CHARS characters.
TRAIN_PHRASINGS = (
    "a handwritten {d}", "the digit {w}", "number {d}", "a {w}", "the number {w}", "digit {d}",
    "a handwritten {w}", "an image of a {d}", "{w}", "{d}", "a drawing of the digit {d}", "the numeral {w}",
)
HELD_OUT_PHRASINGS = ("a picture of the number {d}", "the handwritten digit {w}", "a scanned {w}", "one {d}, by hand")
# The grammar of composed training captions: FRAME around (DETERMINER ADJECTIVE NOUN DIGIT). No word here
# contains a digit word or a stroke word ("thin"/"thick"), or a word only the held-out phrasings use.
FRAMES = ("{np}", "{np}", "{np}", "an image of {np}", "a photo of {np}", "a drawing of {np}", "a sketch of {np}",
          "here is {np}", "this is {np}", "draw {np}", "write {np}", "{np} on paper", "{np} in ink",
          "{np} on a dark background", "{np}, centred", "{np}, mnist style")
DETERMINERS = ("", "", "a", "the", "this", "my", "another", "a single", "some")
ADJECTIVES = ("", "", "", "handwritten", "small", "large", "neat", "messy", "bold", "faint", "tilted", "slanted",
              "careful", "quick", "grey", "white", "written", "drawn", "inked", "pencil", "sketched", "tiny")
NOUNS = ("", "", "digit", "number", "numeral", "figure", "character", "symbol", "glyph")
P_FIXED = 0.25  # share of training captions in the fixed TRAIN_PHRASINGS (the wording adherence reports as "training")
STROKES = {0: "thin strokes", 2: "thick strokes"}  # ink tertile -> what a caption may say about it
MAX_CAPTION_CHARS = 46


def ink_tertiles(x: torch.Tensor) -> torch.Tensor:
    """The two ink levels (mean brightness in [0, 1] per image) that split ``x`` (N, C, H, W in [-1, 1])
    into thirds; computed on the training split and reused for any other."""
    ink = ((x + 1) / 2).flatten(1).mean(1)
    return torch.quantile(ink, torch.tensor([1 / 3, 2 / 3]))


def ink_bins(x: torch.Tensor, tertiles: torch.Tensor) -> torch.Tensor:
    """0 thin, 1 regular, 2 thick, per image."""
    ink = ((x + 1) / 2).flatten(1).mean(1)
    return torch.bucketize(ink, tertiles)


def _pick(options: tuple[str, ...], g: torch.Generator) -> str:
    return options[int(torch.randint(len(options), (1,), generator=g))]


def _article(words: list[str]) -> list[str]:
    """'a' -> 'an' before a vowel (an inked 7)."""
    return [("an" if w == "a" and i + 1 < len(words) and words[i + 1][0] in "aeiou" else w) for i, w in enumerate(words)]


def composed_phrasing(g: torch.Generator) -> str:
    """One composed template ({d} or {w} marks the digit) that fits MAX_CAPTION_CHARS with any digit and a
    stroke phrase and is not a held-out phrasing (drawn again until it is neither)."""
    while True:
        digit = "{d}" if torch.rand(1, generator=g) < 0.5 else "{w}"
        words = [w for w in (_pick(DETERMINERS, g), _pick(ADJECTIVES, g), _pick(NOUNS, g)) if w] + [digit]
        text = _pick(FRAMES, g).replace("{np}", " ".join(_article(" ".join(words).split())))
        longest = len(caption(7, text, STROKES[2]))  # "seven" is the longest digit word
        if longest <= MAX_CAPTION_CHARS and text not in HELD_OUT_PHRASINGS:
            return text


def training_phrasing(g: torch.Generator) -> str:
    """A training caption's template: one of TRAIN_PHRASINGS with probability P_FIXED, else composed."""
    if torch.rand(1, generator=g) < P_FIXED:
        return _pick(TRAIN_PHRASINGS, g)
    return composed_phrasing(g)


def caption(label: int, phrasing: str, strokes: str | None = None) -> str:
    text = phrasing.format(d=label, w=DIGIT_WORDS[label])
    return f"{text}, {strokes}" if strokes else text


def captions_for(labels: torch.Tensor, bins: torch.Tensor, generator: torch.Generator,
                 phrasings: tuple[str, ...] | None = None, p_strokes: float = 0.5) -> tuple[list[str], torch.Tensor]:
    """One caption per image, its template from the training grammar (``training_phrasing``), or drawn
    uniformly from ``phrasings`` when given; a thin or thick image's caption says so with probability
    ``p_strokes``. Returns the captions and which of them state a stroke width (the stated bin, -1 where
    none is stated), which the text encoder's contrastive targets need."""
    say = torch.rand(len(labels), generator=generator) < p_strokes
    out, stated = [], torch.full((len(labels),), -1, dtype=torch.long)
    for i, (y, b) in enumerate(zip(labels.tolist(), bins.tolist())):
        strokes = STROKES.get(b) if say[i] else None
        if strokes:
            stated[i] = b
        template = _pick(phrasings, generator) if phrasings else training_phrasing(generator)
        out.append(caption(y, template, strokes))
    return out, stated


def prompts_for(labels: list[int], phrasings: tuple[str, ...] = HELD_OUT_PHRASINGS) -> list[str]:
    """Prompts cycling through ``phrasings`` (no stroke words)."""
    return [caption(y, phrasings[i % len(phrasings)]) for i, y in enumerate(labels)]


def evaluation_prompts(labels: list[int]) -> tuple[list[str], torch.Tensor]:
    """(prompts, held_out): what adherence is measured on. Every other prompt is in a held-out phrasing,
    the rest in the training ones, each set cycled (no stroke words); ``held_out`` marks the first kind.
    With sorted class-balanced labels both halves are balanced too."""
    held_out = torch.arange(len(labels)) % 2 == 0
    wordings = (TRAIN_PHRASINGS, HELD_OUT_PHRASINGS)
    prompts = [caption(y, wordings[h][(i // 2) % len(wordings[h])]) for i, (y, h) in enumerate(zip(labels, held_out.tolist()))]
    return prompts, held_out


def to_pipeline_images(x: torch.Tensor) -> torch.Tensor:
    """(N, 1, 28, 28) in [-1, 1] -> (N, 3, 32, 32): padded with background, grey in three channels."""
    return F.pad(x, (PAD,) * 4, value=-1.0).expand(-1, 3, -1, -1).contiguous()


def mnist_captions(resolution: int | None = None, copies: int = 1, seed: int = 0):
    """The embedded training digits as the mini SD's images, each ``copies`` times with a caption from the
    training grammar (seeded): the data its UNet trains on and ``--data mnist-captions``."""
    from .base import ArrayDataset
    from .embedded import mnist

    if resolution not in (None, RESOLUTION):
        raise ValueError(f"mnist-captions images are {RESOLUTION}x{RESOLUTION} (--resolution {RESOLUTION}), got {resolution}")
    train = mnist("train")
    g = torch.Generator().manual_seed(seed)
    bins = ink_bins(train.x, ink_tertiles(train.x))
    texts = [t for _ in range(copies) for t in captions_for(train.labels, bins, g)[0]]
    x = to_pipeline_images(train.x).repeat(copies, 1, 1, 1)
    return ArrayDataset("mnist-captions", x, train.labels.repeat(copies), 10, texts)
