import json, sys
from pathlib import Path
a, b = Path(sys.argv[1]), Path(sys.argv[2])
def rows(p):
    return [json.loads(l) for l in (p / "metrics.jsonl").read_text().splitlines()]
for name in sorted(x.name for x in a.iterdir() if x.is_dir()):
    if not (b / name).exists(): print(name, "missing after"); continue
    ra, rb = rows(a / name), rows(b / name)
    out = []
    for phase in ("offline", "online"):
        xa = [r for r in ra if r["phase"] == phase]; xb = [r for r in rb if r["phase"] == phase]
        for r1, r2 in zip(xa, xb):
            same = r1["seed_returns"] == r2["seed_returns"]
            keys = sorted(k for k in r1 if k.startswith("train/") and k in r2)
            diff = max([abs(r1[k] - r2[k]) / (abs(r1[k]) + 1e-9) for k in keys] or [0])
            out.append(f"{phase}@{r1['step']}: returns {'==' if same else '!='} ({r1['normalized_score']:.2f} vs {r2['normalized_score']:.2f}); max rel train diff {diff:.2e}; updates after {r2.get('updates')}")
    print(name); print("  " + "\n  ".join(out))
