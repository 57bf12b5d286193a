#!/usr/bin/env python3
"""Passkey-retrieval prompts: find one number hidden in a long filler text.

The prompt is an instruction, about N tokens of varied filler sentences with the
needle "The pass key is KEY. Remember it. KEY is the pass key." at relative depth
D (0 = before all filler, 1 = after it), and the unfinished answer
"What is the pass key? The pass key is", so a model completes it with the digits.
The filler has no digits, so KEY occurs only in the needle.

Lengths are estimated from characters (--chars-per-token, 4.0 suits English with
the Gemma tokenizer); count real tokens with the model's tokenizer if it matters.
Same arguments give the same prompt.

  usage: passkey.py --tokens N --depth D --seed S [--key K] > prompt.txt
  python: from passkey import make_prompt; prompt, key = make_prompt(8000, 0.5, 1)
          passkey.answers(completion, key) judges an answer (its first number is the key)
"""

import argparse
import random
import re
import sys

HEADER = ("There is an important piece of information hidden inside a lot of irrelevant "
          "text. Find it and memorize it. I will quiz you about it.\n\n")
NEEDLE = "The pass key is {key}. Remember it. {key} is the pass key."
QUESTION = "\n\nWhat is the pass key? The pass key is"

FILLER = [
    "The grass is green.",
    "The sky is blue.",
    "The sun is yellow.",
    "Here we go.",
    "There and back again.",
    "The clouds drift slowly over the hills.",
    "A light breeze moves through the tall trees.",
    "Rain falls softly on the quiet village.",
    "The river runs past the old stone bridge.",
    "Birds sing in the early morning light.",
    "The mountains are covered with fresh snow.",
    "A small boat rests on the calm lake.",
    "The wind carries the smell of pine needles.",
    "Leaves turn red and gold in the autumn.",
    "The road winds between fields of wheat.",
    "Evening shadows stretch across the meadow.",
    "A farmer walks his dog along the fence.",
    "The stars come out one by one at night.",
    "Fog lies low over the valley at dawn.",
    "The garden is full of roses and tulips.",
    "Children play by the edge of the pond.",
    "The ocean waves roll gently onto the sand.",
    "A warm summer afternoon slowly fades away.",
    "The moon shines brightly over the sleeping town.",
    "Snowflakes drift past the kitchen window.",
    "The forest path is soft with fallen leaves.",
    "Thunder rumbles far away beyond the hills.",
    "A rainbow appears after the afternoon storm.",
    "Bees hum busily among the wild flowers.",
    "The old oak tree has stood here for many years.",
    "Frost covers the grass on a cold winter morning.",
    "A gentle stream flows down from the mountains.",
    "The meadow is bright with daisies and clover.",
    "Seagulls circle above the fishing harbor.",
    "The air is fresh and cool after the rain.",
    "Sheep graze quietly on the green hillside.",
]


def make_prompt(n_tokens, depth, seed, key=None, chars_per_token=4.0):
    """Returns (prompt, key) for a prompt of about n_tokens tokens; key is a string."""
    if not 0.0 <= depth <= 1.0:
        raise ValueError(f"depth {depth} is not in [0, 1]")
    rng = random.Random(seed)
    key = str(rng.randint(10000, 99999) if key is None else key)
    needle = NEEDLE.format(key=key)

    # Filler: shuffled passes over the sentences, not past the character budget.
    budget = n_tokens * chars_per_token - len(HEADER) - len(needle) - len(QUESTION)
    filler, n_chars, full = [], 0, False
    while not full:
        sentences = FILLER[:]
        rng.shuffle(sentences)
        for s in sentences:
            if n_chars + len(s) + 1 > budget:
                full = True
                break
            filler.append(s)
            n_chars += len(s) + 1

    # The needle goes to the sentence boundary nearest to depth * filler length.
    pos, at = 0, 0
    for i, s in enumerate(filler):
        if abs(pos + len(s) + 1 - depth * n_chars) >= abs(pos - depth * n_chars):
            break
        pos, at = pos + len(s) + 1, i + 1
    body = " ".join(filler[:at] + [needle] + filler[at:])
    return HEADER + body + QUESTION, key


def answers(text, key):
    """Whether a completion answers key: its first number is exactly the key ("152445" is not
    "52445")."""
    m = re.search(r"\d+", text)
    return m is not None and m.group() == key


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tokens", type=int, required=True, help="approximate prompt length in tokens")
    ap.add_argument("--depth", type=float, required=True, help="needle depth in [0, 1] (0 = start)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the filler order and key (default 0)")
    ap.add_argument("--key", help="the pass key (default: a 5-digit number from the seed)")
    ap.add_argument("--chars-per-token", type=float, default=4.0, help="length estimate (default 4.0)")
    args = ap.parse_args()
    try:
        prompt, key = make_prompt(args.tokens, args.depth, args.seed, args.key, args.chars_per_token)
    except ValueError as e:
        ap.error(str(e))
    sys.stdout.write(prompt)  # no trailing newline: the model continues "The pass key is"
    print(f"passkey.py: key {key}, {len(prompt)} chars, ~{len(prompt) / args.chars_per_token:.0f} tokens",
          file=sys.stderr)


if __name__ == "__main__":
    main()
