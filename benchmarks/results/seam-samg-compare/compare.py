"""Compare the metrics.jsonl rows of the same runs made before and after the method seam.

python3 compare.py baseline after
"""

import json
import sys
from pathlib import Path


def rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def main(before: Path, after: Path) -> None:
    for name in sorted(x.name for x in before.iterdir() if x.is_dir()):
        if not (after / name).exists():
            print(name, "missing after")
            continue
        old, new = rows(before / name), rows(after / name)
        lines = []
        for phase in ("offline", "online"):
            pairs = zip(
                [r for r in old if r["phase"] == phase],
                [r for r in new if r["phase"] == phase],
                strict=False,
            )
            for r1, r2 in pairs:
                same = "==" if r1["seed_returns"] == r2["seed_returns"] else "!="
                keys = sorted(k for k in r1 if k.startswith("train/") and k in r2)
                diff = max([abs(r1[k] - r2[k]) / (abs(r1[k]) + 1e-9) for k in keys] or [0])
                lines.append(
                    f"{phase}@{r1['step']}: returns {same} ({r1['normalized_score']:.2f} vs "
                    f"{r2['normalized_score']:.2f}); max rel train diff {diff:.2e}; "
                    f"updates after {r2.get('updates')}"
                )
        print(name)
        print("  " + "\n  ".join(lines))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
