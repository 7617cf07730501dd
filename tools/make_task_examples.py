"""Writes the made-up data of the task examples (examples/data/): a multi-label file and a regression file of short
"reports", and a long-documents file whose deciding word comes after the first 128 tokens. Seeded: running it again
writes the same files. `python tools/make_task_examples.py`"""
import json
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent.parent / "examples" / "data"
HAZARDS = {"fire": ["fire", "smoke", "flames", "wildfire", "burning"],
           "flood": ["flood", "flooding", "water", "rain", "river"],
           "storm": ["storm", "wind", "thunder", "hail", "tornado"]}
FILLER = ("the people in the city said that roads were closed and crews were on the scene this morning while "
          "neighbours waited for news from the council about schools and buses").split()


def reports(n: int, rng) -> list[dict]:
    out = []
    for i in range(n):
        labels = [h for h in HAZARDS if rng.random() < 0.35]
        words = list(rng.choice(FILLER, rng.integers(6, 14)))
        for h in labels:
            for _ in range(rng.integers(1, 3)):
                words.insert(int(rng.integers(0, len(words) + 1)), str(rng.choice(HAZARDS[h])))
        severity = len(labels) + 0.5 * sum(w in ("wildfire", "tornado", "flooding")
                                              for w in words)
        out.append({"id": f"r{i:04d}", "text": " ".join(words), "labels": labels,
                    "severity": round(float(severity + rng.normal(0, 0.25)), 3)})
    return out


def main() -> None:
    rng = np.random.default_rng(25)
    OUT.mkdir(parents=True, exist_ok=True)
    rows = reports(1200, rng)
    with open(OUT / "hazards.jsonl", "w") as f:
        for r in rows:
            f.write(json.dumps({k: r[k] for k in ("id", "text", "labels")}) + "\n")
    with open(OUT / "severity.csv", "w") as f:
        f.write("id,text,severity\n")
        for r in rows:
            f.write(f"{r['id']},{r['text']},{r['severity']}\n")
    with open(OUT / "long_reports.csv", "w") as f:
        f.write("id,text,target\n")
        for i in range(500):
            y = int(rng.integers(0, 2))
            filler = " ".join(rng.choice(FILLER, rng.integers(70, 100)))
            word = rng.choice(["evacuated", "injured", "destroyed"] if y else ["reopened", "celebrated", "finished"])
            f.write(f"d{i:04d},{filler} {word},{y}\n")


if __name__ == "__main__":
    main()
